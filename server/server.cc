#include "server/server.h"

#include <dirent.h>
#include <openssl/crypto.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <limits>
#include <mutex>
#include <optional>
#include <set>
#include <thread>
#include <variant>

#include "common/clock.h"
#include "common/dataset.h"
#include "common/file_util.h"
#include "common/fixed_point.h"
#include "common/quant_codec.h"
#include "common/random.h"
#include "common/text.h"
#include "common/wire/envelope.h"
#include "common/wire/limits.h"
#include "common/wire/serialize.h"
#include "common/worker_pool.h"
#include "crypto/ed25519.h"
#include "crypto/identity.h"
#include "crypto/ingress.h"
#include "crypto/message.h"
#include "crypto/model_code.h"
#include "crypto/model_file.h"
#include "crypto/sha256.h"
#include "server/checkpoint.h"
#include "server/enrollment.h"
#include "server/evaluator.h"
#include "server/metrics.h"
#include "server/registry.h"
#include "server/relay_link.h"
#include "server/run_store.h"
#include "server/transfer_window.h"
#include "server/update_check.h"
#include "server/wal.h"

namespace fl {

const char kRoundsCsvHeader[] =
    "round,participants,test_accuracy,test_loss,upload_bytes,download_bytes,round_seconds,"
    "eval_seconds,max_delta_norm";

double RoundLearningRate(const ServerOptions& o, int round) {
  const double lr = o.train.lr * std::pow(o.lr_decay, std::max(0, round - 1));
  // Clients train in float: a rate below the smallest normal float trains nothing.
  return std::max({lr, o.lr_min, static_cast<double>(std::numeric_limits<float>::min())});
}

int IngestThreads(int requested) {
  if (requested > 0) return requested;
  const unsigned cores = std::thread::hardware_concurrency();
  return static_cast<int>(std::clamp(cores, 1u, 8u));
}

std::string RoundsCsvHeader(bool privacy, bool async) {
  return std::string(kRoundsCsvHeader) + (privacy ? ",epsilon" : "") +
         (async ? ",tasks,mean_staleness,max_staleness,expired" : "");
}

namespace {

using Version = std::array<uint8_t, 32>;

// The server's id in envelopes it sends.
const char kServerId[] = "server";
// Type reported in a REJECT when the refused message's type is unknown.
const wire::MessageType kUnknownType = static_cast<wire::MessageType>(0);
// Log at most this many refusals per reason per round; the rest are counted.
const int kLogPerReason = 5;
// Messages received and prepared on the ingest threads together: enough to
// keep every thread busy, few enough that replies are not held back.
const size_t kIngestBatch = 32;

// The CURVE keys the transport admits, shared with the ZAP thread.
struct Admission {
  std::mutex mu;
  std::set<std::string> keys;  // raw 32-byte Curve25519 public keys
  std::atomic<int64_t> denied{0};

  bool Admit(const std::string& key) {
    bool ok;
    {
      std::lock_guard<std::mutex> lock(mu);
      ok = keys.count(key) > 0;
    }
    if (!ok) {
      const int64_t n = ++denied;
      // Log the first few and then every power of two: a flood stays readable.
      if (n <= kLogPerReason || (n & (n - 1)) == 0) {
        spdlog::warn("refused a CURVE handshake: transport key {} is not enrolled ({} so far)",
                     Z85Encode(reinterpret_cast<const uint8_t*>(key.data()), key.size()), n);
      }
    }
    return ok;
  }
};

// A transfer counts toward its window for this long at most (TransferWindow's
// hold): an update or TASK crosses a LAN in well under a second (6.65 MB at
// 100 Mbit/s: 0.5 s); one still on its way after 2 s is on a slow link (53 s at
// 1 Mbit/s) or is not coming, and the next devices go meanwhile.
constexpr double kTransferHoldSeconds = 2;

// Messages read before a round's selection, so that queued HELLOs of clients
// that reconnected have updated their routes.
const int kDrainBeforeSelection = 4096;
// Evaluations allowed to queue behind the one running before the server waits
// for them (each holds a copy of a global model).
const size_t kMaxEvaluationsQueued = 2;

// Each connection holds a file descriptor. Raises the process's descriptor
// limit to its hard limit and returns `wanted` (0 = no cap), lowered to leave
// room under it for the files the server writes and ZeroMQ's own descriptors;
// says so when it lowers it.
int ConnectionCap(int wanted) {
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

// The settings that make a run what it is, as "--flag=value" lines (kept in
// its checkpoints): what clients train with, how updates are compressed and
// aggregated, the privacy mechanism and what trains. A resumed run with any of
// them changed would continue the same model as another run (and a strategy's
// or accountant's state under parameters it was not built with). Not in it:
// --rounds (extending a run is what --resume is for), deadlines, timeouts,
// evaluation and the update checks, which an operator may need to change on a
// live fleet. The seed, strategy name and pruning schedule are checked apart.
std::string RunSettingsOf(const ServerOptions& o, const Normalization& normalization,
                          const std::vector<std::string>& class_names) {
  std::string text;
  auto put = [&text](const char* flag, const std::string& value) {
    text += std::string(flag) + "=" + value + "\n";
  };
  auto num = [](double v) {  // the shortest text that reads back as v
    char b[32];
    for (int digits = 6; digits <= 17; ++digits) {
      std::snprintf(b, sizeof(b), "%.*g", digits, v);
      if (std::strtod(b, nullptr) == v) break;
    }
    return std::string(b);
  };
  const StrategyOptions& s = o.strategy;
  put("--mode", o.mode);
  if (o.mode == "async") {
    put("--concurrency", std::to_string(o.async.concurrency));
    put("--buffer", std::to_string(o.async.buffer));
    put("--staleness-exponent", num(o.async.staleness_exponent));
    put("--max-staleness", std::to_string(o.async.max_staleness));
  } else {
    put("--fraction", num(o.fraction));
    put("--over-selection", num(o.over_selection));
  }
  put("--epochs", std::to_string(o.train.epochs));
  put("--batch", std::to_string(o.train.batch_size));
  put("--lr", num(o.train.lr));
  put("--lr-decay", num(o.lr_decay));
  put("--lr-min", num(o.lr_min));
  put("--momentum", num(o.train.momentum));
  put("--weight-decay", num(o.train.weight_decay));
  put("--uplink-bits", std::to_string(o.train.uplink_bits));
  put("--block", std::to_string(o.train.block));
  put("--no-error-feedback", o.train.error_feedback ? "false" : "true");
  put("--nearest-rounding", o.train.stochastic_rounding ? "false" : "true");
  put("--downlink", ValueFormatName(o.downlink));
  put("--trainable", o.trainable);
  // What devices' inputs and labels mean: a resumed model trained on other
  // ones would be fed other inputs, or its outputs read as other classes.
  put("--normalize", normalization.empty() ? "none" : normalization.ToString());
  std::string classes;
  for (const auto& name : class_names) classes += (classes.empty() ? "" : ",") + name;
  put("--classes", classes);
  put("--server-lr", num(s.server_lr > 0 ? s.server_lr : DefaultServerLr(s.name)));
  if (s.name == "fedavgm") put("--server-momentum", num(s.momentum));
  const bool adaptive = s.name == "fedadagrad" || s.name == "fedadam" || s.name == "fedyogi";
  if (adaptive) {
    put("--beta1", num(s.beta1));
    put("--tau", num(s.tau));
  }
  if (s.name == "fedadam" || s.name == "fedyogi") put("--beta2", num(s.beta2));
  if (s.name == "fedprox") put("--mu", num(s.mu));
  if (s.name == "trimmed_mean") put("--trim-fraction", num(s.trim_fraction));
  if (s.name == "krum" || s.name == "multikrum") {
    put("--krum-f", std::to_string(s.krum_f));
    put("--krum-m", std::to_string(s.krum_m));
  }
  put("--clip", num(s.clip));
  const PrivacyOptions& p = o.privacy;
  put("--dp-noise-multiplier", num(p.noise_multiplier));
  if (p.enabled()) {
    put("--dp-clip", num(p.clip));
    put("--dp-adaptive-clip", p.adaptive_clip ? "true" : "false");
    if (p.adaptive_clip) {
      put("--dp-target-quantile", num(p.target_quantile));
    }
  }
  return text;
}

// L2 norm of a model's kept values (pruned values are 0).
double KeptNorm(const ModelState& m) {
  double sq = 0;
  for (const auto& t : m.tensors) {
    for (float v : t.values) sq += static_cast<double>(v) * v;
  }
  return std::sqrt(sq);
}

}  // namespace

struct Server::Impl {
  ServerOptions o;
  std::shared_ptr<transport::Context> ctx;
  std::unique_ptr<transport::Socket> sock;
  // Turns each round's accepted updates into the next global model.
  std::unique_ptr<Aggregator> aggregator;
  // Evaluates global models on the test set off this thread; null without one.
  std::unique_ptr<BackgroundEvaluator> evaluator;
  // The input normalisation of the federation (the test set's, or
  // --normalize), sent in every TASK to clients that read extensions.
  Normalization normalization;
  // The federation's class names, in every TASK (empty: none sent).
  std::vector<std::string> class_names;
  // Completed rounds whose row (rounds.csv, callback, summary) is not written
  // yet, oldest first; `awaiting_eval` ones wait for their evaluation.
  struct Completed {
    RoundMetrics m;
    bool awaiting_eval{false};
  };
  std::deque<Completed> unreported;
  // Set for the duration of Run().
  const RoundCallback* on_round{nullptr};
  ServerSummary* summary{nullptr};

  ModelState global;
  // The SHA-256 of `global` as TASKs carry it (wire::Compact in the downlink
  // format); changes only when `global` does.
  Version version{};
  uint64_t round{0};  // last completed round
  // The devices the server knows (server/registry.h); `clients` is its map.
  ClientRegistry registry;
  std::map<std::string, ClientEntry>& clients = registry.entries();

  bool AllowHello(const std::string& id) { return registry.AllowHello(id, NowSeconds()); }
  // Room for a new device; the open round's devices are not evicted.
  bool MakeRoomInRegistry() {
    return registry.MakeRoom(NowSeconds(), [this](const std::string& id) {
      return selected.count(id) > 0 || pending.count(id) > 0;
    });
  }
  int ActiveClients(std::vector<std::string>* ids) const {
    return registry.Live(NowSeconds(), ids);
  }
  // What --min-clients counts: live participants; in private rounds, the
  // devices they are (a relay counts as the devices it says it serves), the
  // population the sampling rate applies to.
  int64_t LiveForMinimum() const {
    if (!PrivateRounds()) return ActiveClients(nullptr);
    std::vector<std::string> ids;
    ActiveClients(&ids);
    int64_t n = 0;
    for (const auto& id : ids) n += PopulationOf(id);
    return n;
  }

  // State of the round being collected (collecting == true).
  bool collecting{false};
  uint64_t current_round{0};
  // Random per round; TASKs carry it and UPDATEs must return it (signed).
  std::array<uint8_t, wire::kNonceBytes> round_nonce{};
  std::set<std::string> pending;  // selected, not yet answered
  // Updates that close the round (over-selection); the selection's size otherwise.
  size_t round_target{0};
  std::set<std::string> selected;
  // Selected clients that already got their TASK a second time this round.
  std::set<std::string> resent;
  // The open round's write-ahead log and where its accepted updates are in
  // it; ACKs wait in `unsynced_acks` until the log is durable (group commit).
  std::unique_ptr<WalWriter> wal;
  std::vector<WalEntry> wal_entries;
  struct UnsyncedAck {
    std::string peer;
    uint64_t round;
    uint64_t log_end;  // where its record ends in the log
  };
  std::deque<UnsyncedAck> unsynced_acks;
  // A round reopened from the log by --resume (consumed by its RunRound).
  std::optional<WalContents> resumed_wal;
  // Test hook (--debug-crash-at): kill the process at a named point.
  uint64_t acks_sent{0};
  // A write to the round log failed: the server stops (it cannot acknowledge).
  Status wal_error;
  bool reopened_round{false};

  // Asynchronous mode (--mode async): the tasks out on devices; null in
  // synchronous rounds. There `current_round` is the step being collected,
  // `pending` the devices holding a task, and `wal_entries` the buffer.
  std::unique_ptr<AsyncTasks> async_tasks;
  // Chooses the idle devices that get the freed tasks (seeded by --seed).
  std::optional<Random> async_rng;

  // Takes the round the log reopened (resumed_wal): its nonce, selection and
  // bounds, and the updates it had acknowledged, whose devices are not asked
  // again.
  // A reopened log's partials were aggregated as this run aggregates them: a
  // private round's are sums of clipped deltas weighing one per device, any
  // other a weighted sum, and the two do not mix.
  Status CheckLoggedPartials(const WalContents& c) const {
    for (const auto& e : c.entries) {
      if (e.within_clip >= 0 && !o.privacy.enabled()) {
        return Status::FailedPrecondition(
            "the round log " + WalPath() +
            " holds private partial aggregates (central DP): resume with the run's --dp-* "
            "settings");
      }
      if (e.within_clip < 0 && e.contributors > 1 && o.privacy.enabled()) {
        return Status::FailedPrecondition(
            "the round log " + WalPath() +
            " holds partial aggregates of a round without privacy: resume without --dp-*");
      }
    }
    return Status::OK();
  }

  Status ReopenRound() {
    WalContents c = std::move(*resumed_wal);
    resumed_wal.reset();
    const WalHeader& h = c.header;
    round_nonce = h.nonce;
    selected.clear();
    registered_at_selection = h.selected;
    for (const auto& [id, n] : h.selected) selected.insert(id);
    pending = selected;
    weight_cap = h.weight_cap;
    norm_bound = h.norm_bound;
    population = h.population;
    SetStepOffset();
    m.selected = static_cast<int>(selected.size());
    m.weight_cap = weight_cap;
    m.update_norm_bound = norm_bound;
    FL_RETURN_IF_ERROR(CheckLoggedPartials(c));
    auto w = WalWriter::Reopen(WalPath(), c, /*durable=*/true, wal_key);
    if (!w.ok()) return w.status();
    wal = std::move(w).value();
    for (const auto& e : c.entries) {
      auto rec = wal->Read(e);
      if (!rec.ok()) return rec.status();
      if (!pending.erase(e.sender)) continue;  // not selected, or twice: ignored
      KeepLogged(e, *rec);
    }
    reopened_round = true;
    spdlog::warn(
        "round {}: reopened from {}: {} acknowledged update(s) kept, {} device(s) still "
        "to answer{}",
        h.round, WalPath(), wal_entries.size(), pending.size(),
        c.torn_tail ? " (a torn record at its end, never acknowledged, was dropped)" : "");
    return Status::OK();
  }
  // An update the reopened log had acknowledged: in the round's buffer and
  // metrics as if it had just arrived.
  void KeepLogged(const WalEntry& e, const WalRecord& rec) {
    wal_entries.push_back(e);
    train_loss_sum += rec.train_loss;
    m.participants++;
    m.delta_bytes += rec.delta.size();
    m.max_train_seconds = std::max(m.max_train_seconds, rec.train_seconds);
  }

  // The round's TASK (envelope, payload): one copy, shared by every send;
  // [0] for clients older than payload extensions (no optional field), [1]
  // with the optional fields (FedProx's mu), [2] with them and asking before
  // upload (upload admission). Each is built when first sent.
  // Per variant (BuildTask): 0 plain, 1 with optional fields, 2 and asking
  // before upload; 3 and 4 are 1 and 2 with the model's file.
  std::vector<transport::SharedFrame> task_frames[5];
  wire::Envelope task_envelopes[5];
  // A TorchScript federation with a signing key: the model file and the
  // server's signature over it (crypto/model_code.h), for devices without it.
  std::string model_code;
  Ed25519Signature model_code_signature{};
  // Update bytes on their way (READY granted, UPDATE not yet here), and over
  // CURVE, TASK bytes on their way (sent, receipt not yet here).
  std::unique_ptr<TransferWindow> uploads;
  std::unique_ptr<TransferWindow> task_sends;
  // Enrolled node ids (clients_dir): the signing key prepared for
  // verification, and the CURVE key the device's connections must present.
  std::map<std::string, EnrolledDevice> enrolled;
  // Bound and authenticate (crypto/ingress.h): limits per type, and with an
  // enrollment folder, the enrolled signer and, over CURVE, its transport key.
  IngressPolicy ingress;
  std::unique_ptr<SigningKey> signer;
  // rounds.csv, checkpoints, the round log and global.flm (--out).
  std::unique_ptr<RunStore> store;
  // Authenticates the round log (from `signer`; none without a key).
  WalKey wal_key;
  std::shared_ptr<Admission> admission = std::make_shared<Admission>();
  // Connections the transport admits at once (0 = no cap), and when the next
  // refusal at it is logged.
  int connection_cap{0};
  int64_t next_cap_log{1};
  RoundMetrics m;
  double last_accept_time{0};
  double first_update_time{0};
  double train_loss_sum{0};
  std::map<std::string, int64_t> totals_rejected;
  bool finished{false};
  wire::Done done_msg;

  // Kept (unpruned) values of `global`'s trainable tensors: the length of
  // every delta.
  size_t kept_count{0};
  // --trainable: which tensors of `global` train (empty: all).
  std::vector<uint8_t> trainable;
  // Decoded delta of the update being handled; reused so that a large update
  // does not cost a fresh allocation (and its page faults) every time.
  std::vector<float> delta;
  // The ingest threads (--ingest-threads) and one decoded-delta buffer each.
  std::unique_ptr<WorkerPool> ingest_pool;
  std::vector<std::vector<float>> ingest_scratch;

  // L2 norm of the run's starting model (kept values): the reference of the
  // derived update-norm bound. Fixed for the run, so accepted updates cannot
  // raise the bound round after round.
  double reference_norm{0};
  // This round's bounds on an update: its delta's L2 norm (0 = none) and the
  // examples it counts with.
  double norm_bound{0};
  int64_t weight_cap{0};
  std::map<std::string, int64_t> registered_at_selection;
  // Live devices the open round's selection was made from.
  uint32_t population{0};
  bool warned_few_participants{false};
  bool warned_held_cap{false};
  bool warned_eval_skipped{false};

  // Devices a round may select when the rule holds every delta: as many as
  // fit in --max-aggregation-mb (at least 1). `want` when the rule streams.
  int HeldUpdateCap(int want) {
    const size_t per_update = aggregator->held_bytes_per_value() * std::max<size_t>(kept_count, 1);
    if (per_update == 0) return want;
    const int cap = static_cast<int>(std::clamp<size_t>(o.max_aggregation_bytes / per_update, 1,
                                                        std::numeric_limits<int>::max()));
    if (want > cap && !warned_held_cap) {
      warned_held_cap = true;
      spdlog::warn(
          "--strategy {} holds every delta of a round ({} B each): selecting {} devices a round, "
          "not {}, to stay within --max-aggregation-mb {:.0f}",
          aggregator->name(), per_update, cap, want,
          static_cast<double>(o.max_aggregation_bytes) / (1 << 20));
    }
    return cap;
  }
  // The strategy's fixed step offset this round (Aggregator::StepOffset).
  const std::vector<float>* step_offset{nullptr};
  double step_offset_factor{0};
  double step_offset_max_abs{0};

  // The seed of round `r`'s privacy noise: from the server's secret log key
  // when it has one (unpredictable to anyone else, the same after a restart),
  // else from --seed (reproducible, and predictable: experiments only).
  uint64_t NoiseSeed(uint64_t r) const { return SecretSeed("noise", r); }
  uint64_t SecretSeed(const char* what, uint64_t r) const {
    const std::string label = std::string("fedge dp ") + what + ", round " + std::to_string(r);
    if (wal_key) {
      HmacSha256 hmac(*wal_key);
      hmac.Update(label.data(), label.size());
      const Sha256Digest mac = hmac.Finish();
      uint64_t seed = 0;
      for (int i = 0; i < 8; ++i) seed = (seed << 8) | mac[i];
      return seed;
    }
    return (o.seed * 0xD1B54A32D192ED03ULL + r) ^ Sha256(label)[0];
  }

  // Federated pruning's schedule starts from this sparsity (the starting
  // model's, whether or not the run was resumed).
  double prune_from{0};
  // The federated pruning schedule in words ("" = none), kept in checkpoints.
  std::string pruning_schedule;

  // Largest |value| of the global model: with it, most updates pass the range
  // check without a pass over the model.
  double global_max_abs{0};

  // Recomputes `version`, `kept_count` and `global_max_abs` after `global`
  // changed.
  void SetGlobal() {
    version = ModelVersion(wire::Compact(global, o.downlink));
    kept_count = static_cast<size_t>(KeptCountOf(global, trainable));
    global_max_abs = 0;
    for (const auto& t : global.tensors) {
      for (float v : t.values) global_max_abs = std::max(global_max_abs, std::fabs(double{v}));
    }
  }

  // Largest magnitude a value of the global model may have: --max-param-value,
  // and never more than the downlink format carries.
  float ValueLimit() const {
    const float limit = static_cast<float>(o.max_param_value);
    return o.downlink == wire::ValueFormat::kFp16 ? std::min(limit, kMaxFp16Value) : limit;
  }

  // Sets the round's update bounds (see ServerOptions) for the selected clients.
  void SetRoundBounds() {
    // What each selected device registered with, as of its selection: a HELLO
    // it sends later does not change what its update may claim.
    registered_at_selection.clear();
    std::vector<int64_t> registered;
    for (const auto& id : selected) {
      // (A relay's claim is many devices': it is bounded apart.)
      if (!IsRelay(id)) registered.push_back(clients[id].num_examples);
      registered_at_selection[id] = clients[id].num_examples;
    }
    SetBounds(std::move(registered));
  }

  // The update bounds from the examples the devices an update may come from
  // registered with: the norm bound, and the weight cap (max_weight_ratio x
  // their lower median, at most max_examples); then the step offset.
  void SetBounds(std::vector<int64_t> registered) {
    norm_bound = o.max_update_norm > 0 ? o.max_update_norm
                                       : o.update_norm_factor * std::max(reference_norm, 1.0);
    weight_cap = o.max_examples;
    if (o.max_weight_ratio > 0 && !registered.empty()) {
      // The lower median: with two devices, the smaller count.
      const size_t mid = (registered.size() - 1) / 2;
      std::nth_element(registered.begin(), registered.begin() + mid, registered.end());
      const double median = static_cast<double>(registered[mid]);
      const double cap = std::max(1.0, std::floor(o.max_weight_ratio * median));
      if (cap < static_cast<double>(weight_cap)) weight_cap = static_cast<int64_t>(cap);
    }
    m.update_norm_bound = norm_bound;
    m.weight_cap = weight_cap;
    SetStepOffset();
  }

  // The fixed part of this round's step (momentum), for the range check.
  void SetStepOffset() {
    step_offset_factor = 0;
    step_offset_max_abs = 0;
    step_offset = aggregator->StepOffset(&step_offset_factor);
    if (step_offset && step_offset->size() != kept_count) step_offset = nullptr;  // (invariant)
    if (step_offset) {
      for (float v : *step_offset) {
        step_offset_max_abs =
            std::max(step_offset_max_abs, std::fabs(step_offset_factor * static_cast<double>(v)));
      }
    }
  }

  // --- sending --------------------------------------------------------------

  // The open round's TASK as `c` (device `id`) can read it. In asynchronous
  // mode the step's payload is shared the same way and the envelope is the
  // task's own (its step and nonce, signed for it); empty without a task.
  std::vector<transport::SharedFrame> TaskFor(const std::string& id, const ClientEntry& c) {
    int variant = !c.reads_extensions ? 0 : o.transfer_window_bytes > 0 ? 2 : 1;
    if (variant > 0 && c.needs_model_code && !model_code.empty()) variant += 2;
    std::vector<transport::SharedFrame>& frames = task_frames[variant];
    if (frames.empty()) {
      frames = BuildTask(variant, current_round, round_nonce, o.seed * 1000003ULL + current_round,
                         &task_envelopes[variant]);
    }
    if (!async_tasks) return frames;
    const AsyncTasks::Task* t = async_tasks->Find(id);
    if (!t || t->step != current_round) return {};  // (invariant: callers refresh it)
    wire::Envelope env = task_envelopes[variant];
    env.nonce = t->nonce;
    return {std::make_shared<const std::string>(SealEnvelope(env, signer.get())), frames[1]};
  }

  // Asynchronous mode: a task of an earlier step that is sent (again) now
  // goes out on the newest model, as a task of this step with a new nonce
  // (an update for the old one is then refused).
  void RefreshTask(const std::string& id) {
    const AsyncTasks::Task* t = async_tasks ? async_tasks->Find(id) : nullptr;
    if (t && t->step != current_round) {
      async_tasks->Issue(id, current_round, RandomNonce(), version, t->registered, NowSeconds());
    }
  }

  Status SendTask(const std::string& id, const ClientEntry& c) {
    RefreshTask(id);
    const auto frames = TaskFor(id, c);
    if (frames.empty()) return Status::FailedPrecondition("no task");
    Status st = sock->SendShared(c.peer, frames);
    if (st.ok()) m.download_bytes += frames[0]->size() + frames[1]->size();
    return st;
  }

  // Sends the open round's TASK to selected client `id` now, or, over CURVE
  // (where every connection encrypts a copy of its own), once the TASK bytes
  // on their way to other clients leave room (GrantTransfers sends it then).
  void OfferTask(const std::string& id) {
    ClientEntry& c = clients[id];
    if (!c.reads_extensions && !trainable.empty() && trains_without_mu.insert(id).second) {
      spdlog::warn(
          "{} predates optional TASK fields: it would train every tensor and send a delta of "
          "all of them, which this --trainable federation refuses; upgrade it",
          id);
    }
    if (!c.reads_extensions && aggregator->proximal_mu() > 0 &&
        trains_without_mu.insert(id).second) {
      spdlog::warn(
          "{} predates optional TASK fields: it trains without FedProx's proximal term (plain "
          "FedAvg); upgrade it to use --mu",
          id);
    }
    if ((!o.insecure || o.window_plaintext_tasks) && o.transfer_window_bytes > 0 &&
        c.reads_extensions) {
      const auto frames = TaskFor(id, c);
      if (!task_sends->Ask(id, frames[0]->size() + frames[1]->size(), NowSeconds())) return;
    }
    SendTaskNow(id, &c);
  }

  void SendTaskNow(const std::string& id, ClientEntry* c) {
    Status st = SendTask(id, *c);
    // Its deadline runs from when it left, not from a wait for the window.
    if (st.ok() && async_tasks) async_tasks->Sent(id, NowSeconds());
    if (st.ok()) return;
    // Its connection went away since it was last heard. It stays selected:
    // when it reconnects (its next HELLO) it gets the TASK on the new
    // connection; if it does not within client_timeout, GiveUpOnVanished
    // closes its turn.
    spdlog::warn("round {}: could not send TASK to {} ({}); it gets it when it reconnects",
                 current_round, id, st.message());
    MarkUnreachable(c);
    task_sends->Release(id);
  }

  // A TASK of round (or step) `r`, encoded and hashed once for all its sends;
  // `*unsealed` gets its envelope before signing (asynchronous mode seals
  // one per task).
  std::vector<transport::SharedFrame> BuildTask(int variant, uint64_t r,
                                                const std::array<uint8_t, wire::kNonceBytes>& nonce,
                                                uint64_t seed, wire::Envelope* unsealed) const {
    wire::Task task;
    if (variant >= 3) {
      task.model_code = model_code;
      task.model_code_signature = model_code_signature;
      variant -= 2;
    }
    task.config = o.train;  // (a relay's: the parent's, whole, its seed included)
    if (!o.parent) {
      task.config.lr = RoundLearningRate(o, static_cast<int>(r));
      task.config.seed = seed;
    }
    task.config.deadline_seconds = o.round_deadline_seconds;
    if (variant == 0) {
      // Optional fields, which a device older than them cannot read.
      task.config.trainable.clear();
      task.config.proximal_mu = 0;
      task.config.normalize_mean.clear();
      task.config.normalize_std.clear();
      task.config.class_names.clear();
    }
    if (variant >= 1 && !o.parent) {
      task.config.trainable = trainable;
      task.config.proximal_mu = aggregator->proximal_mu();
      task.config.normalize_mean = normalization.mean;
      task.config.normalize_std = normalization.std;
      task.config.class_names = class_names;
    }
    task.ask_before_upload = variant == 2;
    if (variant >= 1) task.root_endorsement = relay_endorsement;
    task.config.dp_sampling_rate = task.config.dp_clip = 0;
    if (variant >= 1 && PrivateRounds()) {
      // For the relays among the recipients (devices have nothing to do with
      // it): sample at this rate and clip to this norm.
      task.config.dp_sampling_rate = SamplingRate();
      task.config.dp_clip = o.privacy.enabled() ? aggregator->dp_clip() : relay_dp_clip;
    }
    // Built for this TASK and dropped with it: between rounds only the
    // encoded TASK holds the model in its wire form.
    task.model = wire::Compact(global, o.downlink);
    wire::Envelope env;
    env.type = wire::MessageType::kTask;
    env.flags = wire::kFlagReadsExtensions;
    env.sender = kServerId;
    env.round = r;
    env.model_version = version;
    env.nonce = nonce;
    std::string payload = wire::Encode(task);
    env.payload_length = payload.size();
    env.payload_digest = Sha256(payload);
    *unsealed = env;
    return {std::make_shared<const std::string>(SealEnvelope(env, signer.get())),
            std::make_shared<const std::string>(std::move(payload))};
  }

  Status SendRaw(const std::string& peer, const SealedMessage& msg) {
    Status st = sock->Send(peer, {msg.envelope, msg.payload});
    if (st.ok()) m.download_bytes += msg.envelope.size() + msg.payload.size();
    return st;
  }

  Status Send(const std::string& peer, wire::MessageType type, uint64_t r, std::string payload,
              const std::array<uint8_t, wire::kNonceBytes>& nonce = {}) {
    wire::Envelope env;
    env.type = type;
    env.flags = wire::kFlagReadsExtensions;
    env.sender = kServerId;
    env.round = r;
    env.model_version = version;
    env.nonce = nonce;
    return SendRaw(peer, SealMessage(env, std::move(payload), signer.get()));
  }

  // DONE to a client, echoing the freshness stamp of its newest HELLO (or of
  // `hello`, the HELLO being answered): clients refuse a DONE that answers no
  // HELLO of their current connection, so a captured DONE stops nobody.
  void SendDone(const std::string& peer, const std::string& id, const wire::Envelope* hello) {
    uint64_t stamp = hello ? wire::HelloStampOf(hello->nonce) : 0;
    auto it = clients.find(id);
    if (it != clients.end()) stamp = std::max(stamp, it->second.hello_stamp);
    (void)Send(peer, wire::MessageType::kDone, round, wire::Encode(done_msg),
               wire::HelloStampNonce(stamp));
  }

  void Reply(const std::string& peer, bool accepted, wire::MessageType about, uint64_t r,
             const std::string& reason, const std::string& message,
             const std::array<uint8_t, wire::kNonceBytes>& nonce = {}) {
    // A peer that is gone cannot be told; that is not an error for the server.
    (void)SendReply(peer, accepted, about, r, reason, message, nonce);
  }
  Status SendReply(const std::string& peer, bool accepted, wire::MessageType about, uint64_t r,
                   const std::string& reason, const std::string& message,
                   const std::array<uint8_t, wire::kNonceBytes>& nonce = {}) {
    wire::Reply reply;
    reply.in_reply_to = static_cast<uint8_t>(about);
    reply.reason = reason;
    reply.message = message;
    return Send(peer, accepted ? wire::MessageType::kAck : wire::MessageType::kReject, r,
                wire::Encode(reply), nonce);
  }

  // Refuses a message: counter, throttled log line, REJECT to the sender.
  void Refuse(const std::string& peer, const std::string& who, wire::MessageType about, uint64_t r,
              const std::string& reason, const std::string& message) {
    const int64_t n = ++m.rejected[reason];
    totals_rejected[reason]++;
    if (n <= kLogPerReason) {
      const bool known = about >= wire::MessageType::kHello && about <= wire::MessageType::kReady;
      spdlog::warn("refused {} from {}: {}: {}{}", known ? wire::MessageTypeName(about) : "message",
                   who, reason, message,
                   n == kLogPerReason ? " (further ones this round are only counted)" : "");
    }
    Reply(peer, false, about, r, reason, message);
  }

  // --- receiving ------------------------------------------------------------

  // One received message and what the ingest threads made of it: its bound
  // and authentication, and for an UPDATE its check, done ahead against the
  // bounds of the task it names (`checked_base`, `checked_registered`).
  struct Inbound {
    transport::Received rx;
    // Time the server's threads spent on it: its receive, its preparation
    // (on whichever ingest thread) and its handling.
    double work_seconds{0};
    std::optional<std::variant<VerifiedMessage, Refusal>> verified;
    double auth_seconds{0};  // digest + signature
    std::optional<std::variant<AcceptedUpdate, Refusal>> checked;
    Sha256Digest checked_base{};
    int64_t checked_registered{0};
  };

  // The ingest threads' part of a message (any thread): bound, authenticate
  // and, for an UPDATE, check and decode into `scratch`. Reads the server's
  // state and changes none of it; the handler, on the server's thread, takes
  // the check only when the bounds it would use are the same.
  void Prepare(Inbound* in, std::vector<float>* scratch) const {
    const double t0 = NowSeconds();
    PrepareChecks(in, scratch);
    in->work_seconds += NowSeconds() - t0;
  }
  void PrepareChecks(Inbound* in, std::vector<float>* scratch) const {
    in->verified = Authenticate(in->rx.frame_count, &in->rx.frames, in->rx.peer_key, ingress,
                                &in->auth_seconds);
    const auto* msg = std::get_if<VerifiedMessage>(&*in->verified);
    if (!msg || finished || !collecting || msg->envelope().type != wire::MessageType::kUpdate) {
      return;
    }
    // Only an update the round waits for is decoded ahead: one the handler
    // will refuse (not selected, already answered, a replay) costs its hash
    // and signature alone, as before.
    const std::string& who = msg->envelope().sender;
    const AsyncTasks::Task* task = async_tasks ? async_tasks->Find(who) : nullptr;
    if (async_tasks ? task == nullptr : pending.count(who) == 0) return;
    const UpdateBounds b = BoundsFor(who, task);
    in->checked_base = b.base;
    in->checked_registered = b.registered;
    in->checked = CheckUpdate(*msg, b, scratch);
  }

  // Handles one prepared message; for UPDATEs, adds the server's time on it
  // (its receive, preparation and handling) and its digest + signature time
  // to the round metrics.
  void Handle(Inbound* in) {
    const double t0 = NowSeconds();
    const wire::MessageType type = Dispatch(in);
    if (type == wire::MessageType::kHello || type == wire::MessageType::kUpdate ||
        type == wire::MessageType::kReady) {
      GrantTransfers();
    }
    if (type == wire::MessageType::kUpdate) {
      m.updates_received++;
      m.update_auth_seconds += in->auth_seconds;
      const double handled = in->work_seconds + (NowSeconds() - t0);
      m.update_handle_seconds += handled;
      if (o.metrics) o.metrics->ObserveIngest(in->auth_seconds + handled);
    }
  }

  // The largest payload a message of `type` may have (wire/limits.h): an
  // UPDATE exactly what the round's codec makes of the model's kept values,
  // or, where relays may answer, their exact partial sums (a device's is
  // still held to the round's codec when checked).
  size_t PayloadLimit(wire::MessageType type) const {
    if (type == wire::MessageType::kUpdate) {
      const size_t device =
          wire::UpdatePayloadLimit(kept_count, o.train.uplink_bits, o.train.block);
      return o.relays_dir.empty() ? device
                                  : std::max(device, wire::ExactSumPayloadLimit(kept_count));
    }
    return wire::kMaxSmallPayloadBytes;
  }

  // Returns the type of the message if its envelope decoded, else kUnknownType.
  wire::MessageType Dispatch(Inbound* in) {
    const transport::Received& rx = in->rx;
    m.upload_bytes += rx.bytes;
    // Bound and authenticate before anything is decoded (crypto/ingress.h):
    // Prepare did.
    const auto& verified = *in->verified;
    if (auto* refusal = std::get_if<Refusal>(&verified)) {
      if (!refusal->envelope) {
        // No usable sender id: a name for the log line.
        Refuse(rx.peer, "peer#" + std::to_string(std::hash<std::string>()(rx.peer) % 100000),
               kUnknownType, 0, refusal->reason, refusal->message);
        return kUnknownType;
      }
      const wire::Envelope& e = *refusal->envelope;
      Refuse(rx.peer, e.sender, e.type, e.round, refusal->reason, refusal->message);
      return e.type;
    }
    const VerifiedMessage& msg = std::get<VerifiedMessage>(verified);
    const wire::Envelope* env = &msg.envelope();
    if (finished) {
      SendDone(rx.peer, env->sender, env->type == wire::MessageType::kHello ? &*env : nullptr);
      return env->type;
    }
    switch (env->type) {
      case wire::MessageType::kHello:
      case wire::MessageType::kReady:
        // Both are small and answered at once: one token bucket bounds them.
        if (!AllowHello(env->sender)) {
          m.rejected["rate_limited"]++;
          if (totals_rejected["rate_limited"]++ % 1000 == 0) {
            spdlog::warn(
                "dropping HELLOs and READYs from {}: more than {:.0f} a second (counted in "
                "rate_limited)",
                env->sender, ClientRegistry::kHelloPerSecond);
          }
          break;
        }
        if (env->type == wire::MessageType::kHello) {
          HandleHello(rx.peer, *env, msg);
        } else {
          HandleReady(rx.peer, *env, msg);
        }
        break;
      case wire::MessageType::kUpdate:
        HandleUpdate(rx.peer, *env, msg, in);
        break;
      default:
        Refuse(rx.peer, env->sender, env->type, env->round, "unexpected_type",
               std::string("a server does not accept ") + wire::MessageTypeName(env->type));
    }
    return env->type;
  }

  void HandleHello(const std::string& peer, const wire::Envelope& env, const VerifiedMessage& msg) {
    wire::Hello h;
    Status st = msg.Decode(&h);
    if (!st.ok()) {
      Refuse(peer, env.sender, env.type, env.round, "bad_payload", st.message());
      return;
    }
    // An empty architecture means "whatever the server trains": the client
    // builds its model from the first TASK, from its built-in models only; a
    // TorchScript model needs the file on the device.
    const bool script = global.architecture.rfind("torchscript:", 0) == 0;
    // A device without the file takes it from the server, signed, when it
    // pinned the server's key and the server has one to sign with.
    const bool sent_code = script && h.architecture.empty() && h.takes_model_code &&
                           !model_code.empty() && (env.flags & wire::kFlagReadsExtensions) != 0;
    if (!sent_code && (!h.architecture.empty() || script) &&
        h.architecture != global.architecture) {
      Refuse(
          peer, env.sender, env.type, env.round, "wrong_architecture",
          "this federation trains '" + global.architecture + "', the client was started " +
              (h.architecture.empty() ? std::string("without --model")
                                      : "with --model " + Printable(h.architecture)) +
              (script ? "; start it with --model FILE.pt, the same TorchScript file as the "
                        "server's, or with --server-key and --model-cache to receive the file "
                        "signed (the server needs its --key)"
                      : "; start it with --model " + global.architecture + " or without --model"));
      return;
    }
    if (h.num_examples <= 0) {
      Refuse(peer, env.sender, env.type, env.round, "bad_payload",
             "num_examples must be > 0, got " + std::to_string(h.num_examples));
      return;
    }
    if (std::find(h.codecs.begin(), h.codecs.end(), wire::kCodecQuant) == h.codecs.end()) {
      Refuse(peer, env.sender, env.type, env.round, "no_common_codec",
             std::string("server needs codec '") + wire::kCodecQuant + "'");
      return;
    }
    auto it = clients.find(env.sender);
    const bool is_new = it == clients.end();
    if (is_new && !MakeRoomInRegistry()) {
      Refuse(peer, env.sender, env.type, env.round, "registry_full",
             "the server knows " + std::to_string(clients.size()) +
                 " live devices (--max-clients); try again later");
      return;
    }
    const uint64_t stamp = wire::HelloStampOf(env.nonce);
    if (!is_new && it->second.peer != peer && stamp != 0 && stamp <= it->second.hello_stamp &&
        it->second.reachable && NowSeconds() - it->second.last_seen <= o.client_timeout_seconds) {
      // A HELLO no newer than one already seen, from another connection, while
      // the node's own connection is live: a replay (or a clock that stepped
      // back across a restart, which heals once the old connection times out).
      Refuse(peer, env.sender, env.type, env.round, "stale_hello",
             "HELLO is not newer than the last one from this node, which is connected on "
             "another connection");
      return;
    }
    ClientEntry& c = clients[env.sender];
    if (is_new) {
      ClientRegistry::StartHelloBucket(&c, NowSeconds());
    }
    c.hello_stamp = std::max(c.hello_stamp, stamp);
    // A HELLO naming the open round says the device has its TASK: the
    // receipt of a TASK just sent, or a device that reconnected with its
    // update for this round in hand.
    const bool has_task = collecting && HoldsTask(env.sender, env.round);
    if (has_task) task_sends->Release(env.sender);
    const bool moved = !is_new && (c.peer != peer || !c.reachable);
    c.peer = peer;
    c.reachable = true;
    c.reads_extensions = (env.flags & wire::kFlagReadsExtensions) != 0;
    c.needs_model_code = sent_code;
    c.num_examples = h.num_examples;
    c.devices = h.devices;
    c.last_seen = NowSeconds();
    if (is_new && o.verbose) {
      spdlog::info("client {} registered ({} examples); {} known", env.sender, h.num_examples,
                   clients.size());
    }
    // (A device holding a task of an earlier step is welcomed at that step:
    // the welcome's round is the floor below which it takes TASKs for replays.)
    const AsyncTasks::Task* held_task = async_tasks ? async_tasks->Find(env.sender) : nullptr;
    Reply(peer, true, wire::MessageType::kHello, held_task ? held_task->step : current_round,
          "welcome", "");
    // A selected client that reconnected mid-round lost its TASK: send it again
    // on the new connection, once a round (a client flapping its connection
    // does not get a copy of the model per HELLO).
    if (moved && collecting && !has_task && pending.count(env.sender) &&
        resent.insert(env.sender).second) {
      if (o.verbose) {
        spdlog::info("round {}: {} reconnected; sending its TASK again", current_round, env.sender);
      }
      task_sends->Release(env.sender);  // outside the window: it is owed
      if (!SendTask(env.sender, c).ok()) MarkUnreachable(&c);
    }
  }

  // For a READY or UPDATE: true when its sender is a known device selected for
  // the open round that has not answered yet, and the message carries this
  // round's number and nonce. Otherwise refuses it and returns false.
  bool FromPendingParticipant(const std::string& peer, const wire::Envelope& env) {
    const std::string& who = env.sender;
    auto it = clients.find(who);
    if (it == clients.end()) {
      Refuse(peer, who, env.type, env.round, "unknown_client", "send HELLO first");
      return false;
    }
    // The route stays: only a HELLO moves a client to another connection (in
    // plaintext, a replayed UPDATE passes authentication from any connection).
    it->second.last_seen = NowSeconds();
    const char* what = env.type == wire::MessageType::kReady ? "READY" : "update";
    if (async_tasks) return FromTaskHolder(peer, env, what);
    if (!collecting || env.round != current_round) {
      Refuse(peer, who, env.type, env.round, "stale_round",
             std::string(what) + " for round " + std::to_string(env.round) +
                 (collecting ? "; collecting round " + std::to_string(current_round)
                             : "; no round is open"));
      return false;
    }
    if (CRYPTO_memcmp(env.nonce.data(), round_nonce.data(), round_nonce.size()) != 0) {
      Refuse(peer, who, env.type, env.round, "bad_nonce",
             std::string(what) + " does not carry this round's nonce (replayed from another run?)");
      return false;
    }
    if (!selected.count(who)) {
      Refuse(peer, who, env.type, env.round, "not_selected",
             "client was not selected for round " + std::to_string(current_round));
      return false;
    }
    if (!pending.count(who)) {
      Refuse(peer, who, env.type, env.round, "replay", "already answered this round");
      return false;
    }
    return true;
  }

  // Whether `id` holds a task of round (step) `r` of the open round.
  bool HoldsTask(const std::string& id, uint64_t r) const {
    if (async_tasks) {
      const AsyncTasks::Task* t = async_tasks->Find(id);
      return t && t->step == r;
    }
    return r == current_round && selected.count(id) > 0;
  }

  // FromPendingParticipant in asynchronous mode: the sender holds a task, the
  // message names its step and carries its nonce, and it is not too stale
  // (then `update_staleness` is its staleness).
  bool FromTaskHolder(const std::string& peer, const wire::Envelope& env, const char* what) {
    const std::string& who = env.sender;
    if (!collecting) {
      Refuse(peer, who, env.type, env.round, "stale_round",
             std::string(what) + " for step " + std::to_string(env.round) +
                 "; the run's last step is done");
      return false;
    }
    uint32_t tau = 0;
    switch (async_tasks->Check(who, env.round, env.nonce, current_round, &tau)) {
      case AsyncTasks::Match::kOk:
        return true;
      case AsyncTasks::Match::kNoTask:
        Refuse(peer, who, env.type, env.round, "stale_round",
               std::string(what) + " for step " + std::to_string(env.round) +
                   ", but this device holds no task (answered already, given up at the "
                   "deadline, or handed out before the server restarted)");
        return false;
      case AsyncTasks::Match::kWrongTask: {
        Refuse(peer, who, env.type, env.round, "bad_nonce",
               std::string(what) + " does not carry the step and nonce of this device's task");
        // A device answering another task of its (a restart voided it) may
        // have set ours aside as a copy of that one: send it again, once.
        auto it = clients.find(who);
        if (it != clients.end() && resent.insert(who).second) {
          task_sends->Release(who);
          if (!SendTask(who, it->second).ok()) MarkUnreachable(&it->second);
        }
        return false;
      }
      case AsyncTasks::Match::kTooStale:
        EndTurn(who);
        Refuse(peer, who, env.type, env.round, "too_stale",
               std::string(what) + " from step " + std::to_string(env.round) +
                   " is more than --max-staleness " +
                   std::to_string(async_tasks->options().max_staleness) +
                   " steps behind the model (step " + std::to_string(current_round) + ")");
        return false;
    }
    return false;
  }

  // Closes `id`'s turn (its task, in asynchronous mode) and its transfers.
  void EndTurn(const std::string& id) {
    pending.erase(id);
    uploads->Release(id);
    task_sends->Release(id);
    if (async_tasks) async_tasks->Close(id);
  }

  // A participant's update is encoded: it may send it now ("granted"), or once
  // the update bytes on their way leave room ("queued", then "granted").
  void HandleReady(const std::string& peer, const wire::Envelope& env, const VerifiedMessage& msg) {
    if (!FromPendingParticipant(peer, env)) return;
    wire::Ready ready;
    Status st = msg.Decode(&ready);
    if (!st.ok()) {
      Refuse(peer, env.sender, env.type, env.round, "bad_payload", st.message());
      return;
    }
    const size_t limit = PayloadLimit(wire::MessageType::kUpdate);
    if (ready.update_bytes == 0 || ready.update_bytes > limit) {
      Refuse(peer, env.sender, env.type, env.round, "too_large",
             "READY announces an update of " + std::to_string(ready.update_bytes) +
                 " bytes; this round's updates are at most " + std::to_string(limit));
      return;
    }
    const bool now = uploads->Ask(env.sender, ready.update_bytes, NowSeconds());
    // (The round of the device's task: in asynchronous mode an earlier step.)
    Reply(peer, true, wire::MessageType::kReady, env.round, now ? "granted" : "queued", "");
  }

  // Sends "granted" to the devices whose turn it is to upload, and TASKs to
  // those whose turn it is to download.
  void GrantTransfers() {
    if (!collecting) return;
    const double now = NowSeconds();
    for (const auto& id : uploads->Pump(now)) {
      auto it = clients.find(id);
      if (it == clients.end()) continue;
      const AsyncTasks::Task* t = async_tasks ? async_tasks->Find(id) : nullptr;
      if (async_tasks && !t) continue;
      Reply(it->second.peer, true, wire::MessageType::kReady, t ? t->step : current_round,
            "granted", "");
    }
    for (const auto& id : task_sends->Pump(now)) {
      auto it = clients.find(id);
      if (it != clients.end() && pending.count(id)) SendTaskNow(id, &it->second);
    }
  }

  // The bounds an UPDATE from `who` is checked against: its task's (`task`,
  // in asynchronous mode) or the round's. Changes nothing.
  UpdateBounds BoundsFor(const std::string& who, const AsyncTasks::Task* task) const {
    UpdateBounds bounds;
    bounds.base = task ? task->base : version;
    bounds.global = &global;
    bounds.kept_count = kept_count;
    bounds.global_max_abs = global_max_abs;
    bounds.train = &o.train;
    if (task) {
      bounds.registered = task->registered;
    } else if (auto it = registered_at_selection.find(who); it != registered_at_selection.end()) {
      bounds.registered = it->second;
    }
    bounds.weight_cap = weight_cap;
    if (MaySendPartials(who)) {
      bounds.relay_devices = o.relay_devices;
      bounds.device_cap = o.max_examples;
      bounds.relay = IsRelay(who);
    }
    bounds.private_partials = PrivateRounds();
    bounds.norm_bound = norm_bound;
    bounds.norm_bound_source = o.max_update_norm > 0
                                   ? "--max-update-norm"
                                   : "--update-norm-factor x the starting model's L2 norm";
    // Strategies whose step is not a convex combination of the deltas
    // (momentum, adaptive, private) are held to the range when the round's
    // step is applied.
    bounds.step_scale = aggregator->convex_step_scale();
    bounds.offset = step_offset;
    bounds.offset_factor = step_offset_factor;
    bounds.offset_max_abs = step_offset_max_abs;
    bounds.value_limit = ValueLimit();
    return bounds;
  }

  void HandleUpdate(const std::string& peer, const wire::Envelope& env, const VerifiedMessage& msg,
                    Inbound* in) {
    if (collecting && first_update_time == 0) first_update_time = NowSeconds();
    const auto who = env.sender;
    if (!FromPendingParticipant(peer, env)) return;
    // Its bytes are here: the next device may start sending (Handle grants).
    uploads->Release(who);
    task_sends->Release(who);
    // From here on the sender was selected and has not answered: a refusal
    // counts as its answer for the round, so the round does not wait for it.
    const AsyncTasks::Task* task = async_tasks ? async_tasks->Find(who) : nullptr;
    const UpdateBounds bounds = BoundsFor(who, task);
    // The ingest threads' check stands when it used these bounds (the round's
    // other bounds do not change while a batch is handled).
    std::variant<AcceptedUpdate, Refusal> checked =
        in->checked && in->checked_base == bounds.base &&
                in->checked_registered == bounds.registered
            ? std::move(*in->checked)
            : CheckUpdate(msg, bounds, &delta);
    if (auto* refusal = std::get_if<Refusal>(&checked)) {
      RefuseAnswer(peer, who, env.round, refusal->reason, refusal->message);
      return;
    }
    AcceptedUpdate& u = std::get<AcceptedUpdate>(checked);
    // Logged now, acknowledged once the log is durable (CommitAcks).
    // (FromTaskHolder checked it against --max-staleness.)
    const uint32_t staleness = task ? static_cast<uint32_t>(current_round - task->step) : 0;
    auto entry =
        wal->Append(who, u.weight, u.train_loss, u.train_seconds, u.encoded_delta, staleness,
                    static_cast<uint32_t>(std::max<int64_t>(1, u.contributors)), u.within_clip);
    if (!entry.ok()) {
      wal_error = entry.status();
      return;
    }
    wal_entries.push_back(*entry);
    if (u.contributors > 1) partial_senders.insert(who);
    pending.erase(who);
    if (task) async_tasks->Close(who);  // its slot is free: the next tick hands it on
    unsynced_acks.push_back({peer, env.round, entry->offset + entry->length + kSha256DigestBytes});
    m.participants++;
    m.max_delta_norm = std::max(m.max_delta_norm, u.norm);
    m.delta_bytes += u.encoded_delta.size();
    m.max_train_seconds = std::max(m.max_train_seconds, u.train_seconds);
    train_loss_sum += u.train_loss;
    last_accept_time = NowSeconds();
  }

  // Acknowledges the logged updates that are durable: an ACKed update
  // survives a crash. The log's own thread syncs batch after batch while this
  // thread goes on reading (group commit); `wait` waits for all of them.
  Status CommitAcks(bool wait) {
    if (!wal_error.ok()) return wal_error;
    if (unsynced_acks.empty() || !wal) return Status::OK();
    if (wait) {
      FL_RETURN_IF_ERROR(wal->Sync());
    } else {
      wal->RequestSync();
      FL_RETURN_IF_ERROR(wal->error());
    }
    const uint64_t durable = wal->durable_end();
    while (!unsynced_acks.empty() && unsynced_acks.front().log_end <= durable) {
      const UnsyncedAck a = std::move(unsynced_acks.front());
      unsynced_acks.pop_front();
      // From a device's view its update is accepted now, when it is durable.
      last_accept_time = NowSeconds();
      Reply(a.peer, true, wire::MessageType::kUpdate, a.round, "accepted", "");
      ++acks_sent;
      MaybeCrash("ack", acks_sent);
    }
    return Status::OK();
  }

  // Test hook: `--debug-crash-at POINT:N` kills the process (SIGKILL, as kill -9
  // does) at the N-th time it passes POINT.
  void MaybeCrash(const char* point, uint64_t n) const {
    if (o.debug_crash_point == point && o.debug_crash_count == n) {
      spdlog::default_logger()->flush();
      ::raise(SIGKILL);
    }
  }

  // Aggregates the round's logged updates in the order of their senders' ids,
  // whatever order they arrived in, into `global`.
  Status AggregateFromLog() {
    std::vector<WalEntry> order = wal_entries;
    // (The offset orders two updates of one sender, which a step never has.)
    std::sort(order.begin(), order.end(), [](const WalEntry& a, const WalEntry& b) {
      return a.sender != b.sender ? a.sender < b.sender : a.offset < b.offset;
    });
    CapPartials(&order);
    // Each buffer goes as soon as it is done with, so the model-sized ones
    // that follow (the new version's encoding, the checkpoint, the next TASK)
    // reuse its memory rather than add to the server's peak.
    Status st;
    aggregator->Begin(kept_count, {SamplingRate() * population, NoiseSeed(current_round)});
    {
      std::string buffer;
      for (const auto& e : order) {
        std::string_view encoded;
        FL_RETURN_IF_ERROR(wal->ReadDelta(e, &buffer, &encoded));
        // An update its checks passed and the rule still cannot take (a
        // partial's mean that rounds onto the fixed-point range's edge) is
        // left out, the same way in a resumed run; the round goes on.
        if (Status add = AddLogged(e, encoded); !add.ok()) {
          spdlog::error("round {}: {}'s update is left out of the aggregate: {}", current_round,
                        e.sender, add.message());
          m.rejected["aggregation_refused"]++;
          totals_rejected["aggregation_refused"]++;
        }
      }
    }
    std::vector<float>().swap(delta);  // until the next round's first update
    for (auto& scratch : ingest_scratch) std::vector<float>().swap(scratch);
    const int64_t count = aggregator->count();
    m.clipped = aggregator->clipped();
    if (o.parent) {
      // A relay: its exact sum goes up as it is; the model stays the task's
      // (the root steps, after its noise when its rounds are private). None
      // left: an empty partial, which its parent refuses (relay_empty).
      relay_sum = FixedSum();
      return count == 0 ? Status::OK() : aggregator->FinishSum(&relay_sum);
    }
    // All or nothing: a step with a value out of range is not committed.
    if (trainable.empty()) {
      st = aggregator->Finish(&global, ValueLimit());
    } else {
      // The step moves the trainable tensors only.
      ModelState view = SelectTensors(global, trainable);
      st = aggregator->Finish(&view, ValueLimit());
      for (size_t i = 0, v = 0; st.ok() && i < global.tensors.size(); ++i) {
        if (trainable[i]) global.tensors[i].values = std::move(view.tensors[v++].values);
      }
    }
    m.epsilon = aggregator->epsilon();
    m.dp_clip = aggregator->dp_clip();
    if (st.ok()) {
      if (const int64_t n = ClampRunningVariances(&global)) {
        // Honest devices' variances average to one >= 0; below it, a
        // quantized delta, a server optimizer's overshoot or a device
        // pushing BatchNorm's statistics.
        spdlog::warn(
            "round {}: the {} step took {} BatchNorm running variance value(s) below 0; set to 0 "
            "(a coordinate-wise robust strategy, such as median, resists a device that pushes "
            "them)",
            current_round, aggregator->name(), n);
      }
      SetGlobal();
      return Status::OK();
    }
    m.committed = false;
    m.rejected["global_out_of_range"]++;
    totals_rejected["global_out_of_range"]++;
    spdlog::error(
        "round {}: the {} step from {} updates is not committed, the global model is "
        "unchanged: {}",
        current_round, aggregator->name(), count, st.message());
    return Status::OK();
  }

  // Adds one logged update to the round's aggregate: a relay's exact partial
  // sum as integers, a device's delta (FedBuff: a stale one counts s(tau) of
  // a fresh one). (A log written before partials were exact holds a relay's
  // mean as a 32-bit delta: a private one is made its devices' sum again.)
  Status AddLogged(const WalEntry& e, std::string_view encoded) {
    const double staleness =
        e.staleness > 0 ? StalenessWeight(e.staleness, o.async.staleness_exponent) : 1.0;
    if (LooksLikeFixedSum(encoded)) {
      FixedSum part;
      FL_RETURN_IF_ERROR(DecodeFixedSum(encoded, kept_count, &part));
      if (e.within_clip >= 0) return aggregator->AddPrivatePartial(e.within_clip, &part);
      if (staleness != 1.0) {
        for (FixedInt& x : part.values) x = RoundFixed(static_cast<double>(x) * staleness);
      }
      return aggregator->AddPartial(e.weight, &part);
    }
    FL_RETURN_IF_ERROR(QuantDecode(encoded, kept_count, &delta));
    if (e.within_clip >= 0) {
      FixedSum part;
      FL_RETURN_IF_ERROR(AddWeighted(&part, e.contributors, delta.data(), delta.size()));
      return aggregator->AddPrivatePartial(e.within_clip, &part);
    }
    if (staleness != 1.0) {
      const float s = static_cast<float>(staleness);
      for (float& v : delta) v *= s;
    }
    return aggregator->Add(e.weight, &delta);
  }

  // Relays' partial aggregates: none counts more than max_weight_ratio times
  // the (lower) median of the round's partials' weight per device, for each
  // of its devices; a relay that claims its devices hold more than the
  // others' is held to that. From the log alone (weights and contributors),
  // so a resumed round caps as the uninterrupted one did.
  void CapPartials(std::vector<WalEntry>* entries) {
    // (A private partial weighs one per device: there is nothing to cap.)
    if (!(o.max_weight_ratio > 0) || PrivateRounds()) return;
    std::vector<double> per_device;
    for (const auto& e : *entries) {
      if (e.contributors > 1) {
        per_device.push_back(static_cast<double>(e.weight) / e.contributors);
      }
    }
    if (per_device.size() < 2) return;
    const size_t mid = (per_device.size() - 1) / 2;
    std::nth_element(per_device.begin(), per_device.begin() + mid, per_device.end());
    const double cap = std::max(1.0, o.max_weight_ratio * per_device[mid]);
    for (auto& e : *entries) {
      if (e.contributors <= 1) continue;
      const auto most = static_cast<int64_t>(std::floor(cap * e.contributors));
      if (e.weight <= most) continue;
      spdlog::warn(
          "round {}: {}'s partial aggregate claims {} examples for {} devices; counted as {} "
          "(--max-weight-ratio {} x the median partial's {:.0f} per device)",
          current_round, e.sender, e.weight, e.contributors, most, o.max_weight_ratio,
          per_device[mid]);
      e.weight = most;
    }
  }

  static Checkpoint::Row RowOf(const RoundMetrics& rm) {
    return {rm.round,         static_cast<uint32_t>(rm.participants),
            rm.upload_bytes,  rm.download_bytes,
            rm.round_seconds, rm.max_delta_norm};
  }

  // At --resume: the rounds.csv rows the checkpoint owes (its pending rows
  // after the file's last row) are written again, the checkpoint's own round
  // evaluated again when the server evaluates; earlier ones, whose models are
  // gone, without accuracy.
  void RestorePendingRows(const std::vector<Checkpoint::Row>& rows, uint64_t last_row) {
    for (const auto& row : rows) {
      if (row.round <= last_row || row.round > round) continue;
      RoundMetrics rm;
      rm.round = row.round;
      rm.participants = static_cast<int>(row.participants);
      rm.upload_bytes = row.upload_bytes;
      rm.download_bytes = row.download_bytes;
      rm.round_seconds = row.round_seconds;
      rm.max_delta_norm = row.max_delta_norm;
      rm.test_accuracy = rm.test_loss = std::nan("");
      if (row.round == round) rm.epsilon = aggregator->epsilon();
      const bool eval = evaluator && row.round == round;
      if (eval) evaluator->Submit(row.round, global);
      spdlog::warn("rounds.csv has no row for round {}; writing it from the checkpoint{}",
                   row.round, eval ? " once the model is evaluated again" : ", without accuracy");
      unreported.push_back({rm, eval});
    }
  }

  std::string WalPath() const { return store->WalPath(); }

  // Federated pruning (ServerOptions::prune_to): after round r of the
  // schedule, the aggregated model is pruned by magnitude to the schedule's
  // sparsity. Deterministic from the model, so a resumed run prunes alike.
  void TightenMask(uint64_t r) {
    // The schedule reaches its end at round prune_rounds: later rounds keep
    // the mask (pruning to a count rounded down would "tighten" it again).
    if (!(o.prune_to > 0) || r > static_cast<uint64_t>(o.prune_rounds)) return;
    const double target =
        GradualSparsity(prune_from, o.prune_to, static_cast<int>(r), o.prune_rounds);
    if (target <= PrunableSparsity(global) + 1e-9) return;
    const ModelState before = global;
    Status st =
        o.erk ? PruneErk(&global, target) : PruneByMagnitude(&global, target, o.global_pruning);
    if (!st.ok()) {
      spdlog::error("round {}: pruning to {:.1f}% failed, the mask stays: {}", r, 100 * target,
                    st.message());
      global = before;
      return;
    }
    // Which of the previously kept values remain: the strategy's per-value
    // state follows them.
    std::vector<uint8_t> still_kept;
    still_kept.reserve(kept_count);
    for (size_t t = 0; t < before.tensors.size(); ++t) {
      const auto& old_mask = before.tensors[t].mask;
      const auto& new_mask = global.tensors[t].mask;
      for (size_t i = 0; i < before.tensors[t].values.size(); ++i) {
        if (!old_mask.empty() && !old_mask[i]) continue;
        still_kept.push_back(new_mask.empty() || new_mask[i] ? 1 : 0);
      }
    }
    if (std::find(still_kept.begin(), still_kept.end(), 0) == still_kept.end()) {
      global = before;  // nothing pruned: the mask stays as it was
      return;
    }
    aggregator->KeepOnly(still_kept);
    const size_t before_kept = kept_count;
    SetGlobal();
    m.mask_changed = true;
    spdlog::info(
        "round {}: mask tightened to {:.1f}% sparsity ({} -> {} kept values); the next TASK "
        "carries it",
        r, 100 * PrunableSparsity(global), before_kept, kept_count);
  }

  // Stops waiting for selected clients whose TASK could not be sent and that
  // have not come back (a HELLO on a new connection) within client_timeout: a
  // device that died just before selection does not hold the round until the
  // deadline.
  void GiveUpOnVanished() {
    // A round reopened after a crash waits for its devices until the deadline:
    // they need time to notice the server is back.
    if (reopened_round) return;
    const double now = NowSeconds();
    // A relay works on its round for as long as its devices train, in
    // silence like a device; unlike a device's, its loss costs many
    // updates. Once a second it is sent a welcome (which it takes as a
    // heartbeat's answer): the send fails once its connection has closed (a
    // killed relay), and the round stops waiting for it after client_timeout.
    for (auto it = pending.begin(); it != pending.end();) {
      ClientEntry& c = clients[*it];
      if (c.reachable && IsRelay(*it) && now - relay_probed[*it] >= 1.0) {
        relay_probed[*it] = now;
        // (A full queue is a relay busy with its round, not a closed one.)
        if (SendReply(c.peer, true, wire::MessageType::kHello, current_round, "welcome", "")
                .IsNotFound()) {
          spdlog::warn("round {}: relay {} closed its connection", current_round, *it);
          MarkUnreachable(&c);
        }
      }
      if (!c.reachable && now - c.unreachable_since > o.client_timeout_seconds) {
        spdlog::warn(
            "round {}: {} did not reconnect within {:.0f} s of losing its connection; not "
            "waiting for it",
            current_round, *it, o.client_timeout_seconds);
        const std::string id = *it++;
        EndTurn(id);
      } else {
        ++it;
      }
    }
  }

  // A send to the client's connection failed: it is gone until the client
  // speaks again (a HELLO on a new connection).
  static void MarkUnreachable(ClientEntry* c) {
    c->reachable = false;
    c->unreachable_since = NowSeconds();
  }

  // Refuses the UPDATE of a selected, pending client and closes its turn.
  void RefuseAnswer(const std::string& peer, const std::string& who, uint64_t r,
                    const std::string& reason, const std::string& message) {
    EndTurn(who);
    Refuse(peer, who, wire::MessageType::kUpdate, r, reason, message);
  }

  // Receives and handles messages until `until` (a NowSeconds() time) or `*stop`.
  // Returns early when `done_when` says so.
  Status Pump(double until, const std::atomic<bool>* stop, const std::function<bool()>& done_when) {
    std::vector<bool> ready;
    while (!(stop && stop->load()) && !(done_when && done_when())) {
      if (o.reload_enrollment && o.reload_enrollment->exchange(false)) {
        Status st = LoadEnrollment();
        if (!st.ok()) spdlog::error("reloading enrollment: {}", st.ToString());
      }
      const double left = until - NowSeconds();
      if (left <= 0) break;
      // Freed task slots are handed out before the wait for messages (the
      // devices they go to are what the server would wait for).
      if (async_tasks && collecting) AsyncTick();
      // While ACKs wait for the log's sync, look again within a millisecond.
      const double wait = unsynced_acks.empty() ? std::min(left, 0.2) : 0.0;
      auto r = ctx->Poll({sock.get()}, static_cast<int>(wait * 1000) + 1, &ready);
      if (!r.ok()) return r.status();
      // Handle what is waiting, bounded so the deadline is still checked.
      FL_RETURN_IF_ERROR(Drain(256));
      FL_RETURN_IF_ERROR(CommitAcks(/*wait=*/false));
      GrantTransfers();  // grants that lapsed make room
      // Handshakes the ZAP thread refused since the last look.
      if (const int64_t denied = admission->denied.exchange(0)) {
        m.rejected["transport_denied"] += denied;
        totals_rejected["transport_denied"] += denied;
      }
      if (const int64_t refused = sock->TakeRefusedConnections()) {
        m.rejected["connection_cap"] += refused;
        const int64_t total = totals_rejected["connection_cap"] += refused;
        // Logged at 1, 2, 4, 8, ... refusals: a flood stays readable.
        if (total >= next_cap_log) {
          spdlog::warn("refused {} connection(s) at the cap of {} (--max-connections); {} so far",
                       refused, connection_cap, total);
          while (next_cap_log <= total) next_cap_log *= 2;
        }
      }
      PublishMetrics();
      FL_RETURN_IF_ERROR(Report(/*wait=*/false));
    }
    return Status::OK();
  }

  // --metrics-port: what changes between rounds, once a second (the round's
  // own numbers go in as each round is reported).
  double metrics_published{-1e18};
  void PublishMetrics() {
    if (!o.metrics || NowSeconds() - metrics_published < 1.0) return;
    metrics_published = NowSeconds();
    o.metrics->SetClients(ActiveClients(nullptr), static_cast<int64_t>(clients.size()));
    o.metrics->SetRefused(totals_rejected);
    o.metrics->SetModelVersion(ToHex(version));
  }

  // Handles up to `max` messages already waiting in the socket, without
  // waiting for more: in batches of up to kIngestBatch, each prepared
  // (authenticated, and an UPDATE checked and decoded) on the ingest threads
  // at once, then handled one by one in the order received.
  Status Drain(int max) {
    std::vector<Inbound> batch;
    batch.reserve(kIngestBatch);  // never reallocated: a VerifiedMessage points into its frames
    for (int handled = 0; handled < max;) {
      size_t room = std::min<size_t>(kIngestBatch, static_cast<size_t>(max - handled));
      if (async_tasks && collecting) {
        // A step's buffer takes exactly --buffer updates: the next ones wait
        // in the socket for the next step (a message adds at most one).
        if (StepFull()) break;
        room = std::min(room, static_cast<size_t>(o.async.buffer) - wal_entries.size());
      }
      batch.clear();
      while (batch.size() < room) {
        Inbound in;
        const double t0 = NowSeconds();
        auto got = sock->TryReceive(&in.rx);
        if (!got.ok()) return got.status();
        if (!*got) break;
        in.work_seconds = NowSeconds() - t0;
        batch.push_back(std::move(in));
      }
      if (batch.empty()) break;
      ingest_pool->Run(batch.size(), [this, &batch](size_t i, int thread) {
        Prepare(&batch[i], &ingest_scratch[static_cast<size_t>(thread)]);
      });
      for (Inbound& in : batch) {
        Handle(&in);
        if (batch.size() > 1 && ingest_pool->threads() > 1 && in.checked) {
          m.updates_prepared_together++;
        }
      }
      handled += static_cast<int>(batch.size());
    }
    return Status::OK();
  }

  // Writes the rows of completed rounds whose evaluation is done (all of
  // them, waiting for the evaluator, when `wait`), in round order.
  Status Report(bool wait) {
    while (!unreported.empty()) {
      Completed& c = unreported.front();
      if (c.awaiting_eval) {
        std::optional<Evaluation> e = wait ? evaluator->Take() : evaluator->TryTake();
        if (!e) break;
        if (e->round != c.m.round) {
          return Status::Internal("evaluation of round " + std::to_string(e->round) +
                                  " arrived for round " + std::to_string(c.m.round));
        }
        if (!e->status.ok()) {
          spdlog::error("round {}: evaluation failed: {}", e->round, e->status.ToString());
        }
        c.m.test_accuracy = e->accuracy;
        c.m.test_loss = e->mean_loss;
        c.m.eval_seconds = e->seconds;
        c.awaiting_eval = false;
      }
      const RoundMetrics rm = std::move(c.m);
      unreported.pop_front();
      FL_RETURN_IF_ERROR(store->AppendRow(rm));
      if (summary) {
        summary->upload_bytes += rm.upload_bytes;
        summary->download_bytes += rm.download_bytes;
        if (!std::isnan(rm.test_accuracy)) {
          summary->final_accuracy = rm.test_accuracy;
          summary->final_loss = rm.test_loss;
        }
        if (!std::isnan(rm.epsilon)) summary->epsilon = rm.epsilon;
      }
      if (o.verbose) {
        // Transfers that waited for the windows (o.transfer_window_bytes).
        std::string waited = rm.uploads_queued + rm.tasks_queued == 0
                                 ? ""
                                 : fmt::format("; {} TASK(s) and {} upload(s) waited their turn",
                                               rm.tasks_queued, rm.uploads_queued);
        if (rm.clipped > 0) waited += fmt::format("; {} delta(s) clipped", rm.clipped);
        if (async_tasks) {
          waited += fmt::format("; staleness mean {:.2f}, max {}; {} task(s) handed out",
                                rm.mean_staleness, rm.max_staleness, rm.selected);
          if (rm.expired > 0) waited += fmt::format(", {} given up", rm.expired);
        }
        if (!std::isnan(rm.epsilon)) {
          waited += fmt::format("; privacy spent: epsilon {:.3f} at delta {:g} (clip {:.4g})",
                                rm.epsilon, o.privacy.delta, rm.dp_clip);
        }
        if (async_tasks) {
          spdlog::info("step {}: {} updates{}, {:.1f} s{}", rm.round, rm.participants,
                       std::isnan(rm.test_accuracy)
                           ? std::string()
                           : fmt::format(", test accuracy {:.2f}% (+{:.1f} s evaluation)",
                                         100 * rm.test_accuracy, rm.eval_seconds),
                       rm.round_seconds, waited);
        } else if (std::isnan(rm.test_accuracy)) {
          spdlog::info("round {}: {}/{} updates, {:.1f} s{}", rm.round, rm.participants,
                       rm.selected, rm.round_seconds, waited);
        } else {
          spdlog::info(
              "round {}: {}/{} updates, test accuracy {:.2f}%, {:.1f} s (+{:.1f} s "
              "evaluation, overlapping the next round){}",
              rm.round, rm.participants, rm.selected, 100 * rm.test_accuracy, rm.round_seconds,
              rm.eval_seconds, waited);
        }
      }
      if (on_round && *on_round) (*on_round)(rm);
      if (o.metrics) o.metrics->RoundDone(rm);
    }
    return Status::OK();
  }

  // --- asynchronous mode (FedBuff) --------------------------------------------

  bool StepFull() const { return wal_entries.size() >= static_cast<size_t>(o.async.buffer); }

  // Gives up on tasks past the deadline, and hands tasks to idle live
  // devices until `concurrency` are out.
  void AsyncTick() {
    const double now = NowSeconds();
    // Devices that vanished with a task (as in a round), then tasks past the
    // deadline or too stale to count.
    const size_t before = async_tasks->outstanding();
    GiveUpOnVanished();
    m.expired += static_cast<int>(before - async_tasks->outstanding());
    std::set<std::string> given_up;
    for (const auto& x : async_tasks->Expire(now, o.round_deadline_seconds, current_round)) {
      EndTurn(x.id);
      given_up.insert(x.id);
      m.expired++;
      if (m.expired <= kLogPerReason) {
        spdlog::warn("step {}: {} {} its task of step {}; handing the task to another device",
                     current_round, x.id,
                     x.too_stale
                         ? fmt::format("is more than --max-staleness {} steps behind with",
                                       o.async.max_staleness)
                         : fmt::format("did not answer within {:.0f} s", o.round_deadline_seconds),
                     x.task.step);
      }
      // So that it does not upload late (a held-back update is dropped);
      // carrying the task's nonce, so a copy cannot withdraw another task.
      auto it = clients.find(x.id);
      if (it != clients.end() && it->second.reachable) {
        Reply(it->second.peer, false, wire::MessageType::kTask, x.task.step, "not_needed",
              x.too_stale ? "the task is too stale to count"
                          : "the task was given up at the deadline",
              x.task.nonce);
      }
    }
    if (async_tasks->Wanted() == 0) return;
    std::vector<std::string> live;
    ActiveClients(&live);
    // Devices training are silent, not gone: they count toward --min-clients.
    if (PresentDevices(live).size() < static_cast<size_t>(o.min_clients)) return;
    // A device answers once a step: one that is in this step's buffer gets
    // its next task in the next step, so no device can fill a buffer alone.
    std::set<std::string> in_buffer;
    for (const auto& e : wal_entries) in_buffer.insert(e.sender);
    std::vector<std::string> idle;
    for (const auto& id : live) {
      // (A device just given up on is not handed the next task at once.)
      if (!async_tasks->Has(id) && !given_up.count(id) && !in_buffer.count(id)) {
        idle.push_back(id);
      }
    }
    if (idle.empty()) return;
    async_rng->Shuffle(&idle);
    const size_t n = std::min(idle.size(), async_tasks->Wanted());
    for (size_t i = 0; i < n; ++i) {
      const std::string& id = idle[i];
      async_tasks->Issue(id, current_round, RandomNonce(), version, clients[id].num_examples, now);
      pending.insert(id);
      m.selected++;
      OfferTask(id);
    }
  }

  // The `live` devices and those training a task (silent, not gone).
  std::vector<std::string> PresentDevices(const std::vector<std::string>& live) const {
    std::set<std::string> all(live.begin(), live.end());
    for (const auto& id : async_tasks->Ids()) all.insert(id);
    return {all.begin(), all.end()};
  }

  // Bounds of the step's updates: the norm bound, and the weight cap from
  // the examples the present devices registered with (their lower median).
  void SetStepBounds() {
    std::vector<std::string> live;
    ActiveClients(&live);
    const std::vector<std::string> present = PresentDevices(live);
    population = static_cast<uint32_t>(present.size());
    std::vector<int64_t> registered;
    for (const auto& id : present) registered.push_back(clients[id].num_examples);
    SetBounds(std::move(registered));
  }

  // Takes the step the log reopened: its bounds and the updates it had
  // acknowledged (the buffer so far).
  Status ReopenStep() {
    WalContents c = std::move(*resumed_wal);
    resumed_wal.reset();
    weight_cap = c.header.weight_cap;
    norm_bound = c.header.norm_bound;
    population = c.header.population;
    SetStepOffset();
    m.weight_cap = weight_cap;
    m.update_norm_bound = norm_bound;
    FL_RETURN_IF_ERROR(CheckLoggedPartials(c));
    auto w = WalWriter::Reopen(WalPath(), c, /*durable=*/true, wal_key);
    if (!w.ok()) return w.status();
    wal = std::move(w).value();
    for (const auto& e : c.entries) {
      auto rec = wal->Read(e);
      if (!rec.ok()) return rec.status();
      KeepLogged(e, *rec);
    }
    spdlog::warn(
        "step {}: reopened from {}: {} acknowledged update(s) kept in its buffer of {}; tasks "
        "handed out before the restart are void (their devices get new ones){}",
        c.header.round, WalPath(), wal_entries.size(), o.async.buffer,
        c.torn_tail ? " (a torn record at its end, never acknowledged, was dropped)" : "");
    return Status::OK();
  }

  // Server step `r` (asynchronous mode): collect `buffer` updates from the
  // devices training (tasks are handed out as devices free up, across
  // steps), then the shared end of a round.
  Status RunStep(uint64_t r, const std::atomic<bool>* stop, bool* abandoned) {
    m = RoundMetrics();
    m.round = r;
    FL_RETURN_IF_ERROR(LoadEnrollment());
    const double t0 = NowSeconds();
    train_loss_sum = 0;
    wal_entries.clear();
    resent.clear();
    if (resumed_wal && resumed_wal->header.round == r) {
      FL_RETURN_IF_ERROR(ReopenStep());
    } else {
      SetStepBounds();
      WalHeader h{r, {}, version, weight_cap, norm_bound, {}, population};
      auto w = WalWriter::Create(WalPath(), h, /*durable=*/!o.out_dir.empty(), wal_key,
                                 /*with_staleness=*/true, !o.relays_dir.empty());
      if (!w.ok()) return w.status();
      wal = std::move(w).value();
    }
    // The step is open from here: updates that arrive while the server waits
    // for its evaluations join it.
    current_round = r;
    collecting = true;
    last_accept_time = t0;
    first_update_time = 0;
    for (auto& frames : task_frames) frames.clear();  // the model changed
    double next_log = NowSeconds() + 10;
    FL_RETURN_IF_ERROR(Pump(std::numeric_limits<double>::infinity(), stop, [&] {
      if (NowSeconds() >= next_log) {
        spdlog::info("step {}: {} of {} updates in; {} task(s) out, {} device(s) live", r,
                     wal_entries.size(), o.async.buffer, async_tasks->outstanding(),
                     ActiveClients(nullptr));
        next_log = NowSeconds() + 10;
      }
      return StepFull();
    }));
    m.upload_window_peak_bytes = uploads->peak_granted_bytes();
    m.uploads_queued = uploads->queued();
    m.tasks_queued = task_sends->queued();
    uploads->ResetStats();
    task_sends->ResetStats();
    if (stop && stop->load()) {
      collecting = false;
      spdlog::warn("step {} abandoned on signal; the checkpoint of step {} stays", r, round);
      *abandoned = true;
      return Status::OK();
    }
    m.collect_seconds = last_accept_time - t0;
    if (m.participants >= 2) m.ingest_seconds = last_accept_time - first_update_time;
    double staleness_sum = 0;
    for (const auto& e : wal_entries) {
      staleness_sum += e.staleness;
      m.max_staleness = std::max(m.max_staleness, e.staleness);
    }
    if (!wal_entries.empty()) {
      m.mean_staleness = staleness_sum / static_cast<double>(wal_entries.size());
    }
    // Tasks stay out across the step; the next step's TASKs carry the new model.
    return FinishRound(r, t0);
  }

  // Devices told about already: too old for FedProx's mu.
  std::set<std::string> trains_without_mu;

  // Enrollment files already reported as unusable.
  std::set<std::string> skipped;
  // The enrolled relays' node ids (--relays), and when each was last probed
  // during a round (GiveUpOnVanished).
  std::set<std::string> relay_ids;
  std::map<std::string, double> relay_probed;
  // An enrollment folder of devices (--clients) or of relays (--relays DIR).
  bool Enrolling() const {
    return !o.clients_dir.empty() || (!o.relays_dir.empty() && o.relays_dir != "any");
  }
  // True when `id`'s updates may be relays' partial aggregates.
  bool IsRelay(const std::string& id) const {
    if (o.relays_dir != "any") return relay_ids.count(id) > 0;
    if (!o.insecure) return false;
    // One that sent a partial, or whose HELLO says how many devices it
    // serves. (Under --relays any a participant may send partials anyway:
    // the claim grants nothing a partial would not.)
    const auto it = clients.find(id);
    return partial_senders.count(id) > 0 || (it != clients.end() && it->second.devices >= 0);
  }
  // May `id` send partial aggregates at all.
  bool MaySendPartials(const std::string& id) const {
    return (o.relays_dir == "any" && o.insecure) || relay_ids.count(id) > 0;
  }
  // Relay mode, under the root's central privacy (the parent's TASK carried
  // wire::TrainConfig::dp_sampling_rate): this round's sampling rate and clip
  // (0: not private), the aggregator of the round (the sum of clipped
  // deltas, PrivacyOptions::relay) and the relay's own, kept meanwhile.
  double relay_dp_rate{0};
  double relay_dp_clip{0};
  std::unique_ptr<Aggregator> relay_own_aggregator;
  // Relay mode: the round's exact sum (Aggregator::FinishSum), handed up as
  // it is (in a private round, of the devices' clipped deltas).
  FixedSum relay_sum;
  bool warned_relay_private_rule{false};
  // The round samples devices (Poisson) and clips their deltas for central
  // privacy: the root's own (--dp-noise-multiplier), or, on a relay, its
  // root's; and the rate it samples them at.
  bool PrivateRounds() const { return o.privacy.enabled() || relay_dp_rate > 0; }
  double SamplingRate() const { return o.privacy.enabled() ? o.fraction : relay_dp_rate; }
  // A participant's share of a private round's population: a relay's the
  // devices it says it serves (at most --relay-devices), a device's 1.
  int64_t PopulationOf(const std::string& id) const {
    if (!IsRelay(id)) return 1;
    const auto it = clients.find(id);
    const int64_t claim = it == clients.end() ? 0 : it->second.devices;
    return std::clamp<int64_t>(claim, 0, o.relay_devices);
  }
  // Relay mode: the root's endorsement of the open round's model, handed to
  // the devices; until when the round waits for devices to be live, and
  // when it must be done.
  std::string relay_endorsement;
  double relay_until{std::numeric_limits<double>::infinity()};
  double relay_end{std::numeric_limits<double>::infinity()};
  // Participants that sent a partial aggregate (with --relays any, what
  // makes one a relay).
  std::set<std::string> partial_senders;

  // Re-reads the enrollment folder: every *.pub file is a device. A file that
  // does not parse is logged and skipped; the others stay enrolled.
  Status LoadEnrollment() {
    if (!Enrolling()) return Status::OK();
    std::map<std::string, EnrolledDevice> keys;
    if (!o.clients_dir.empty()) {
      auto read = ReadEnrollment(o.clients_dir, /*with_curve=*/!o.insecure, &skipped);
      if (!read.ok()) return read.status();
      keys = std::move(read).value();
    }
    if (!o.relays_dir.empty() && o.relays_dir != "any") {
      // Relays are admitted like devices; their updates may be partials.
      auto relays = ReadEnrollment(o.relays_dir, /*with_curve=*/!o.insecure, &skipped);
      if (!relays.ok()) return relays.status();
      std::set<std::string> ids;
      for (auto& [id, relay] : *relays) {
        ids.insert(id);
        keys.insert_or_assign(id, std::move(relay));
      }
      if (ids != relay_ids && o.verbose) {
        spdlog::info("enrollment: {} relay(s) in {}", ids.size(), o.relays_dir);
      }
      relay_ids = std::move(ids);
    }
    std::set<std::string> curve_keys;
    for (const auto& [id, device] : keys) {
      if (device.curve) curve_keys.insert(KeyBytes(*device.curve));
    }
    {
      std::lock_guard<std::mutex> lock(admission->mu);
      admission->keys = std::move(curve_keys);
    }
    if (keys.size() != enrolled.size() && o.verbose && !o.clients_dir.empty()) {
      spdlog::info("enrollment: {} device(s) in {}", keys.size() - relay_ids.size(), o.clients_dir);
    }
    // A device removed from the folder is forgotten at once.
    for (auto it = clients.begin(); it != clients.end();) {
      if (keys.count(it->first)) {
        ++it;
        continue;
      }
      EndTurn(it->first);  // its round or task is over: nothing from it is accepted now
      it = clients.erase(it);
    }
    enrolled = std::move(keys);
    return Status::OK();
  }

  Status RunRound(uint64_t r, const std::atomic<bool>* stop, bool* abandoned) {
    m = RoundMetrics();
    m.round = r;
    FL_RETURN_IF_ERROR(LoadEnrollment());
    // 0. Evaluations may run behind the rounds, but only a little: each waiting
    // one holds a copy of a global model. The server answers while it waits.
    while (evaluator && evaluator->outstanding() > kMaxEvaluationsQueued) {
      if (stop && stop->load()) {
        *abandoned = true;
        return Status::OK();
      }
      FL_RETURN_IF_ERROR(Pump(NowSeconds() + 0.05, stop, nullptr));
    }
    // 1. Wait for enough live clients. Whatever is queued in the socket is read
    // first (here and at every check): a client that reconnected is then known
    // by its new connection, not by the one it dropped.
    FL_RETURN_IF_ERROR(Drain(kDrainBeforeSelection));
    double next_log = NowSeconds();
    // (A round reopened from its log with every device answered needs nobody.)
    const bool nothing_owed = resumed_wal && resumed_wal->header.round == r &&
                              resumed_wal->entries.size() >= resumed_wal->header.selected.size();
    while (!nothing_owed && LiveForMinimum() < o.min_clients) {
      if (stop && stop->load()) {
        *abandoned = true;
        return Status::OK();
      }
      if (NowSeconds() >= relay_until) {
        spdlog::warn(
            "round {}: {} of {} devices live halfway to the parent's deadline; running with them",
            r, LiveForMinimum(), o.min_clients);
        break;
      }
      if (NowSeconds() >= next_log) {
        spdlog::info("round {}: waiting for clients ({} of {} live{})", r, LiveForMinimum(),
                     o.min_clients,
                     PrivateRounds() && !o.relays_dir.empty() ? ", relays' devices counted" : "");
        next_log = NowSeconds() + 5;
      }
      FL_RETURN_IF_ERROR(Pump(NowSeconds() + 0.5, stop, nullptr));
      FL_RETURN_IF_ERROR(Drain(kDrainBeforeSelection));
    }
    // 2. Select (or take the selection of the round the log reopened).
    const double t0 = NowSeconds();
    std::vector<std::string> active;
    ActiveClients(&active);  // sorted by id (std::map order)
    const int live = static_cast<int>(active.size());
    const bool reopened = resumed_wal && resumed_wal->header.round == r;
    train_loss_sum = 0;
    wal_entries.clear();
    if (reopened) {
      FL_RETURN_IF_ERROR(ReopenRound());
      active.assign(pending.begin(), pending.end());
      // Its target as the selection had it (over-selection), from the
      // population the log recorded; else every device it selected.
      round_target = selected.size();
      if (o.over_selection > 1 && !o.privacy.enabled()) {
        round_target = std::min<size_t>(
            selected.size(),
            static_cast<size_t>(std::max(1L, std::lround(o.fraction * population))));
      }
    } else {
      Random rng(o.seed * 0x9E3779B97F4A7C15ULL + r);
      int64_t members = live;
      if (PrivateRounds()) {
        // Poisson sampling, as the privacy accountant assumes: each live
        // device independently with probability C (possibly none at all),
        // from a generator only the server can predict (its key), since the
        // amplification by sampling assumes nobody knows who was sampled.
        // Relays are not sampled: each samples its own devices at that rate
        // (docs/relays.md), and the population counts their devices.
        rng = Random(SecretSeed("sample", r));
        std::vector<std::string> sampled;
        members = 0;
        for (const auto& id : active) {
          members += PopulationOf(id);
          if (IsRelay(id) || rng.UniformDouble() < SamplingRate()) sampled.push_back(id);
        }
        active = std::move(sampled);
      } else {
        const int target = std::max(1, static_cast<int>(std::lround(o.fraction * active.size())));
        int want = static_cast<int>(std::ceil(o.over_selection * target - 1e-9));
        want = std::min(want, HeldUpdateCap(want));
        rng.Shuffle(&active);
        active.resize(std::min<size_t>(active.size(), want));
        round_target = std::min<size_t>(active.size(), target);
      }
      population = static_cast<uint32_t>(std::min<int64_t>(members, UINT32_MAX));
      if (o.privacy.enabled() && o.fraction * members < 20 && !warned_few_participants) {
        warned_few_participants = true;
        spdlog::warn(
            "differential privacy with {:.1f} expected participants a round ({} live devices x "
            "--fraction {}): the noise on the average has standard deviation {:.3g} x the clip "
            "per value and will swamp the updates; DP-FedAvg needs many devices a round "
            "(hundreds or more)",
            o.fraction * members, members, o.fraction,
            o.privacy.noise_multiplier / std::max(o.fraction * members, 1e-9));
      }
      selected = std::set<std::string>(active.begin(), active.end());
      if (PrivateRounds()) round_target = selected.size();
      pending = selected;
      m.selected = static_cast<int>(selected.size());
      SetRoundBounds();
      round_nonce = RandomNonce();
      WalHeader h{r,         round_nonce, version, weight_cap, norm_bound, registered_at_selection,
                  population};
      auto w = WalWriter::Create(WalPath(), h, /*durable=*/!o.out_dir.empty(), wal_key,
                                 /*with_staleness=*/false, !o.relays_dir.empty());
      if (!w.ok()) return w.status();
      wal = std::move(w).value();
    }
    resent.clear();
    uploads->Clear();
    task_sends->Clear();
    // 3. One TASK (per kind of client), encoded and hashed once, sent to every
    // selected client.
    current_round = r;
    collecting = true;
    last_accept_time = t0;
    first_update_time = 0;
    for (const auto& id : active) OfferTask(id);
    if (o.verbose) {
      spdlog::info("round {}: selected {} of {} live clients, model {}", r, m.selected, live,
                   ShortVersion(version));
    }
    // 4. Collect.
    const double deadline = std::min(t0 + o.round_deadline_seconds, relay_end);
    FL_RETURN_IF_ERROR(Pump(deadline, stop, [&] {
      GiveUpOnVanished();
      return pending.empty() || wal_entries.size() >= round_target;
    }));
    // Over-selection: the round has its updates; the devices still training
    // are told their work is not needed, so they do not upload it.
    const bool closed_early = !pending.empty() && wal_entries.size() >= round_target;
    if (closed_early) {
      for (const auto& id : pending) {
        const auto it = clients.find(id);
        if (it == clients.end() || !it->second.reachable) continue;
        Reply(it->second.peer, false, wire::MessageType::kTask, r, "not_needed",
              "the round has the updates it needed; this task is withdrawn", round_nonce);
      }
      if (o.verbose) {
        spdlog::info("round {}: {} updates in; {} selected devices told their work is not needed",
                     r, wal_entries.size(), pending.size());
      }
      m.withdrawn = static_cast<int>(pending.size());
      pending.clear();
    }
    collecting = false;
    reopened_round = false;
    for (auto& frames : task_frames) frames.clear();  // sends in flight hold their own references
    m.upload_window_peak_bytes = uploads->peak_granted_bytes();
    m.uploads_queued = uploads->queued();
    m.tasks_queued = task_sends->queued();
    uploads->Clear();
    task_sends->Clear();
    if (stop && stop->load()) {
      spdlog::warn("round {} abandoned on signal; the checkpoint of round {} stays", r, round);
      *abandoned = true;
      return Status::OK();
    }
    m.collect_seconds = (pending.empty() ? last_accept_time : NowSeconds()) - t0;
    if (m.participants >= 2) m.ingest_seconds = last_accept_time - first_update_time;
    for (const auto& id : pending) {
      spdlog::warn("round {}: {} missed the {:.0f} s deadline", r, id, o.round_deadline_seconds);
      clients[id].last_seen = -1e18;
    }
    // 5. Aggregate (from the log, in sender order), persist, evaluate in the
    // background.
    return FinishRound(r, t0);
  }

  // --- relay mode (server/relay_link.h) ---------------------------------------

  // Rounds as the parent hands them over, until it ends the federation or
  // `*stop`; the server answers its devices meanwhile. `*abandoned` when
  // stopped.
  Status RelayRounds(const std::atomic<bool>* stop, bool* abandoned) {
    RelayLink& link = *o.parent;
    double published = -1e18;
    const auto publish = [&] {
      // The relay's claim to its parent: what its live devices registered
      // with. Its HELLOs read it every heartbeat: once a second is plenty,
      // and spares the receive loop a pass over every device.
      const double now = NowSeconds();
      if (now - published < 1.0) return;
      published = now;
      int64_t sum = 0, devices = 0;
      for (const auto& [id, c] : clients) {
        if (c.reachable && now - c.last_seen <= o.client_timeout_seconds) {
          sum += std::min(c.num_examples, o.max_examples);  // (as the relay counts them)
          sum = std::min<int64_t>(sum, int64_t{1} << 60);
          devices += PopulationOf(id);
        }
      }
      link.SetRegistered(std::max<int64_t>(1, sum));
      link.SetDevices(static_cast<uint32_t>(std::min<int64_t>(devices, UINT32_MAX)));
    };
    for (;;) {
      FL_RETURN_IF_ERROR(Pump(std::numeric_limits<double>::infinity(), stop, [&] {
        publish();
        return link.Ready();
      }));
      if (stop && stop->load()) {
        *abandoned = true;
        return Status::OK();
      }
      std::optional<RelayTask> task = link.TakeTask();
      if (!task) {
        if (!link.finished()) continue;  // (the session gave up on it meanwhile)
        if (link.parent_done()) return Status::OK();
        // The devices are not told the federation is over: it is not.
        return Status::Unavailable("relay: " + link.finish_reason());
      }
      const uint64_t r = task->round;
      if (r < round) {
        // A parent restarted without its checkpoint numbers its rounds anew.
        spdlog::warn("round {} from the parent, after this relay's round {}: was it restarted?", r,
                     round);
      }
      const wire::TrainConfig& tc = task->config;
      if (!tc.trainable.empty() && tc.trainable.size() != task->parameters.tensors.size()) {
        link.Deliver(r, Status::InvalidArgument("the parent's trainable list names " +
                                                std::to_string(tc.trainable.size()) +
                                                " tensors; the model has " +
                                                std::to_string(task->parameters.tensors.size())));
        continue;
      }
      // The parent's model and hyperparameters (its seed too) become this
      // round's. The relay answers within 80% of the parent's deadline,
      // leaving the rest for its own upload.
      global = std::move(task->parameters);
      trainable = tc.trainable;
      o.train = tc;
      FL_RETURN_IF_ERROR(TakePrivacyOf(r, &o.train));
      o.round_deadline_seconds = std::max(0.5, 0.8 * tc.deadline_seconds);
      // Devices that are not live by half of it would not have time to train.
      relay_until = NowSeconds() + 0.5 * o.round_deadline_seconds;
      relay_end = NowSeconds() + o.round_deadline_seconds;
      // The model goes down as it came (its encoding, so its version, is the
      // root's), with the root's endorsement of it when that version matches.
      o.downlink = task->format;
      SetGlobal();
      relay_endorsement.clear();
      if (auto root = wire::DecodeEnvelope(task->root_endorsement);
          root.ok() &&
          ((root->model_version == version && root->round == r) || task->debug_endorse_anyway)) {
        relay_endorsement = std::move(task->root_endorsement);
      } else if (!task->root_endorsement.empty()) {
        spdlog::warn(
            "round {}: the model is not the one the root signed (version {}); devices that "
            "check the root's signature (--root-key) will refuse it",
            r, ShortVersion(version));
      }
      if (round == 0) reference_norm = KeptNorm(SelectTensors(global, trainable));
      bool stopped = false;
      Status st = RunRound(r, stop, &stopped);
      relay_until = relay_end = std::numeric_limits<double>::infinity();
      if (!st.ok()) {
        link.Deliver(r, st);
        return st;
      }
      if (stopped) {
        link.Deliver(r, Status::Unavailable("the relay is stopping"));
        *abandoned = true;
        return Status::OK();
      }
      RelayResult res;
      res.round = r;
      for (const auto& e : wal_entries) {
        res.contributors += e.contributors;  // (the devices of relays below it too)
      }
      // The exact sum and its weight (its partials' weights as the round
      // capped them, CapPartials; in a private round one per device).
      FixedSum sum = std::exchange(relay_sum, FixedSum());
      if (!wal_entries.empty()) res.sum = std::move(sum);
      res.weight = res.sum.weight;
      if (PrivateRounds()) {
        // How many were within the clip (the parent's adaptive clipping
        // counts them).
        res.within_clip = std::max<int64_t>(0, res.contributors - m.clipped);
      }
      res.train_loss = m.mean_train_loss;
      if (!m.committed) {
        link.Deliver(
            r, Status::Unavailable("round " + std::to_string(r) + ": the step was not committed"));
        continue;
      }
      // No device answered: the relay says so at once (an empty partial, no
      // weight), so that its parent does not wait for it until the deadline.
      link.Deliver(r, std::move(res));
    }
  }

  // Relay mode: takes the parent's privacy out of `*train` (the round's
  // configuration, which goes on to the devices): under it, the round
  // Poisson-samples the devices and hands up the mean of their clipped
  // deltas, each weighing one, instead of running the relay's own rule; the
  // root adds the noise (docs/relays.md, "Central differential privacy").
  Status TakePrivacyOf(uint64_t r, wire::TrainConfig* train) {
    const double rate = train->dp_sampling_rate, clip = train->dp_clip;
    train->dp_sampling_rate = train->dp_clip = 0;
    if (!(rate > 0)) {
      relay_dp_rate = relay_dp_clip = 0;
      if (relay_own_aggregator) aggregator = std::move(relay_own_aggregator);
      return Status::OK();
    }
    if (rate == relay_dp_rate && clip == relay_dp_clip && relay_own_aggregator) {
      return Status::OK();
    }
    PrivacyOptions share;
    share.relay = true;
    share.clip = clip;
    auto agg = MakeAggregator(StrategyOptions{}, share);
    if (!agg.ok()) return agg.status();
    if (!relay_own_aggregator) relay_own_aggregator = std::move(aggregator);
    aggregator = std::move(agg).value();
    if (relay_dp_rate == 0 && o.verbose) {
      spdlog::info(
          "round {}: the root's rounds are private: devices Poisson-sampled at rate {}, each "
          "delta clipped to {:.4g} and weighing one",
          r, rate, clip);
    }
    relay_dp_rate = rate;
    relay_dp_clip = clip;
    if (o.strategy.name != "fedavg" && !warned_relay_private_rule) {
      warned_relay_private_rule = true;
      spdlog::warn(
          "round {}: the root's rounds are private (central DP): this relay hands up the mean of "
          "its devices' clipped deltas, which the root's noise is calibrated to; --strategy {} is "
          "not applied in private rounds",
          r, o.strategy.name);
    }
    return Status::OK();
  }

  // The end of round (or step) `r`, begun at `t0`: its logged updates become
  // the next global model, the checkpoint commits it, the evaluator gets it.
  Status FinishRound(uint64_t r, double t0) {
    FL_RETURN_IF_ERROR(CommitAcks(/*wait=*/true));
    if (!wal_entries.empty() || o.privacy.enabled()) {
      // (A private round releases its noise even when nobody answered.)
      FL_RETURN_IF_ERROR(AggregateFromLog());
      if (!wal_entries.empty()) {
        m.mean_train_loss = train_loss_sum / static_cast<double>(wal_entries.size());
      }
    } else {
      spdlog::warn("round {}: no update accepted; the global model is unchanged", r);
    }
    TightenMask(r);
    m.sparsity = PrunableSparsity(global);
    round = r;
    wal.reset();
    if (store->writes()) {
      // The checkpoint is the round's commit point: once it is written the
      // log is spent, and global.flm is derived from it (rewritten on resume).
      m.round_seconds = NowSeconds() - t0;
      Checkpoint c{round,
                   o.seed,
                   global,
                   reference_norm,
                   {},
                   aggregator->name(),
                   aggregator->SaveState(),
                   pruning_schedule};
      c.settings = RunSettingsOf(o, normalization, class_names);
      for (const auto& u : unreported) c.pending_rows.push_back(RowOf(u.m));
      c.pending_rows.push_back(RowOf(m));
      FL_RETURN_IF_ERROR(store->Commit(c, [this, r](const char* step) { MaybeCrash(step, r); }));
    }
    m.round_seconds = NowSeconds() - t0;
    m.test_accuracy = m.test_loss = std::nan("");
    bool eval =
        evaluator && ((r % std::max(1, o.eval_every) == 0) || r == static_cast<uint64_t>(o.rounds));
    if (eval && async_tasks && r != static_cast<uint64_t>(o.rounds) &&
        evaluator->outstanding() > kMaxEvaluationsQueued) {
      // Steps come faster than evaluations: this one goes without (its row
      // has no accuracy) rather than queue another copy of the model.
      eval = false;
      if (!warned_eval_skipped) {
        warned_eval_skipped = true;
        spdlog::warn(
            "step {}: steps come faster than the evaluation; steps whose model would queue "
            "behind {} others are not evaluated (raise --eval-every or --buffer)",
            r, kMaxEvaluationsQueued);
      }
    }
    if (eval) evaluator->Submit(r, global);
    unreported.push_back({m, eval});
    return Report(/*wait=*/false);
  }
};

Server::Server(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Server::~Server() = default;

Result<std::unique_ptr<Server>> Server::Create(ServerOptions options,
                                               std::shared_ptr<transport::Context> context,
                                               const ModelRuntime& runtime) {
  auto impl = std::make_unique<Impl>();
  impl->o = std::move(options);
  impl->registry.Configure(impl->o.max_clients, impl->o.client_timeout_seconds);
  impl->uploads =
      std::make_unique<TransferWindow>(impl->o.transfer_window_bytes, kTransferHoldSeconds);
  impl->task_sends =
      std::make_unique<TransferWindow>(impl->o.transfer_window_bytes, kTransferHoldSeconds);
  impl->ctx = std::move(context);
  const ServerOptions& o = impl->o;
  if (o.rounds < 1) return Status::InvalidArgument("rounds must be >= 1");
  if (o.min_clients < 1) return Status::InvalidArgument("min_clients must be >= 1");
  if (!(o.fraction > 0 && o.fraction <= 1)) {
    return Status::InvalidArgument("fraction must be in (0, 1], got " + std::to_string(o.fraction));
  }
  if (!(o.round_deadline_seconds > 0)) return Status::InvalidArgument("round deadline must be > 0");
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
  if (o.parent) {
    // A relay hands its parent the exact weighted sum of its devices' deltas
    // (or a robust rule's aggregate of them, as a sum); server optimizers, privacy, pruning
    // and asynchronous rounds belong to the root, which applies them to the
    // relays' partials (docs/relays.md).
    const std::string& name = o.strategy.name;
    if (name != "fedavg" && name != "median" && name != "trimmed_mean" && name != "krum" &&
        name != "multikrum") {
      return Status::InvalidArgument(
          "a relay (--parent) aggregates with fedavg, median, trimmed_mean, krum or multikrum; "
          "--strategy " +
          name + " belongs on the root");
    }
    if (o.strategy.server_lr != 0 && o.strategy.server_lr != 1) {
      return Status::InvalidArgument(
          "a relay (--parent) hands up its devices' mean; --server-lr belongs on the root");
    }
    if (o.privacy.enabled() || o.mode != "sync" || o.prune_to > 0 || o.resume ||
        o.over_selection > 1) {
      return Status::InvalidArgument(
          "a relay (--parent) takes its rounds from the parent: --dp-*, --mode async, "
          "--prune-to, --over-selection and --resume belong on the root");
    }
  }
  if (!(o.over_selection >= 1 && o.over_selection <= 10)) {
    return Status::InvalidArgument("--over-selection must be in [1, 10]");
  }
  if (o.over_selection > 1 && o.privacy.enabled()) {
    return Status::InvalidArgument("--over-selection",
                                   "cannot be combined with privacy: the accountant assumes each "
                                   "sampled device's update is used (Poisson sampling)");
  }
  if (o.mode != "sync" && o.mode != "async") {
    return Status::InvalidArgument("--mode", "must be sync or async, got '" + o.mode + "'");
  }
  if (o.mode == "async") {
    const AsyncOptions& a = o.async;
    if (!(a.concurrency >= 1 && a.concurrency <= 100000)) {
      return Status::InvalidArgument("--concurrency", "must be in [1, 100000]");
    }
    if (!(a.buffer >= 1 && a.buffer <= 100000)) {
      return Status::InvalidArgument("--buffer", "must be in [1, 100000]");
    }
    if (!(a.staleness_exponent >= 0 && a.staleness_exponent <= 10)) {
      return Status::InvalidArgument("--staleness-exponent", "must be in [0, 10]");
    }
    if (!(a.max_staleness >= 0 && a.max_staleness <= 1000000)) {
      return Status::InvalidArgument("--max-staleness", "must be in [0, 1000000]");
    }
    if (o.privacy.enabled()) {
      return Status::InvalidArgument(
          "--mode async",
          "cannot be combined with privacy: the accountant assumes each round "
          "Poisson-samples the devices whose updates it uses");
    }
    if (o.prune_to > 0) {
      return Status::InvalidArgument(
          "--mode async",
          "cannot be combined with federated pruning (--prune-to): a mask that "
          "tightens would void the deltas of every task out on devices");
    }
    if (o.over_selection > 1) {
      return Status::InvalidArgument(
          "--over-selection",
          "is for synchronous rounds; asynchronous mode never waits for a "
          "round's slowest device");
    }
    if (const int need = RobustMinimum(o.strategy); need > a.buffer) {
      return Status::InvalidArgument(
          "--buffer", "--strategy " + o.strategy.name + " needs at least " + std::to_string(need) +
                          " updates a step; --buffer is " + std::to_string(a.buffer));
    }
  }
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
  {
    auto agg = MakeAggregator(o.strategy, o.privacy, o.fraction);
    if (!agg.ok()) return agg.status();
    impl->aggregator = std::move(agg).value();
  }
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
    c.proximal_mu = impl->aggregator->proximal_mu();
    FL_RETURN_IF_ERROR(wire::CheckTrainConfig(c));
  }
  if (!o.model_signer.empty() && o.model_file.empty()) {
    // Nothing would be checked: say so rather than run unverified.
    return Status::InvalidArgument(
        "--model-signer checks a model file (.flm); --model " + o.model +
        " is not one (a TorchScript file is not signature-checked yet: give the server only "
        "files you trust)");
  }
  // A model file is read once: it names the architecture when `model` is empty
  // and is the starting point unless a checkpoint is resumed.
  std::optional<ModelState> from_file;
  ModelFileMeta file_meta;  // its normalisation and class names, when recorded
  if (!o.model_file.empty()) {
    std::optional<Ed25519PublicKey> trusted;
    if (!o.model_signer.empty()) {
      auto pub = LoadPublicIdentity(o.model_signer);
      if (!pub.ok()) return pub.status();
      trusted = pub->signing;
    }
    auto file = ReadModelFile(o.model_file, trusted ? &*trusted : nullptr, &file_meta);
    if (!file.ok()) return file.status();
    from_file = std::move(file).value();
    if (impl->o.model.empty()) impl->o.model = from_file->architecture;
    impl->prune_from = PrunableSparsity(*from_file);
  }
  if (o.model.empty()) return Status::InvalidArgument("no model architecture given");
  if (!runtime.initial_model) {
    return Status::InvalidArgument("the server was given no model runtime");
  }
  auto initial = runtime.initial_model(o.model, o.seed);
  if (!initial.ok()) return initial.status();
  impl->global = std::move(initial).value();
  bool resumed = false;
  uint64_t last_row = 0;  // of rounds.csv, when resuming
  std::vector<Checkpoint::Row> owed_rows;

  // The server's identity first: it signs checkpoints, and a server with a key
  // resumes only from checkpoints it signed.
  std::optional<CurveKeyPair> curve;  // the transport's keys (not kept: the socket has them)
  if (!o.key_path.empty()) {
    auto id = o.insecure ? LoadIdentity(o.key_path) : LoadIdentityWithCurve(o.key_path);
    if (!id.ok()) return id.status();
    impl->signer = std::make_unique<SigningKey>(std::move(id->signing));
    impl->wal_key = WalKeyFor(impl->signer.get());
    curve = id->curve;
    spdlog::info("signing with key {} (node id {})", o.key_path,
                 NodeId(impl->signer->public_key()));
  }
  if (impl->signer && o.model.size() > 3 && o.model.compare(o.model.size() - 3, 3, ".pt") == 0) {
    auto code = ReadFile(o.model);
    if (!code.ok()) return code.status();
    impl->model_code = std::move(code).value();
    impl->model_code_signature = SignModelCode(impl->model_code, *impl->signer);
  }
  // The evaluation data, the normalisation and the classes, before --resume
  // compares the run's settings (they are part of them). The classes: a model
  // file's (its model was trained with them), else --classes (which may list
  // classes the test data lacks), else the test data's.
  std::vector<std::string> classes = file_meta.class_names;
  if (!o.class_names.empty()) {
    std::vector<std::string> given;
    for (std::string name : SplitList(o.class_names, ',')) {
      const size_t first = name.find_first_not_of(' ');
      name = first == std::string::npos
                 ? ""
                 : name.substr(first, name.find_last_not_of(' ') + 1 - first);
      given.push_back(std::move(name));
    }
    if (!classes.empty() && given != classes) {
      return Status::InvalidArgument("--classes " + o.class_names,
                                     "differs from the classes " + o.model_file +
                                         " records; its model was trained with "
                                         "those: leave --classes out");
    }
    classes = std::move(given);
  }
  if (!o.data.path.empty()) {
    if (!runtime.make_evaluator) {
      return Status::InvalidArgument(
          "this server cannot evaluate (no evaluator); run without a "
          "test set (--no-eval)");
    }
    auto splits = LoadData(o.data, /*need_train=*/false, /*need_test=*/true);
    if (!splits.ok()) return splits.status().WithContext("server test set");
    spdlog::info("test set {}: {}", o.data.test_path.empty() ? o.data.path : o.data.test_path,
                 DescribeData(*splits));
    // A model file's normalisation and classes are what its model was
    // trained with: the evaluation (and the devices) use them, unless
    // --normalize says otherwise.
    const bool auto_norm = o.data.normalize.empty() || o.data.normalize == "auto";
    if (!file_meta.normalization.empty() && auto_norm) {
      FL_RETURN_IF_ERROR(CheckNormalization(splits->test, file_meta.normalization,
                                            o.model_file + " (its normalisation)"));
      splits->test.normalization = file_meta.normalization;
      spdlog::info("normalising as {} records: {}", o.model_file,
                   file_meta.normalization.ToString());
    }
    if (!classes.empty()) {
      FL_RETURN_IF_ERROR(UseClassNames(&splits->test, classes,
                                       "the test data (" +
                                           (o.class_names.empty() ? o.model_file : "--classes") +
                                           " names the federation's classes)"));
    }
    impl->normalization = splits->test.normalization;
    impl->class_names = splits->test.class_names;
    auto evaluator = runtime.make_evaluator(o.model, std::move(splits->test), o.eval_threads);
    if (!evaluator.ok()) return evaluator.status();
    impl->evaluator =
        BackgroundEvaluator::Create(std::move(evaluator).value(), o.debug_eval_delay_seconds);
  } else if (!o.data.normalize.empty() && o.data.normalize != "auto" &&
             o.data.normalize != "none") {
    auto n = ParseNormalization(o.data.normalize);
    if (!n.ok()) return n.status();
    impl->normalization = *n;
  }
  if (impl->normalization.empty() && !file_meta.normalization.empty() &&
      o.data.normalize != "none") {
    impl->normalization = file_meta.normalization;
  }
  if (impl->class_names.empty()) impl->class_names = classes;
  if (impl->normalization.empty()) {
    if (o.data.normalize == "none") {
      impl->normalization = Normalization{{0.0f}, {1.0f}};  // none, said explicitly to devices
    } else if (!o.parent) {                                 // (a relay hands on its parent's)
      spdlog::warn(
          "no test data and no --normalize: each device normalises its data with its own "
          "statistics; give --normalize mean,std[,...] so that they agree");
    }
  }
  {
    wire::TrainConfig c = o.train;
    c.deadline_seconds = o.round_deadline_seconds;
    c.normalize_mean = impl->normalization.mean;
    c.normalize_std = impl->normalization.std;
    c.class_names = impl->class_names;
    FL_RETURN_IF_ERROR(
        wire::CheckTrainConfig(c).WithContext("the TASK's normalisation and classes"));
  }
  if (!impl->class_names.empty()) {
    std::string list;
    for (const auto& n : impl->class_names) list += (list.empty() ? "" : ", ") + Printable(n);
    spdlog::info("classes: {} (sent to devices, which number theirs alike)", list);
  }
  if (o.mode == "async") {
    impl->async_tasks = std::make_unique<AsyncTasks>(o.async);
    impl->async_rng.emplace(o.seed * 0x9E3779B97F4A7C15ULL + 0xA5);
  }
  impl->store = std::make_unique<RunStore>(o.out_dir, o.privacy.enabled(), o.mode == "async",
                                           impl->signer.get());
  FL_RETURN_IF_ERROR(impl->store->Prepare());
  // global.flm records them, so that the model can be used (and exported)
  // without the data.
  impl->store->SetModelMeta(ModelFileMeta{impl->normalization, impl->class_names});
  // Where the federated pruning schedule starts: the starting model's sparsity.
  if (o.model_file.empty()) impl->prune_from = o.sparsity;
  if (o.prune_to > 0) {
    if (!(o.prune_to < 1) || o.prune_to < impl->prune_from || o.prune_rounds < 1) {
      return Status::InvalidArgument(
          "--prune-to must be in [" + std::to_string(impl->prune_from) +
          ", 1) (not below the starting sparsity) with --prune-rounds >= 1");
    }
    spdlog::info(
        "federated pruning: from {:.1f}% to {:.1f}% sparsity over rounds 1..{} (Zhu & Gupta), "
        "{}",
        100 * impl->prune_from, 100 * o.prune_to, o.prune_rounds,
        o.erk ? "layer-wise by ERK" : (o.global_pruning ? "ranked globally" : "layer by layer"));
    char text[160];
    std::snprintf(text, sizeof(text), "from %.9g to %.9g over rounds 1..%d, %s", impl->prune_from,
                  o.prune_to, o.prune_rounds,
                  o.erk ? "erk" : (o.global_pruning ? "global" : "per layer"));
    impl->pruning_schedule = text;
  }
  if (o.resume) {
    if (o.out_dir.empty()) return Status::InvalidArgument("--resume needs an output folder");
    std::string used;
    std::vector<std::string> refused;
    auto c = ReadNewestCheckpoint(impl->store->CheckpointPath(), &used, &refused,
                                  impl->signer ? &impl->signer->public_key() : nullptr);
    for (const auto& why : refused) {
      spdlog::error("checkpoint not usable: {}", why);
    }
    if (c.ok()) {
      if (!SameLayout(c->model, impl->global)) {
        return Status::InvalidArgument(used, "holds a '" + c->model.architecture +
                                                 "' model, this run trains '" + o.model + "'");
      }
      if (c->seed != o.seed) {
        // Selection and training seeds follow --seed: another seed would
        // continue a different run from this one's model.
        return Status::InvalidArgument(
            used, "is from a run with --seed " + std::to_string(c->seed) + "; resume it with " +
                      "that seed (this run has --seed " + std::to_string(o.seed) + ")");
      }
      if (c->strategy != o.strategy.name) {
        // Its state (momentum, moments) belongs to the strategy that made it.
        return Status::InvalidArgument(
            used, "is from a run with --strategy " + c->strategy + "; resume it with that " +
                      "strategy (this run has --strategy " + o.strategy.name + ")");
      }
      if (c->has_pruning && c->pruning != impl->pruning_schedule) {
        // The mask already follows the checkpoint's schedule; another one would
        // prune the rest of the run to other targets.
        auto says = [](const std::string& s) { return s.empty() ? std::string("none") : s; };
        return Status::InvalidArgument(
            "the checkpoint is from a run whose federated pruning is '" + says(c->pruning) +
            "'; resume it with the same --prune-to, --prune-rounds, --erk, --sparsity and model "
            "(this run's: '" +
            says(impl->pruning_schedule) + "')");
      }
      if (!c->settings.empty()) {
        const auto changed = SettingsDifferences(
            c->settings, RunSettingsOf(o, impl->normalization, impl->class_names));
        if (!changed.empty()) {
          std::string list;
          for (const auto& line : changed) list += "\n  " + line;
          return Status::InvalidArgument(
              used,
              "is from a run with other settings; resume it with the checkpoint's, or "
              "start a new run (a new --out):" +
                  list);
        }
      }
      // The strategy's state covers the trainable tensors' kept values.
      std::vector<uint8_t> trainable;
      if (!o.trainable.empty()) {
        auto which = MatchTrainable(c->model, o.trainable);
        if (!which.ok()) return which.status();
        trainable = std::move(which).value();
      }
      if (Status st = impl->aggregator->LoadState(
              c->strategy_state, static_cast<size_t>(KeptCountOf(c->model, trainable)));
          !st.ok()) {
        return Status::Corruption(used, st.message());
      }
      impl->global = std::move(c->model);
      impl->round = c->round;
      impl->reference_norm = c->reference_norm;
      resumed = true;
      last_row = impl->store->ReconcileRows(impl->round);
      owed_rows = c->pending_rows;
      if (!refused.empty() && o.privacy.enabled()) {
        // Rounds after it were released (their models left the server); run
        // again, their noise would be drawn anew over other updates, and the
        // two releases together are not private.
        return Status::FailedPrecondition(
            used,
            "the newest checkpoint cannot be used, and a private run does not resume from "
            "an older one: the rounds after it were released with noise that running "
            "them again would not repeat. Start a new run (a new --out)");
      }
      if (!refused.empty()) {
        spdlog::warn("resuming from an older checkpoint generation, {}", used);
      }
      spdlog::info("resuming after round {} from {}", impl->round, used);
    } else if (c.status().IsNotFound()) {
      spdlog::info("no checkpoint in {}; starting from round 1", o.out_dir);
    } else {
      return c.status();
    }
  }
  if (!resumed && from_file) {
    if (!SameLayout(*from_file, impl->global)) {
      return Status::InvalidArgument(
          o.model_file,
          "holds a '" + from_file->architecture + "' model, this run trains '" + o.model + "'");
    }
    impl->global = std::move(*from_file);
    spdlog::info("starting from {}: {:.1f}% sparse, {} of {} parameters kept", o.model_file,
                 100 * impl->global.Sparsity(), impl->global.KeptCount(),
                 impl->global.NumParameters());
  } else if (!resumed && o.sparsity > 0) {
    FL_RETURN_IF_ERROR(o.erk ? PruneErk(&impl->global, o.sparsity)
                             : PruneByMagnitude(&impl->global, o.sparsity, o.global_pruning));
    // Ranked globally at initialisation, a layer whose initial weights are
    // all smaller than the others' (a classifier with a wide input) can lose
    // every weight: nothing would pass through it, and training could not
    // bring it back.
    for (const auto& t : impl->global.tensors) {
      if (!t.mask.empty() && t.KeptCount() == 0) {
        return Status::InvalidArgument(
            "--sparsity " + std::to_string(o.sparsity),
            "pruning the initial model keeps no weight of '" + t.name +
                "', so no signal would pass through it; prune by ERK (--erk, "
                "[compression] erk = true) or layer by layer ([compression] global_pruning = "
                "false)");
      }
    }
    spdlog::info("pruned the initial model to {:.1f}% sparsity{} ({} of {} parameters kept)",
                 100 * impl->global.Sparsity(), o.erk ? ", layer-wise by ERK" : "",
                 impl->global.KeptCount(), impl->global.NumParameters());
  }
  if (!o.trainable.empty()) {
    if (o.prune_to > 0 || (o.sparsity > 0 && o.model_file.empty())) {
      return Status::InvalidArgument(
          "--trainable",
          "cannot be combined with pruning here (--sparsity, --prune-to): frozen weights pruned "
          "would never recover; prune the model beforehand (fl-compress) and start from it with "
          "--model-file");
    }
    auto which = MatchTrainable(impl->global, o.trainable);
    if (!which.ok()) return which.status();
    impl->trainable = std::move(which).value();
    std::string names;
    for (size_t i = 0; i < impl->trainable.size(); ++i) {
      if (impl->trainable[i]) names += (names.empty() ? "" : ", ") + impl->global.tensors[i].name;
    }
    const ModelState part = SelectTensors(impl->global, impl->trainable);
    spdlog::info("trainable: {} ({} of {} parameters; the others are frozen)", names,
                 part.NumParameters(), impl->global.NumParameters());
  }
  impl->SetGlobal();
  if (const int need = RobustMinimum(o.strategy); need > 0) {
    // A robust rule capped below what it needs resists nothing: the median of
    // one delta is that delta.
    const size_t per_update = impl->aggregator->held_bytes_per_value() * impl->kept_count;
    const size_t fits =
        per_update ? o.max_aggregation_bytes / per_update : std::numeric_limits<size_t>::max();
    if (fits < static_cast<size_t>(need)) {
      return Status::InvalidArgument(
          "--max-aggregation-mb " + std::to_string(o.max_aggregation_bytes >> 20) + " holds " +
          std::to_string(fits) + " deltas of this model (" + std::to_string(per_update) +
          " B each); --strategy " + o.strategy.name + " needs at least " + std::to_string(need) +
          " a round to resist an attacker: raise --max-aggregation-mb");
    }
    if (fits < static_cast<size_t>(o.min_clients)) {
      spdlog::warn(
          "--max-aggregation-mb holds {} deltas, fewer than --min-clients {}: rounds select {} "
          "of the live devices",
          fits, o.min_clients, fits);
    }
  }
  if (impl->async_tasks) {
    // A rule that holds every delta holds a step's buffer.
    const size_t per_update = impl->aggregator->held_bytes_per_value() * impl->kept_count;
    if (per_update > 0 &&
        o.max_aggregation_bytes / per_update < static_cast<size_t>(o.async.buffer)) {
      return Status::InvalidArgument(
          "--buffer", std::to_string(o.async.buffer) + " deltas of this model (" +
                          std::to_string(per_update) +
                          " B each) do not fit in --max-aggregation-mb " +
                          std::to_string(o.max_aggregation_bytes >> 20) + ", which --strategy " +
                          o.strategy.name + " holds them in");
    }
  }
  if (impl->reference_norm == 0) {
    // Deltas cover the trainable tensors: their norm is the reference.
    impl->reference_norm = KeptNorm(SelectTensors(impl->global, impl->trainable));
  }
  if (Status st = CheckValueRange(impl->global, impl->ValueLimit()); !st.ok()) {
    return Status::InvalidArgument(
        "the starting model cannot be sent as " +
            std::string(o.downlink == wire::ValueFormat::kFp16 ? "fp16" : "fp32"),
        st.message());
  }

  if (!o.insecure && (o.key_path.empty() || !impl->Enrolling())) {
    return Status::InvalidArgument(
        "encrypted transport needs the server's identity (--key, from fl-keygen) and an "
        "enrollment folder (--clients, or --relays for a root of relays only); for a local "
        "experiment on a trusted network, pass --insecure");
  }
  FL_RETURN_IF_ERROR(impl->LoadEnrollment());
  {
    Impl* s = impl.get();
    impl->ingress.max_frame_bytes = o.max_frame_bytes;
    impl->ingest_pool = std::make_unique<WorkerPool>(IngestThreads(o.ingest_threads));
    impl->ingest_scratch.resize(static_cast<size_t>(impl->ingest_pool->threads()));
    impl->ingress.payload_limit = [s](wire::MessageType t) { return s->PayloadLimit(t); };
    if (impl->Enrolling()) {
      impl->ingress.sender = [s](const std::string& id) -> std::optional<KnownSender> {
        auto it = s->enrolled.find(id);
        if (it == s->enrolled.end()) return std::nullopt;
        KnownSender k;
        k.verifier = &it->second.verifier;
        k.check_transport = !s->o.insecure;
        if (it->second.curve) k.transport_key = *it->second.curve;
        return k;
      };
    }
  }
  transport::SocketOptions so;
  so.max_frame_bytes = o.max_frame_bytes;
  if (!o.transport_heartbeats) so.heartbeat_ms = 0;
  so.max_connections = impl->connection_cap = ConnectionCap(o.max_connections);
  if (o.insecure) {
    spdlog::warn(
        "INSECURE TRANSPORT: no encryption and no transport authentication on {}. "
        "Anyone who can reach it can read the models{}. Use this for local experiments only.",
        o.bind,
        !impl->Enrolling() ? " and send updates" : " (updates still need enrolled signatures)");
  } else {
    so.curve.secret_key = KeyBytes(curve->secret_key);
    so.curve.public_key = KeyBytes(curve->public_key);
    so.curve.authorize = [admission = impl->admission](const std::string& key) {
      return admission->Admit(key);
    };
    if (o.verbose) {
      spdlog::info(
          "transport: CURVE, server key {}; admitting the CURVE keys of {} enrolled "
          "device(s)",
          Z85Encode(curve->public_key.data(), kCurveKeyBytes), impl->enrolled.size());
    }
  }
  auto sock = impl->ctx->Listen(o.bind, so);
  if (!sock.ok()) return sock.status();
  impl->sock = std::move(sock).value();
  if (o.verbose) {
    spdlog::info(
        "at most {} connections at once (--max-connections); {} devices tracked "
        "(--max-clients)",
        impl->connection_cap, o.max_clients);
  }
  if (o.resume && !o.out_dir.empty()) {
    // A round that was open when the server stopped: reopen it if it starts
    // from the model the checkpoint holds; otherwise it is spent.
    auto log = WalReadAll(impl->WalPath(), impl->wal_key);
    if (log.ok() && log->header.round == impl->round + 1 &&
        log->header.model_version == impl->version) {
      impl->resumed_wal = std::move(log).value();
    } else if (!log.ok() && log.status().IsIOError()) {
      // Unreadable is not absent: acknowledged updates may be in it.
      return log.status().WithContext("reading the open round's log to resume");
    } else if (!log.status().IsNotFound()) {
      // Spent (its round is in the checkpoint) or damaged: kept aside, not lost.
      const std::string aside = impl->WalPath() + ".old";
      spdlog::warn(
          "{}: {}; it is not reopened and is kept as {}", impl->WalPath(),
          log.ok() ? "its round is not the one after the checkpoint" : log.status().ToString(),
          aside);
      std::rename(impl->WalPath().c_str(), aside.c_str());
    }
    // global.flm is derived from the checkpoint: rewrite it, in case the
    // server stopped between the two.
    if (resumed) {
      FL_RETURN_IF_ERROR(impl->store->WriteModel(impl->global));
      impl->RestorePendingRows(owed_rows, last_row);
    }
  }
  if (o.parent) o.parent->SetModel(impl->global);
  return std::unique_ptr<Server>(new Server(std::move(impl)));
}

std::string Server::endpoint() const { return impl_->sock->endpoint(); }
uint64_t Server::first_round() const { return impl_->round + 1; }

Result<ServerSummary> Server::Run(const std::atomic<bool>* stop, const RoundCallback& on_round) {
  Impl& s = *impl_;
  ServerSummary sum;
  s.on_round = &on_round;
  s.summary = &sum;
  struct Detach {
    Impl& s;
    ~Detach() {
      s.on_round = nullptr;
      s.summary = nullptr;
    }
  } detach{s};
  if (s.o.verbose && s.o.parent) {
    spdlog::info("relaying {} on {}: rounds from the parent, C={}, min_clients={}, strategy {}",
                 s.o.model, endpoint(), s.o.fraction, s.o.min_clients, s.aggregator->name());
  } else if (s.o.verbose) {
    spdlog::info(
        "serving {} on {}: rounds {}..{}, C={}, min_clients={}, deadline {} s, strategy {}{}",
        s.o.model, endpoint(), s.round + 1, s.o.rounds, s.o.fraction, s.o.min_clients,
        s.o.round_deadline_seconds, s.aggregator->name(),
        s.o.strategy.clip > 0 ? fmt::format(" (deltas clipped to L2 norm {})", s.o.strategy.clip)
                              : std::string());
    if (s.o.privacy.enabled()) {
      spdlog::info(
          "differential privacy: DP-FedAvg, noise multiplier {}, clip {}{}, devices "
          "Poisson-sampled at rate {}; epsilon reported at delta {:g} after every round",
          s.o.privacy.noise_multiplier, s.o.privacy.clip,
          s.o.privacy.adaptive_clip ? " (adaptive)" : "", s.o.fraction, s.o.privacy.delta);
      if (!s.wal_key) {
        spdlog::warn(
            "differential privacy without a server key (--key): the noise and the sampling are "
            "seeded from --seed, so anyone who knows the seed can remove the noise and knows who "
            "was sampled; the epsilon reported holds only with a key. Reproducible experiments "
            "only.");
      }
    }
  }
  // On an error, rounds already checkpointed still get their rows (best effort).
  auto fail = [&s](Status st) {
    Status rs = s.Report(/*wait=*/true);
    if (!rs.ok()) spdlog::error("writing the rows of finished rounds: {}", rs.ToString());
    return st;
  };
  if (s.o.parent) {
    bool abandoned = false;
    Status st = s.RelayRounds(stop, &abandoned);
    if (!st.ok()) return fail(st);
    sum.interrupted = abandoned;
  }
  for (uint64_t r = s.round + 1; !s.o.parent && r <= static_cast<uint64_t>(s.o.rounds); ++r) {
    bool abandoned = false;
    Status st = s.async_tasks ? s.RunStep(r, stop, &abandoned) : s.RunRound(r, stop, &abandoned);
    if (!st.ok()) return fail(st);
    if (abandoned) {
      sum.interrupted = true;
      break;
    }
  }
  s.collecting = false;  // (asynchronous mode: no more tasks)
  // The last evaluations: keep answering while they finish (on a signal, just
  // wait for them: their rows belong in rounds.csv).
  if (!s.unreported.empty() && stop && stop->load() && s.o.verbose) {
    spdlog::info("waiting for the evaluation of {} finished round(s) for rounds.csv",
                 s.unreported.size());
  }
  if (Status st = s.Pump(std::numeric_limits<double>::infinity(), stop,
                         [&] { return s.unreported.empty(); });
      !st.ok()) {
    return fail(st);
  }
  FL_RETURN_IF_ERROR(s.Report(/*wait=*/true));
  sum.rounds_completed = s.round;
  if (!sum.interrupted) {
    // Tell everyone, then answer stragglers with DONE for a little while.
    s.finished = true;
    s.done_msg.rounds_completed = s.round;
    s.done_msg.final_accuracy = sum.final_accuracy;
    s.done_msg.message = "federation finished after " + std::to_string(s.round) + " rounds";
    for (const auto& [id, c] : s.clients) s.SendDone(c.peer, id, nullptr);
    FL_RETURN_IF_ERROR(s.Pump(NowSeconds() + s.o.done_linger_seconds, stop, nullptr));
  }
  sum.rejected = s.totals_rejected;
  return sum;
}

}  // namespace fl
