#include "server/flags.h"

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <type_traits>

#include "common/cli_checks.h"
#include "common/codec.h"
#include "common/data_flags.h"
#include "common/wire/compact.h"

namespace fl {

namespace {

using Applies = std::function<bool(const ServerOptions&)>;

bool Always(const ServerOptions&) { return true; }
bool Sync(const ServerOptions& o) { return o.mode != "async"; }
bool Async(const ServerOptions& o) { return o.mode == "async"; }
bool Private(const ServerOptions& o) { return o.privacy.enabled(); }
bool AdaptivelyClipped(const ServerOptions& o) {
  return o.privacy.enabled() && o.privacy.adaptive_clip;
}
Applies StrategyIs(std::vector<std::string> names) {
  return [names = std::move(names)](const ServerOptions& o) {
    return std::find(names.begin(), names.end(), o.strategy.name) != names.end();
  };
}

// A setting's value as a checkpoint records it: numbers in the shortest text
// that reads back as the same value, booleans as true/false.
template <typename T>
std::string SettingText(const T& v) {
  if constexpr (std::is_same_v<T, bool>) {
    return v ? "true" : "false";
  } else if constexpr (std::is_integral_v<T>) {
    return std::to_string(v);
  } else if constexpr (std::is_floating_point_v<T>) {
    char b[32];
    for (int digits = 6; digits <= 17; ++digits) {
      std::snprintf(b, sizeof(b), "%.*g", digits, static_cast<double>(v));
      if (std::strtod(b, nullptr) == static_cast<double>(v)) break;
    }
    return b;
  } else {
    return std::string(v);
  }
}

// Declares the flag `opt`, bound to `value`, a run setting (flags.h) when
// `applies`.
template <typename T>
CLI::Option* Setting(ServerFlags& f, CLI::Option* opt, const T& value, Applies applies = Always) {
  f.settings.push_back({"--" + opt->get_lnames().front(), [&value] { return SettingText(value); },
                        std::move(applies)});
  return opt;
}

// Rounds: who takes part, when a round starts and ends, the scheduler.
void AddRoundFlags(CLI::App& app, ServerFlags& f, ServerFlagSet set) {
  ServerOptions& o = f.o;
  if (set == ServerFlagSet::kServer) {
    app.add_option("--bind", o.bind, "Endpoint to listen on")->capture_default_str();
  }
  app.add_option("--model", o.model,
                 "Architecture of the global model: a model zoo name, a TorchScript file (.pt; "
                 "its weights are the starting point), or a compressed model file (.flm from "
                 "fl-compress) to start from")
      ->capture_default_str();
  app.add_option("--rounds", o.rounds, "Rounds to run")
      ->capture_default_str()
      ->check(cli::Positive());
  app.add_option("--min-clients", o.min_clients,
                 "Active clients needed to start a round (with --dp-* and relays: devices, a relay "
                 "counting as the devices it serves)")
      ->capture_default_str()
      // (fl-sim: 0 = every virtual client.)
      ->check(set == ServerFlagSet::kServer ? cli::Positive() : cli::NonNegative());
  Setting(
      f,
      app.add_option("--fraction,-C", o.fraction, "Fraction of active clients selected per round")
          ->capture_default_str()
          ->check(CLI::Range(1e-9, 1.0)),
      o.fraction, Sync);
  Setting(f,
          app.add_option("--over-selection", o.over_selection,
                         "Select this many times the devices a round needs and close it when "
                         "--fraction x live updates are in; the rest are told their work is not "
                         "needed (1 = off)")
              ->capture_default_str(),
          o.over_selection, Sync);
  app.add_option("--deadline", o.round_deadline_seconds,
                 "Seconds a round waits for updates (async: a task is given up after this long)")
      ->capture_default_str()
      ->check(cli::Positive());
  if (set == ServerFlagSet::kServer) {
    app.add_option("--client-timeout", o.client_timeout_seconds,
                   "Seconds of silence after which a client is not selected")
        ->capture_default_str();
  }
  app.add_option("--seed", o.seed, "Seed of the initial model and client selection")
      ->capture_default_str();
}

// Buffered asynchronous rounds (FedBuff).
void AddAsyncFlags(CLI::App& app, ServerFlags& f) {
  ServerOptions& o = f.o;
  Setting(f,
          app.add_option("--mode", o.mode,
                         "sync: rounds of --fraction of the live devices; async: buffered "
                         "asynchronous FL (FedBuff): --concurrency devices train at all times and "
                         "the model steps every --buffer updates (a step is a round of --rounds "
                         "and rounds.csv)")
              ->capture_default_str()
              ->check(CLI::IsMember({"sync", "async"})),
          o.mode);
  Setting(f,
          app.add_option("--concurrency", o.async.concurrency,
                         "async: tasks out on devices at once; an answer frees a slot for an idle "
                         "device")
              ->capture_default_str(),
          o.async.concurrency, Async);
  Setting(f,
          app.add_option("--buffer", o.async.buffer, "async: accepted updates per server step (K)")
              ->capture_default_str(),
          o.async.buffer, Async);
  Setting(f,
          app.add_option("--staleness-exponent", o.async.staleness_exponent,
                         "async: an update tau steps behind counts 1/(1+tau)^a of a fresh one")
              ->capture_default_str(),
          o.async.staleness_exponent, Async);
  Setting(f,
          app.add_option("--max-staleness", o.async.max_staleness,
                         "async: updates more than this many steps behind are refused "
                         "(too_stale); tasks that old are given up and their slots handed on (low "
                         "values pay with stragglers)")
              ->capture_default_str(),
          o.async.max_staleness, Async);
}

// What devices train with (every TASK carries it): run settings all.
void AddTrainingFlags(CLI::App& app, ServerFlags& f) {
  ServerOptions& o = f.o;
  Setting(f,
          app.add_option("--epochs,-E", o.train.epochs, "Local epochs")
              ->capture_default_str()
              ->check(cli::Positive()),
          o.train.epochs);
  Setting(f,
          app.add_option("--batch,-B", o.train.batch_size, "Local batch size (0 = whole shard)")
              ->capture_default_str(),
          o.train.batch_size);
  Setting(f,
          app.add_option("--lr", o.train.lr, "Client SGD learning rate")
              ->capture_default_str()
              ->check(cli::Positive()),
          o.train.lr);
  const struct {
    const char* flag;
    double* value;
    const char* help;
  } flags[] = {
      {"--lr-decay", &o.lr_decay,
       "Client learning rate of round r: lr x lr-decay^(r-1), sent in the TASK"},
      {"--lr-min", &o.lr_min, "Floor of the decayed client learning rate"},
      {"--momentum", &o.train.momentum, "Client SGD momentum"},
      {"--weight-decay", &o.train.weight_decay, "Client L2 weight decay"},
  };
  for (const auto& d : flags) {
    Setting(f, app.add_option(d.flag, *d.value, d.help)->capture_default_str(), *d.value);
  }
}

// Aggregation (server/aggregator.h): the strategy's parameters are run
// settings where the strategy uses them.
void AddStrategyFlags(CLI::App& app, ServerFlags& f) {
  StrategyOptions& so = f.o.strategy;
  std::string names;
  for (const auto& n : StrategyNames()) names += (names.empty() ? "" : " | ") + n;
  app.add_option("--strategy", so.name, "Aggregation strategy: " + names)
      ->capture_default_str()
      ->group("Strategy");
  const Applies adaptive = StrategyIs({"fedadagrad", "fedadam", "fedyogi"});
  const struct {
    const char* flag;
    double* value;
    Applies applies;
    const char* help;
  } flags[] = {
      {"--server-lr", &so.server_lr, Always,
       "Server learning rate (0 = the strategy's default: 1; fedadagrad 0.1; fedadam, fedyogi "
       "0.01)"},
      {"--server-momentum", &so.momentum, StrategyIs({"fedavgm"}), "fedavgm: server momentum beta"},
      {"--beta1", &so.beta1, adaptive, "fedadagrad/fedadam/fedyogi: first moment decay"},
      {"--beta2", &so.beta2, StrategyIs({"fedadam", "fedyogi"}),
       "fedadam/fedyogi: second moment decay"},
      {"--tau", &so.tau, adaptive, "fedadagrad/fedadam/fedyogi: adaptivity tau"},
      {"--mu", &so.mu, StrategyIs({"fedprox"}), "fedprox: proximal term mu sent to clients"},
      {"--trim-fraction", &so.trim_fraction, StrategyIs({"trimmed_mean"}),
       "trimmed_mean: fraction beta dropped at each end of every coordinate"},
      {"--clip", &so.clip, Always,
       "Scale each update's delta to at most this L2 norm before aggregating, with any strategy "
       "(0 = off)"},
  };
  for (const auto& d : flags) {
    Setting(f, app.add_option(d.flag, *d.value, d.help)->capture_default_str()->group("Strategy"),
            *d.value, d.applies);
  }
  const Applies krum = StrategyIs({"krum", "multikrum"});
  Setting(f,
          app.add_option("--krum-f", so.krum_f, "krum/multikrum: Byzantine devices tolerated (f)")
              ->capture_default_str()
              ->group("Strategy"),
          so.krum_f, krum);
  Setting(f,
          app.add_option("--krum-m", so.krum_m, "multikrum: updates averaged (0 = K - f)")
              ->capture_default_str()
              ->group("Strategy"),
          so.krum_m, krum);
}

// Central differential privacy (server/privacy.h).
void AddPrivacyFlags(CLI::App& app, ServerFlags& f) {
  PrivacyOptions& dp = f.o.privacy;
  Setting(f,
          app.add_option("--dp-noise-multiplier", dp.noise_multiplier,
                         "DP-FedAvg noise multiplier z: Gaussian noise of sd z x clip on the sum "
                         "of clipped deltas; devices are Poisson-sampled at rate --fraction (0 = "
                         "no privacy)")
              ->capture_default_str()
              ->group("Privacy"),
          dp.noise_multiplier);
  Setting(f,
          app.add_option("--dp-clip", dp.clip,
                         "Clipping norm C of each delta (the start, when adaptive)")
              ->capture_default_str()
              ->group("Privacy"),
          dp.clip, Private);
  Setting(f,
          app.add_flag("--dp-adaptive-clip", dp.adaptive_clip,
                       "Move the clipping norm toward --dp-target-quantile of the deltas' norms "
                       "(Andrew et al. 2021)")
              ->group("Privacy"),
          dp.adaptive_clip, Private);
  Setting(f,
          app.add_option("--dp-target-quantile", dp.target_quantile,
                         "Adaptive clipping: the quantile of delta norms to clip at")
              ->capture_default_str()
              ->group("Privacy"),
          dp.target_quantile, AdaptivelyClipped);
  app.add_option("--dp-delta", dp.delta, "delta of the (epsilon, delta) guarantee reported")
      ->capture_default_str()
      ->group("Privacy");
}

// The model's starting point and pruning.
void AddModelFlags(CLI::App& app, ServerFlags& f) {
  ServerOptions& o = f.o;
  app.add_option("--model-file", o.model_file, "Start from this compressed model (fl-compress)");
  app.add_option("--model-signer", o.model_signer,
                 "Refuse the model file unless this identity (NAME.pub) signed it "
                 "(fl-compress prune --key)");
  app.add_option("--sparsity", o.sparsity, "Prune the initial model by magnitude to this")
      ->capture_default_str();
  Setting(f,
          app.add_option("--trainable", o.trainable,
                         "On-device transfer learning: comma-separated patterns of the tensors "
                         "that train (e.g. 'fc2.*'); the others are frozen and deltas carry the "
                         "trainable ones only"),
          o.trainable);
  app.add_option("--global-pruning", o.global_pruning,
                 "Prune by magnitude across all layers at once (true), or each layer to the same "
                 "sparsity (false); --erk sets the layers' sparsities itself")
      ->default_str(o.global_pruning ? "true" : "false");
  app.add_flag("--erk", o.erk,
               "Layer-wise sparsity by Erdos-Renyi-Kernel (at initialisation and when pruning)");
  app.add_option("--prune-to", o.prune_to,
                 "Federated pruning: tighten the mask to this sparsity, by magnitude of the "
                 "aggregated weights, on the Zhu & Gupta schedule (0 = off)")
      ->capture_default_str();
  app.add_option("--prune-rounds", o.prune_rounds,
                 "Federated pruning: reach --prune-to after this many rounds")
      ->capture_default_str();
}

// What goes over the wire: the uplink codec, the TASK's model format.
void AddCompressionFlags(CLI::App& app, ServerFlags& f) {
  ServerOptions& o = f.o;
  Setting(f,
          app.add_option("--codec", o.train.codec,
                         "Client delta codec: q (block-quantized, --uplink-bits 32, 8, 4 or 2) or "
                         "sign (1 bit per value and a scale per --block values; use it with error "
                         "feedback)")
              ->capture_default_str()
              ->check(CLI::IsMember(CodecNames())),
          o.train.codec);
  f.uplink_bits = Setting(f,
                          app.add_option("--uplink-bits", o.train.uplink_bits,
                                         "Client delta bits per value: 32, 8, 4, 2 (codec q); 1 "
                                         "(codec sign, its default)")
                              ->capture_default_str(),
                          o.train.uplink_bits);
  Setting(f,
          app.add_option("--block", o.train.block, "Values per quantization scale")
              ->capture_default_str(),
          o.train.block);
  Setting(f,
          app.add_option("--downlink", f.downlink, "Model values in TASKs: fp32 | fp16")
              ->capture_default_str(),
          f.downlink);
  Setting(f,
          app.add_flag("--no-error-feedback", f.no_error_feedback,
                       "Clients do not carry the quantization residual"),
          f.no_error_feedback);
  Setting(f,
          app.add_flag("--nearest-rounding", f.nearest_rounding,
                       "Round to nearest instead of stochastically"),
          f.nearest_rounding);
}

// The evaluation, and the run's output.
void AddEvaluationFlags(CLI::App& app, ServerFlags& f, ServerFlagSet set) {
  ServerOptions& o = f.o;
  app.add_option("--data", o.data.path,
                 "Data whose test split evaluates the model: an IDX folder (MNIST's file names), "
                 "a CSV file, or class folders of images")
      ->capture_default_str();
  AddDataFormatFlags(app, &o.data);
  // What devices' inputs and labels mean: a resumed model trained on other
  // ones would be fed other inputs, or its outputs read as other classes.
  Setting(f, app.get_option("--normalize")->capture_default_str(), o.data.normalize);
  Setting(f,
          app.add_option("--classes", o.class_names,
                         "The federation's class names by label index, comma-separated (class "
                         "folders, CSV text labels): sent to devices, which number theirs alike, "
                         "so a device that lacks a class still trains. Default: the test data's"),
          o.class_names);
  app.add_flag("--no-eval", f.no_eval, "Do not evaluate the global model");
  app.add_option("--eval-every", o.eval_every, "Evaluate every N rounds")->capture_default_str();
  app.add_option("--eval-threads", o.eval_threads,
                 "LibTorch threads of the evaluation thread (it runs beside the receive thread, "
                 "overlapping the next round)")
      ->capture_default_str()
      ->check(cli::Positive());
  app.add_option("--out", o.out_dir, "Folder for rounds.csv, checkpoint.fl and round.wal")
      ->capture_default_str();
  app.add_flag("--resume", o.resume, "Continue from the checkpoint in --out");
  app.add_option("--linger", o.done_linger_seconds, "Seconds to answer stragglers after DONE")
      ->capture_default_str();
  if (set != ServerFlagSet::kServer) return;
  // Test hooks: a slow server, a crash at a named point.
  app.add_option("--debug-eval-delay", o.debug_eval_delay_seconds,
                 "Seconds added to every evaluation (testing a slow server)")
      ->group("");
  app.add_option("--debug-crash-at", f.crash_at,
                 "POINT:N, SIGKILL the server the N-th time it passes POINT (ack, checkpoint, "
                 "log_removed, model_file): testing crash recovery")
      ->group("");
}

// Who may take part, and how the transport is protected.
void AddSecurityFlags(CLI::App& app, ServerOptions& o) {
  app.add_option("--key", o.key_path,
                 "Server identity (NAME.key from fl-keygen): signs every message and model file "
                 "it sends, and is the CURVE key of the encrypted transport");
  app.add_option("--clients", o.clients_dir,
                 "Enrollment folder of device public keys (NAME.pub from fl-keygen); only "
                 "enrolled devices can connect and only their signed messages are accepted. "
                 "Re-read every round and on SIGHUP.");
  app.add_flag("--insecure", o.insecure,
               "Plaintext, unauthenticated transport (no CURVE): local experiments only");
  app.add_option("--relays", o.relays_dir,
                 "Root (or a relay with relays below): folder of the relays' public keys "
                 "(NAME.pub); they are admitted like devices and may send partial aggregates. "
                 "'any' with --insecure: any participant may")
      ->group("Relays");
  app.add_option("--relay-devices", o.relay_devices,
                 "Most devices one relay's partial aggregate may average; a partial weighs at "
                 "most its devices x --max-examples (else refused: relay_weight)")
      ->capture_default_str()
      ->check(cli::Positive())
      ->group("Relays");
}

// The bounds updates are held to.
void AddUpdateBoundFlags(CLI::App& app, ServerOptions& o) {
  app.add_option("--max-update-norm", o.max_update_norm,
                 "Refuse deltas with a larger L2 norm (0 = derived: --update-norm-factor x the "
                 "L2 norm of the run's starting model)")
      ->capture_default_str();
  app.add_option("--update-norm-factor", o.update_norm_factor,
                 "The derived bound on a delta's L2 norm, as a multiple of the L2 norm of the "
                 "run's starting model (0 with --max-update-norm 0 = no bound)")
      ->check(cli::NonNegative())
      ->capture_default_str();
  app.add_option("--max-param-value", o.max_param_value,
                 "Largest magnitude a global model parameter may take; an update that would move "
                 "one beyond it is refused (at most 65504 with --downlink fp16; below 4194304 = "
                 "2^22 in any case: the fixed-point range of exact aggregation)")
      ->check(cli::Positive())
      ->capture_default_str();
  app.add_option("--max-examples", o.max_examples,
                 "Most examples an update counts with in the average (its weight), whatever "
                 "the device claims")
      ->check(cli::Positive())
      ->capture_default_str();
  app.add_option("--max-weight-ratio", o.max_weight_ratio,
                 "An update counts with at most this many times the median examples of the "
                 "round's selected devices (0 = no relative cap)")
      ->check(cli::NonNegative())
      ->capture_default_str();
}

// What the server holds at once: connections, devices, bytes, threads.
void AddCapacityFlags(CLI::App& app, ServerFlags& f) {
  ServerOptions& o = f.o;
  app.add_option("--max-frame-mb", f.max_frame_mb, "Largest accepted frame (MiB)")
      ->capture_default_str();
  app.add_option("--transfer-window-mb", f.transfer_window_mb,
                 "Update bytes, and over CURVE TASK bytes, that may be on their way at once "
                 "(MiB): clients wait their turn, so transfers that happen together do not all "
                 "sit in the server's memory; one is always allowed. 0 = off")
      ->check(cli::NonNegative())
      ->capture_default_str();
  app.add_option_function<double>(
         "--max-aggregation-mb",
         [&o](double mb) { o.max_aggregation_bytes = static_cast<size_t>(mb * (1 << 20)); },
         "Memory (MiB) the robust rules (median, trimmed_mean, krum, multikrum) may hold for "
         "a round's deltas, 4 B per kept value each; a round selects at most that many "
         "devices (default 2048)")
      ->check(CLI::Range(0.001, 1048576.0));
  app.add_option("--max-connections", o.max_connections,
                 "Connections held at once; a handshake past it is refused (connection_cap). "
                 "Lowered to fit the open-file limit (raised to its hard limit); 0 = that limit "
                 "(no cap if it is unlimited)")
      ->check(cli::NonNegative())
      ->capture_default_str();
  app.add_option("--max-clients", o.max_clients,
                 "Devices tracked at once; a new one past it replaces the least recently heard "
                 "one that is not live, or is refused (registry_full)")
      ->check(cli::Positive())
      ->capture_default_str();
  app.add_option("--ingest-threads", o.ingest_threads,
                 "Threads that verify, decode and check received updates, the server's own "
                 "included (0 = one per core, at most 8); what they accept is the same for any "
                 "number")
      ->check(CLI::Range(0, 64));
}

}  // namespace

void AddServerFlags(CLI::App* app, ServerFlags* f, ServerFlagSet set) {
  AddRoundFlags(*app, *f, set);
  AddAsyncFlags(*app, *f);
  AddTrainingFlags(*app, *f);
  AddStrategyFlags(*app, *f);
  AddPrivacyFlags(*app, *f);
  AddModelFlags(*app, *f);
  AddCompressionFlags(*app, *f);
  AddEvaluationFlags(*app, *f, set);
  if (set == ServerFlagSet::kServer) AddSecurityFlags(*app, f->o);
  AddUpdateBoundFlags(*app, f->o);
  AddCapacityFlags(*app, *f);
}

Status FinishServerFlags(ServerFlags* f) {
  ServerOptions& o = f->o;
  if (!f->crash_at.empty()) {
    const size_t colon = f->crash_at.find(':');
    o.debug_crash_point = f->crash_at.substr(0, colon);
    o.debug_crash_count =
        colon == std::string::npos ? 1 : std::stoull(f->crash_at.substr(colon + 1));
  }
  if (f->no_eval) o.data.path.clear();
  if (o.train.codec == "sign" && f->uplink_bits && f->uplink_bits->count() == 0) {
    o.train.uplink_bits = 1;
  }
  o.train.error_feedback = !f->no_error_feedback;
  o.train.stochastic_rounding = !f->nearest_rounding;
  auto format = wire::ParseValueFormat(f->downlink);
  if (!format.ok()) return Status::InvalidArgument("--downlink", format.status().message());
  o.downlink = *format;
  o.max_frame_bytes = static_cast<size_t>(f->max_frame_mb * (1 << 20));
  o.transfer_window_bytes = static_cast<size_t>(f->transfer_window_mb * (1 << 20));
  // --model FILE.flm: start from the file; the server takes the architecture from it.
  if (o.model.size() > 4 && o.model.compare(o.model.size() - 4, 4, ".flm") == 0) {
    o.model_file = o.model;
    o.model.clear();
  }
  return Status::OK();
}

std::string RunSettingsText(const ServerOptions& o) {
  // The schema's own binding, over a copy of `o`: each setting reads the
  // value its flag would have given.
  ServerFlags f;
  f.o = o;
  if (f.o.train.codec.empty()) f.o.train.codec = "q";
  f.downlink = wire::ValueFormatName(o.downlink);
  f.no_error_feedback = !o.train.error_feedback;
  f.nearest_rounding = !o.train.stochastic_rounding;
  CLI::App app;
  AddServerFlags(&app, &f);
  std::string text;
  for (const RunSetting& s : f.settings) {
    if (s.applies(f.o)) text += s.flag + "=" + s.value() + "\n";
  }
  return text;
}

}  // namespace fl
