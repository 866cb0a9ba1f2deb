// Server::Create's steps (server/conductor.h): the options checked, the
// identity, the starting model (a file, a checkpoint, or the runtime's), the
// evaluation data, the transport and the scheduler.
#include <spdlog/spdlog.h>
#include <sys/resource.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>

#include "common/dataset.h"
#include "common/file_util.h"
#include "common/fixed_point.h"
#include "common/text.h"
#include "common/wire/limits.h"
#include "crypto/identity.h"
#include "crypto/model_code.h"
#include "crypto/model_file.h"
#include "server/checkpoint.h"
#include "server/conductor.h"
#include "server/flags.h"
#include "server/relay_link.h"

namespace fl {

namespace {

// A transfer counts toward its window for this long at most (TransferWindow's
// hold): an update or TASK crosses a LAN in well under a second (6.65 MB at
// 100 Mbit/s: 0.5 s); one still on its way after 2 s is on a slow link (53 s at
// 1 Mbit/s) or is not coming, and the next devices go meanwhile.
constexpr double kTransferHoldSeconds = 2;

// Each connection holds a file descriptor. Raises the process's descriptor
// limit to its hard limit and returns `wanted` (0 = no cap), lowered to leave
// room under it for the files the server writes and ZeroMQ's own descriptors;
// says so when it lowers it.
int CapConnections(int wanted) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return wanted;
  if (rl.rlim_cur < rl.rlim_max) {  // as many as the system lets this process have
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0) getrlimit(RLIMIT_NOFILE, &rl);
  }
  if (rl.rlim_cur == RLIM_INFINITY) return wanted;
  const rlim_t reserve = 256;
  const int room = static_cast<int>(std::min<rlim_t>(
      rl.rlim_cur > reserve ? rl.rlim_cur - reserve : 1, std::numeric_limits<int>::max()));
  if (wanted > 0 && wanted <= room) return wanted;
  spdlog::warn(
      "--max-connections {} lowered to {}: the process may open {} files (ulimit -n) and "
      "keeps {} for its own",
      wanted == 0 ? std::string("0 (no cap)") : std::to_string(wanted), room, rl.rlim_cur, reserve);
  return room;
}

Status CheckRanges(const ServerOptions& o) {
  if (o.rounds < 1) return Status::InvalidArgument("--rounds must be >= 1");
  if (o.min_clients < 1) return Status::InvalidArgument("--min-clients must be >= 1");
  if (!(o.fraction > 0 && o.fraction <= 1)) {
    return Status::InvalidArgument("--fraction must be in (0, 1], got " +
                                   std::to_string(o.fraction));
  }
  if (!(o.round_deadline_seconds > 0)) return Status::InvalidArgument("--deadline must be > 0");
  if (o.relays_dir == "any" && !o.insecure) {
    return Status::InvalidArgument(
        "--relays any (partial aggregates from any participant) is for --insecure experiments; "
        "enroll relays with --relays DIR");
  }
  if (o.relay_devices < 1) return Status::InvalidArgument("--relay-devices must be >= 1");
  if (!o.relays_dir.empty() && o.max_examples == kDefaultMaxExamples) {
    spdlog::warn(
        "--relays with the default --max-examples {}: a relay's partial may weigh up to its "
        "devices x {}; set --max-examples (here and on the relays) to the most examples one "
        "device may have",
        o.max_examples, o.max_examples);
  }
  FL_RETURN_IF_ERROR(CheckModes(o));
  // Each bound must be a number: a NaN compares false with everything and
  // would switch its check off silently.
  for (const auto& [name, v] :
       {std::pair<const char*, double>{"--max-update-norm", o.max_update_norm},
        {"--update-norm-factor", o.update_norm_factor},
        {"--max-weight-ratio", o.max_weight_ratio},
        {"--client-timeout", o.client_timeout_seconds}}) {
    if (!(std::isfinite(v) && v >= 0)) {
      return Status::InvalidArgument(std::string(name) + " must be a finite number >= 0, got " +
                                     std::to_string(v));
    }
  }
  return Status::OK();
}

// The rest of the checks of `o` that need nothing but `o` (and, for the
// TASK's configuration, the strategy's proximal term).
Status CheckOptions(const ServerOptions& o, double proximal_mu) {
  // A delta between two models within the limit is within twice it, and
  // aggregation sums deltas in fixed point below 2^23 (common/fixed_point.h).
  if (!(std::isfinite(o.max_param_value) && o.max_param_value > 0 &&
        o.max_param_value < kFixedMaxAbs / 2)) {
    return Status::InvalidArgument(
        "--max-param-value must be > 0 and below 4194304 (2^22: deltas between models within "
        "it must fit the aggregation's fixed-point range, below 2^23)");
  }
  if (o.max_examples < 1) return Status::InvalidArgument("--max-examples must be >= 1");
  if (!(o.lr_decay > 0 && o.lr_decay <= 1)) {
    return Status::InvalidArgument("--lr-decay must be in (0, 1], got " +
                                   std::to_string(o.lr_decay));
  }
  if (!(o.lr_min >= 0 && o.lr_min <= o.train.lr)) {
    return Status::InvalidArgument("--lr-min must be in [0, --lr], got " +
                                   std::to_string(o.lr_min));
  }
  {
    // What every TASK will carry: refused here rather than by every client.
    wire::TrainConfig c = o.train;
    c.deadline_seconds = o.round_deadline_seconds;
    c.proximal_mu = proximal_mu;
    FL_RETURN_IF_ERROR(wire::CheckTrainConfig(c));
  }
  if (!o.model_signer.empty() && o.model_file.empty()) {
    // Nothing would be checked: say so rather than run unverified.
    return Status::InvalidArgument(
        "--model-signer checks a model file (.flm); --model " + o.model +
        " is not one (a TorchScript file is not signature-checked yet: give the server only "
        "files you trust)");
  }
  return Status::OK();
}

// A model file is read once: it names the architecture when `o->model` is
// empty and is the starting point unless a checkpoint is resumed.
Status ReadModelFileOf(ServerOptions* o, std::optional<ModelState>* from_file,
                       ModelFileMeta* meta) {
  if (o->model_file.empty()) return Status::OK();
  std::optional<Ed25519PublicKey> trusted;
  if (!o->model_signer.empty()) {
    auto pub = LoadPublicIdentity(o->model_signer);
    if (!pub.ok()) return pub.status();
    trusted = pub->signing;
  }
  auto file = ReadModelFile(o->model_file, trusted ? &*trusted : nullptr, meta);
  if (!file.ok()) return file.status();
  *from_file = std::move(file).value();
  if (o->model.empty()) o->model = (*from_file)->architecture;
  return Status::OK();
}

// The federation's class names: a model file's (its model was trained with
// them), else --classes (which may list classes the test data lacks).
Result<std::vector<std::string>> ClassesOf(const ServerOptions& o, const ModelFileMeta& meta) {
  std::vector<std::string> classes = meta.class_names;
  if (o.class_names.empty()) return classes;
  std::vector<std::string> given;
  for (std::string name : SplitList(o.class_names, ',')) {
    const size_t first = name.find_first_not_of(' ');
    name = first == std::string::npos ? ""
                                      : name.substr(first, name.find_last_not_of(' ') + 1 - first);
    given.push_back(std::move(name));
  }
  if (!classes.empty() && given != classes) {
    return Status::InvalidArgument("--classes " + o.class_names,
                                   "differs from the classes " + o.model_file +
                                       " records; its model was trained with "
                                       "those: leave --classes out");
  }
  return given;
}

// The settings that make a run what it is, as "--flag=value" lines (kept in
// its checkpoints): the flags the options schema declares run settings
// (server/flags.cc), with what devices normalise with, the federation's
// classes and the strategy's server learning rate as this run resolved them.
// A resumed run with any of them changed would continue the same model as
// another run (and a strategy's or accountant's state under parameters it was
// not built with). Not in it: --rounds (extending a run is what --resume is
// for), deadlines, timeouts, evaluation and the update checks, which an
// operator may need to change on a live fleet. The seed, strategy name and
// pruning schedule are checked apart.
std::string RunSettingsOf(ServerOptions o, const Normalization& normalization,
                          const std::vector<std::string>& class_names) {
  o.data.normalize = normalization.empty() ? "none" : normalization.ToString();
  o.class_names.clear();
  for (const auto& name : class_names) o.class_names += (o.class_names.empty() ? "" : ",") + name;
  StrategyOptions& s = o.strategy;
  if (!(s.server_lr > 0)) s.server_lr = DefaultServerLr(s.name);
  return RunSettingsText(o);
}

}  // namespace

Status CheckServerOptions(const ServerOptions& o) {
  FL_RETURN_IF_ERROR(CheckRanges(o));
  FL_RETURN_IF_ERROR(CheckStrategyOptions(o.strategy));
  FL_RETURN_IF_ERROR(CheckPrivacyOptions(o.privacy));
  return CheckOptions(o, o.strategy.name == "fedprox" ? o.strategy.mu : 0);
}

std::string Conductor::RunSettings() const {
  return RunSettingsOf(o_, normalization_, class_names_);
}

Result<std::unique_ptr<Conductor>> MakeConductor(ServerOptions options,
                                                 std::shared_ptr<transport::Context> context,
                                                 const ModelRuntime& runtime) {
  FL_RETURN_IF_ERROR(CheckRanges(options));
  // The strategy, wrapped in central privacy when asked for. (The --dp-*
  // values are checked either way: a negative or NaN noise multiplier is a
  // mistake, not privacy switched off.)
  FL_RETURN_IF_ERROR(CheckPrivacyOptions(options.privacy));
  std::unique_ptr<Aggregator> agg;
  const PrivateAggregator* privacy = nullptr;
  if (options.privacy.enabled()) {
    auto p = MakePrivateAggregator(options.strategy, options.privacy, options.fraction);
    if (!p.ok()) return p.status();
    privacy = p->get();
    agg = std::move(p).value();
  } else {
    auto a = MakeAggregator(options.strategy);
    if (!a.ok()) return a.status();
    agg = std::move(a).value();
  }
  FL_RETURN_IF_ERROR(CheckOptions(options, agg->proximal_mu()));
  std::optional<ModelState> from_file;
  ModelFileMeta meta;  // its normalisation and class names, when recorded
  FL_RETURN_IF_ERROR(ReadModelFileOf(&options, &from_file, &meta));
  if (options.model.empty()) return Status::InvalidArgument("no model architecture given");
  auto conductor = std::make_unique<Conductor>(std::move(options));
  FL_RETURN_IF_ERROR(conductor->Start(std::move(context), runtime, std::move(agg), privacy,
                                      std::move(from_file), meta));
  return conductor;
}

namespace {
ServerOptions WithClock(ServerOptions o) {
  if (!o.clock) o.clock = SystemClock();
  return o;
}
}  // namespace

Conductor::Conductor(ServerOptions options)
    : o_(WithClock(std::move(options))),
      enrollment_(o_.clients_dir, o_.relays_dir, o_.insecure, o_.verbose),
      uploads_(std::make_unique<TransferWindow>(o_.transfer_window_bytes, kTransferHoldSeconds)),
      task_sends_(
          std::make_unique<TransferWindow>(o_.transfer_window_bytes, kTransferHoldSeconds)) {
  registry_.Configure(o_.max_clients, o_.client_timeout_seconds);
}

Status Conductor::Start(std::shared_ptr<transport::Context> context, const ModelRuntime& runtime,
                        std::unique_ptr<Aggregator> aggregator, const PrivateAggregator* privacy,
                        std::optional<ModelState> from_file, const ModelFileMeta& meta) {
  aggregator_ = std::move(aggregator);
  privacy_ = privacy;
  ctx_ = std::move(context);
  if (!runtime.initial_model)
    return Status::InvalidArgument("the server was given no model runtime");
  auto initial = runtime.initial_model(o_.model, o_.seed);
  if (!initial.ok()) return initial.status();
  model_.Set(std::move(initial).value(), {}, o_.downlink);
  // The server's identity first: it signs checkpoints, and a server with a
  // key resumes only from checkpoints it signed.
  std::optional<CurveKeyPair> curve;  // the transport's keys (not kept: the socket has them)
  FL_RETURN_IF_ERROR(LoadIdentity(&curve));
  FL_RETURN_IF_ERROR(LoadEvaluation(runtime, meta));
  store_ = std::make_unique<RunStore>(o_.out_dir, o_.privacy.enabled(), o_.mode == "async",
                                      signer_.get());
  FL_RETURN_IF_ERROR(store_->Prepare());
  // global.flm records them, so that the model can be used (and exported)
  // without the data.
  store_->SetModelMeta(ModelFileMeta{normalization_, class_names_});
  reporter_ = std::make_unique<RoundReporter>(
      RoundReporter::Options{o_.verbose, o_.mode == "async", o_.privacy.delta}, evaluator_.get(),
      store_.get(), o_.metrics);
  FL_RETURN_IF_ERROR(SetPruning(from_file ? PrunableSparsity(*from_file) : o_.sparsity));
  uint64_t last_row = 0;  // of rounds.csv, when resuming
  std::vector<Checkpoint::Row> owed;
  bool resumed = false;
  FL_RETURN_IF_ERROR(Resume(&last_row, &owed, &resumed));
  FL_RETURN_IF_ERROR(PrepareModel(std::move(from_file), resumed));
  if (!o_.insecure && (o_.key_path.empty() || !enrollment_.enrolling())) {
    return Status::InvalidArgument(
        "encrypted transport needs the server's identity (--key, from fl-keygen) and an "
        "enrollment folder (--clients, or --relays for a root of relays only); for a local "
        "experiment on a trusted network, pass --insecure");
  }
  FL_RETURN_IF_ERROR(OpenTransport(curve));
  // Once the socket is bound: a round log found open is reopened, a spent
  // one set aside, global.flm rewritten.
  auto open_round = FindOpenRound(resumed, last_row, owed);
  if (!open_round.ok()) return open_round.status();
  scheduler_ = MakeScheduler(o_, this, BasePlan(), std::move(open_round).value());
  if (o_.parent) o_.parent->SetModel(model_.state());
  return Status::OK();
}

Status Conductor::LoadIdentity(std::optional<CurveKeyPair>* curve) {
  if (!o_.key_path.empty()) {
    auto id = o_.insecure ? fl::LoadIdentity(o_.key_path) : LoadIdentityWithCurve(o_.key_path);
    if (!id.ok()) return id.status();
    signer_ = std::make_unique<SigningKey>(std::move(id->signing));
    wal_key_ = WalKeyFor(signer_.get());
    *curve = id->curve;
    spdlog::info("signing with key {} (node id {})", o_.key_path, NodeId(signer_->public_key()));
  }
  tasks_ = std::make_unique<TaskCache>(signer_.get(), o_.transfer_window_bytes > 0);
  const std::string& m = o_.model;
  if (signer_ && m.size() > 3 && m.compare(m.size() - 3, 3, ".pt") == 0) {
    auto code = ReadFile(m);
    if (!code.ok()) return code.status();
    const Ed25519Signature signature = SignModelCode(*code, *signer_);
    tasks_->SetModelCode(std::move(code).value(), signature);
  }
  return Status::OK();
}

// The evaluation data, the normalisation and the classes, before --resume
// compares the run's settings (they are part of them). The classes: a model
// file's, else --classes, else the test data's.
Status Conductor::LoadEvaluation(const ModelRuntime& runtime, const ModelFileMeta& meta) {
  auto classes = ClassesOf(o_, meta);
  if (!classes.ok()) return classes.status();
  if (!o_.data.path.empty()) {
    FL_RETURN_IF_ERROR(LoadTestSet(runtime, meta, *classes));
  } else if (!o_.data.normalize.empty() && o_.data.normalize != "auto" &&
             o_.data.normalize != "none") {
    auto n = ParseNormalization(o_.data.normalize);
    if (!n.ok()) return n.status();
    normalization_ = *n;
  }
  if (normalization_.empty() && !meta.normalization.empty() && o_.data.normalize != "none") {
    normalization_ = meta.normalization;
  }
  if (class_names_.empty()) class_names_ = *classes;
  if (normalization_.empty()) {
    if (o_.data.normalize == "none") {
      normalization_ = Normalization{{0.0f}, {1.0f}};  // none, said explicitly to devices
    } else if (!o_.parent) {                           // (a relay hands on its parent's)
      spdlog::warn(
          "no test data and no --normalize: each device normalises its data with its own "
          "statistics; give --normalize mean,std[,...] so that they agree");
    }
  }
  wire::TrainConfig c = o_.train;
  c.deadline_seconds = o_.round_deadline_seconds;
  c.normalize_mean = normalization_.mean;
  c.normalize_std = normalization_.std;
  c.class_names = class_names_;
  FL_RETURN_IF_ERROR(wire::CheckTrainConfig(c).WithContext("the TASK's normalisation and classes"));
  if (!class_names_.empty()) {
    std::string list;
    for (const auto& n : class_names_) list += (list.empty() ? "" : ", ") + Printable(n);
    spdlog::info("classes: {} (sent to devices, which number theirs alike)", list);
  }
  return Status::OK();
}

Status Conductor::LoadTestSet(const ModelRuntime& runtime, const ModelFileMeta& meta,
                              const std::vector<std::string>& classes) {
  if (!runtime.make_evaluator) {
    return Status::InvalidArgument(
        "this server cannot evaluate (no evaluator); run without a test set (--no-eval)");
  }
  auto splits = LoadData(o_.data, /*need_train=*/false, /*need_test=*/true);
  if (!splits.ok()) return splits.status().WithContext("server test set");
  spdlog::info("test set {}: {}", o_.data.test_path.empty() ? o_.data.path : o_.data.test_path,
               DescribeData(*splits));
  // A model file's normalisation and classes are what its model was trained
  // with: the evaluation (and the devices) use them, unless --normalize says
  // otherwise.
  const bool auto_norm = o_.data.normalize.empty() || o_.data.normalize == "auto";
  if (!meta.normalization.empty() && auto_norm) {
    FL_RETURN_IF_ERROR(CheckNormalization(splits->test, meta.normalization,
                                          o_.model_file + " (its normalisation)"));
    splits->test.normalization = meta.normalization;
    spdlog::info("normalising as {} records: {}", o_.model_file, meta.normalization.ToString());
  }
  if (!classes.empty()) {
    FL_RETURN_IF_ERROR(UseClassNames(&splits->test, classes,
                                     "the test data (" +
                                         (o_.class_names.empty() ? o_.model_file : "--classes") +
                                         " names the federation's classes)"));
  }
  normalization_ = splits->test.normalization;
  class_names_ = splits->test.class_names;
  auto evaluator = runtime.make_evaluator(o_.model, std::move(splits->test), o_.eval_threads);
  if (!evaluator.ok()) return evaluator.status();
  evaluator_ = BackgroundEvaluator::Create(std::move(evaluator).value(),
                                           o_.debug_eval_delay_seconds, o_.clock);
  return Status::OK();
}

// Where the federated pruning schedule starts: the starting model's sparsity.
Status Conductor::SetPruning(double from) {
  pruning_ = PruningSchedule{from, o_.prune_to, o_.prune_rounds, o_.erk, o_.global_pruning};
  if (!(o_.prune_to > 0)) return Status::OK();
  if (!(o_.prune_to < 1) || o_.prune_to < from || o_.prune_rounds < 1) {
    return Status::InvalidArgument("--prune-to must be in [" + std::to_string(from) +
                                   ", 1) (not below the starting sparsity) with --prune-rounds "
                                   ">= 1");
  }
  spdlog::info(
      "federated pruning: from {:.1f}% to {:.1f}% sparsity over rounds 1..{} (Zhu & Gupta), {}",
      100 * from, 100 * o_.prune_to, o_.prune_rounds,
      o_.erk ? "layer-wise by ERK" : (o_.global_pruning ? "ranked globally" : "layer by layer"));
  return Status::OK();
}

// A checkpoint from another run is not continued: another model, seed,
// strategy, pruning schedule or settings would continue a different run.
Status Conductor::CheckCheckpoint(const Checkpoint& c, const std::string& used) const {
  if (!SameLayout(c.model, model_.state())) {
    return Status::InvalidArgument(
        used, "holds a '" + c.model.architecture + "' model, this run trains '" + o_.model + "'");
  }
  if (c.seed != o_.seed) {
    // Selection and training seeds follow --seed.
    return Status::InvalidArgument(
        used, "is from a run with --seed " + std::to_string(c.seed) + "; resume it with " +
                  "that seed (this run has --seed " + std::to_string(o_.seed) + ")");
  }
  if (c.strategy != o_.strategy.name) {
    // Its state (momentum, moments) belongs to the strategy that made it.
    return Status::InvalidArgument(
        used, "is from a run with --strategy " + c.strategy + "; resume it with that " +
                  "strategy (this run has --strategy " + o_.strategy.name + ")");
  }
  if (c.has_pruning && c.pruning != pruning_.Describe()) {
    // The mask already follows the checkpoint's schedule; another one would
    // prune the rest of the run to other targets.
    auto says = [](const std::string& s) { return s.empty() ? std::string("none") : s; };
    return Status::InvalidArgument(
        "the checkpoint is from a run whose federated pruning is '" + says(c.pruning) +
        "'; resume it with the same --prune-to, --prune-rounds, --erk, --sparsity and model "
        "(this run's: '" +
        says(pruning_.Describe()) + "')");
  }
  if (!c.settings.empty()) {
    const auto changed = SettingsDifferences(c.settings, RunSettings());
    if (!changed.empty()) {
      std::string list;
      for (const auto& line : changed) list += "\n  " + line;
      return Status::InvalidArgument(used,
                                     "is from a run with other settings; resume it with the "
                                     "checkpoint's, or start a new run (a new --out):" +
                                         list);
    }
  }
  return Status::OK();
}

// --resume: the newest usable checkpoint becomes the model, the round and
// the strategy's state; `*owed` the rows of rounds.csv it owes.
Status Conductor::Resume(uint64_t* last_row, std::vector<Checkpoint::Row>* owed, bool* resumed) {
  if (!o_.resume) return Status::OK();
  if (o_.out_dir.empty()) return Status::InvalidArgument("--resume needs an output folder");
  std::string used;
  std::vector<std::string> refused;
  auto c = ReadNewestCheckpoint(store_->CheckpointPath(), &used, &refused,
                                signer_ ? &signer_->public_key() : nullptr);
  for (const auto& why : refused) spdlog::error("checkpoint not usable: {}", why);
  if (!c.ok()) {
    if (!c.status().IsNotFound()) return c.status();
    spdlog::info("no checkpoint in {}; starting from round 1", o_.out_dir);
    return Status::OK();
  }
  FL_RETURN_IF_ERROR(CheckCheckpoint(*c, used));
  // The strategy's state covers the trainable tensors' kept values.
  std::vector<uint8_t> trainable;
  if (!o_.trainable.empty()) {
    auto which = MatchTrainable(c->model, o_.trainable);
    if (!which.ok()) return which.status();
    trainable = std::move(which).value();
  }
  if (Status st = aggregator_->LoadState(c->strategy_state,
                                         static_cast<size_t>(KeptCountOf(c->model, trainable)));
      !st.ok()) {
    return Status::Corruption(used, st.message());
  }
  model_.Set(std::move(c->model), {}, o_.downlink);
  round_ = c->round;
  model_.set_reference_norm(c->reference_norm);
  *resumed = true;
  *last_row = store_->ReconcileRows(round_);
  *owed = c->pending_rows;
  if (!refused.empty() && o_.privacy.enabled()) {
    // Rounds after it were released (their models left the server); run
    // again, their noise would be drawn anew over other updates, and the two
    // releases together are not private.
    return Status::FailedPrecondition(
        used,
        "the newest checkpoint cannot be used, and a private run does not resume from an older "
        "one: the rounds after it were released with noise that running them again would not "
        "repeat. Start a new run (a new --out)");
  }
  if (!refused.empty()) spdlog::warn("resuming from an older checkpoint generation, {}", used);
  spdlog::info("resuming after round {} from {}", round_, used);
  return Status::OK();
}

// The starting model: the checkpoint's (resumed), the model file's, or the
// runtime's pruned to --sparsity; then which tensors train, and the checks
// that need the model.
Status Conductor::PrepareModel(std::optional<ModelState> from_file, bool resumed) {
  ModelState& global = model_.state();
  if (!resumed && from_file) {
    if (!SameLayout(*from_file, global)) {
      return Status::InvalidArgument(
          o_.model_file,
          "holds a '" + from_file->architecture + "' model, this run trains '" + o_.model + "'");
    }
    global = std::move(*from_file);
    spdlog::info("starting from {}: {:.1f}% sparse, {} of {} parameters kept", o_.model_file,
                 100 * global.Sparsity(), global.KeptCount(), global.NumParameters());
  } else if (!resumed && o_.sparsity > 0) {
    FL_RETURN_IF_ERROR(PruneInitialModel());
  }
  if (!o_.trainable.empty()) {
    if (o_.prune_to > 0 || (o_.sparsity > 0 && o_.model_file.empty())) {
      return Status::InvalidArgument(
          "--trainable",
          "cannot be combined with pruning here (--sparsity, --prune-to): frozen weights pruned "
          "would never recover; prune the model beforehand (fl-compress) and start from it with "
          "--model-file");
    }
    auto which = MatchTrainable(global, o_.trainable);
    if (!which.ok()) return which.status();
    std::string names;
    for (size_t i = 0; i < which->size(); ++i) {
      if ((*which)[i]) names += (names.empty() ? "" : ", ") + global.tensors[i].name;
    }
    const ModelState part = SelectTensors(global, *which);
    spdlog::info("trainable: {} ({} of {} parameters; the others are frozen)", names,
                 part.NumParameters(), global.NumParameters());
    model_.SetTrainable(std::move(which).value());
  }
  model_.Changed();
  FL_RETURN_IF_ERROR(
      CheckAggregationFits(o_, aggregator_->held_bytes_per_value() * model_.kept_count()));
  model_.InitReferenceNorm();
  if (Status st = CheckValueRange(global, model_.ValueLimit(o_.max_param_value)); !st.ok()) {
    return Status::InvalidArgument(
        "the starting model cannot be sent as " +
            std::string(o_.downlink == wire::ValueFormat::kFp16 ? "fp16" : "fp32"),
        st.message());
  }
  return Status::OK();
}

// --sparsity on a fresh model. Ranked globally at initialisation, a layer
// whose initial weights are all smaller than the others' (a classifier with a
// wide input) can lose every weight: nothing would pass through it, and
// training could not bring it back.
Status Conductor::PruneInitialModel() {
  ModelState& global = model_.state();
  FL_RETURN_IF_ERROR(o_.erk ? PruneErk(&global, o_.sparsity)
                            : PruneByMagnitude(&global, o_.sparsity, o_.global_pruning));
  for (const auto& t : global.tensors) {
    if (!t.mask.empty() && t.KeptCount() == 0) {
      return Status::InvalidArgument(
          "--sparsity " + std::to_string(o_.sparsity),
          "pruning the initial model keeps no weight of '" + t.name +
              "', so no signal would pass through it; prune by ERK (--erk) or layer by layer "
              "(--global-pruning false)");
    }
  }
  spdlog::info("pruned the initial model to {:.1f}% sparsity{} ({} of {} parameters kept)",
               100 * global.Sparsity(), o_.erk ? ", layer-wise by ERK" : "", global.KeptCount(),
               global.NumParameters());
  return Status::OK();
}

// --resume: a round that was open when the server stopped is reopened if it
// starts from the model the checkpoint holds; otherwise it is spent. Then
// global.flm (derived from the checkpoint) is rewritten, in case the server
// stopped between the two, and the rows the checkpoint owes are written.
Result<std::optional<WalContents>> Conductor::FindOpenRound(
    bool resumed, uint64_t last_row, const std::vector<Checkpoint::Row>& owed) {
  std::optional<WalContents> open_round;
  if (!o_.resume || o_.out_dir.empty()) return open_round;
  const std::string path = store_->WalPath();
  auto log = WalReadAll(path, wal_key_);
  if (log.ok() && log->header.round == round_ + 1 &&
      log->header.model_version == model_.version()) {
    open_round = std::move(log).value();
  } else if (!log.ok() && log.status().IsIOError()) {
    // Unreadable is not absent: acknowledged updates may be in it.
    return log.status().WithContext("reading the open round's log to resume");
  } else if (!log.status().IsNotFound()) {
    // Spent (its round is in the checkpoint) or damaged: kept aside, not lost.
    const std::string aside = path + ".old";
    spdlog::warn(
        "{}: {}; it is not reopened and is kept as {}", path,
        log.ok() ? "its round is not the one after the checkpoint" : log.status().ToString(),
        aside);
    std::rename(path.c_str(), aside.c_str());
  }
  if (resumed) {
    FL_RETURN_IF_ERROR(store_->WriteModel(model_.state()));
    RestorePendingRows(owed, last_row);
  }
  return open_round;
}

Status Conductor::OpenTransport(const std::optional<CurveKeyPair>& curve) {
  FL_RETURN_IF_ERROR(LoadEnrollment());
  ingress_.max_frame_bytes = o_.max_frame_bytes;
  ingest_.pool = std::make_unique<WorkerPool>(IngestThreads(o_.ingest_threads));
  ingest_.scratch.resize(static_cast<size_t>(ingest_.pool->threads()));
  ingress_.payload_limit = [this](wire::MessageType t) { return PayloadLimit(t); };
  if (enrollment_.enrolling()) {
    ingress_.sender = [this](const std::string& id) -> std::optional<KnownSender> {
      auto it = enrollment_.enrolled().find(id);
      if (it == enrollment_.enrolled().end()) return std::nullopt;
      KnownSender k;
      k.verifier = &it->second.verifier;
      k.check_transport = !o_.insecure;
      if (it->second.curve) k.transport_key = *it->second.curve;
      return k;
    };
  }
  transport::SocketOptions so;
  so.max_frame_bytes = o_.max_frame_bytes;
  if (!o_.transport_heartbeats) so.heartbeat_ms = 0;
  so.max_connections = connections_.cap = CapConnections(o_.max_connections);
  if (o_.insecure) {
    spdlog::warn(
        "INSECURE TRANSPORT: no encryption and no transport authentication on {}. Anyone who "
        "can reach it can read the models{}. Use this for local experiments only.",
        o_.bind,
        !enrollment_.enrolling() ? " and send updates"
                                 : " (updates still need enrolled signatures)");
  } else {
    so.curve.secret_key = KeyBytes(curve->secret_key);
    so.curve.public_key = KeyBytes(curve->public_key);
    so.curve.authorize = [admission = enrollment_.admission()](const std::string& key) {
      return admission->Admit(key);
    };
    if (o_.verbose) {
      spdlog::info(
          "transport: CURVE, server key {}; admitting the CURVE keys of {} enrolled device(s)",
          Z85Encode(curve->public_key.data(), kCurveKeyBytes), enrollment_.enrolled().size());
    }
  }
  auto sock = ctx_->Listen(o_.bind, so);
  if (!sock.ok()) return sock.status();
  sock_ = std::move(sock).value();
  if (o_.verbose) {
    spdlog::info(
        "at most {} connections at once (--max-connections); {} devices tracked (--max-clients)",
        connections_.cap, o_.max_clients);
  }
  return Status::OK();
}

// What every round's plan starts from: the run's TASK configuration with its
// optional fields, its deadline and privacy.
RoundPlan Conductor::BasePlan() const {
  RoundPlan plan;
  plan.train = o_.train;
  plan.train.trainable = model_.trainable();
  plan.train.proximal_mu = aggregator_->proximal_mu();
  plan.train.normalize_mean = normalization_.mean;
  plan.train.normalize_std = normalization_.std;
  plan.train.class_names = class_names_;
  plan.deadline_seconds = o_.round_deadline_seconds;
  if (o_.privacy.enabled()) plan.sampling_rate = o_.fraction;
  return plan;
}

void Conductor::LogServing() const {
  if (!o_.verbose) return;
  if (o_.parent) {
    spdlog::info("relaying {} on {}: rounds from the parent, C={}, min_clients={}, strategy {}",
                 o_.model, endpoint(), o_.fraction, o_.min_clients, aggregator_->name());
    return;
  }
  spdlog::info(
      "serving {} on {}: rounds {}..{}, C={}, min_clients={}, deadline {} s, strategy {}{}",
      o_.model, endpoint(), round_ + 1, o_.rounds, o_.fraction, o_.min_clients,
      o_.round_deadline_seconds, aggregator_->name(),
      o_.strategy.clip > 0 ? fmt::format(" (deltas clipped to L2 norm {})", o_.strategy.clip)
                           : std::string());
  if (!o_.privacy.enabled()) return;
  spdlog::info(
      "differential privacy: DP-FedAvg, noise multiplier {}, clip {}{}, devices Poisson-sampled "
      "at rate {}; epsilon reported at delta {:g} after every round",
      o_.privacy.noise_multiplier, o_.privacy.clip, o_.privacy.adaptive_clip ? " (adaptive)" : "",
      o_.fraction, o_.privacy.delta);
  if (!wal_key_) {
    spdlog::warn(
        "differential privacy without a server key (--key): the noise and the sampling are "
        "seeded from --seed, so anyone who knows the seed can remove the noise and knows who was "
        "sampled; the epsilon reported holds only with a key. Reproducible experiments only.");
  }
}

}  // namespace fl
