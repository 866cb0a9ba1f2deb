// fl-server: the federated learning aggregator.
//
//   fl-server --bind tcp://*:5555 --model mnist_cnn --rounds 50 --fraction 0.1
//             --min-clients 10 --data data/mnist --out runs/prod
//   fl-server ... --resume        # continue from runs/prod/checkpoint.fl
//   fl-server --parent tcp://root:5555 --server-key root.pub --key relay.key
//             --clients devices/ --bind tcp://*:6000     # a relay aggregator
//   Root of relays: --relays relays/ (their public keys) --max-examples N.
//   Encrypted (CURVE) and enrolled by default: --key server.key --clients enrolled/;
//   --insecure for local experiments. See README "Deploying to a fleet".
//
// SIGINT/SIGTERM abandon the round in progress, keep the last checkpoint and exit 0.
// SIGHUP re-reads the enrollment folder (--clients) at once.
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <csignal>
#include <memory>

#include "common/cli_config.h"
#include "common/codec.h"
#include "common/data_flags.h"
#include "common/file_util.h"
#include "common/memory.h"
#include "common/reproducible.h"
#include "server/metrics_endpoint.h"
#include "relay/relay.h"
#include "server/server.h"
#include "server/torch_runtime.h"

namespace {

std::atomic<bool> g_stop{false};
std::atomic<bool> g_reload{false};
// The first SIGINT/SIGTERM stops the run cleanly (rows of finished rounds are
// still written); a second one ends the process at once.
void OnSignal(int sig) {
  g_stop = true;
  std::signal(sig, SIG_DFL);
}
void OnHangup(int) { g_reload = true; }

}  // namespace

int main(int argc, char** argv) {
  fl::UseOneMallocArena();
  fl::ServerOptions o;
  o.data.path = FL_DEFAULT_DATA_DIR;
  double max_frame_mb = 64;
  double transfer_window_mb = 16;
  bool quiet = false;
  bool no_eval = false;
  CLI::App app{"fl-server: federated learning aggregator (FedAvg over ZeroMQ)"};
  app.add_option("--bind", o.bind, "Endpoint to listen on")->capture_default_str();
  app.add_option("--model", o.model,
                 "Architecture of the global model: a model zoo name, a TorchScript file (.pt; "
                 "its weights are the starting point), or a compressed model file (.flm from "
                 "fl-compress) to start from")
      ->capture_default_str();
  app.add_option("--rounds", o.rounds, "Rounds to run")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--min-clients", o.min_clients,
                 "Active clients needed to start a round (with --dp-* and relays: devices, a relay "
                 "counting as the devices it serves)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--fraction,-C", o.fraction, "Fraction of active clients selected per round")
      ->capture_default_str()
      ->check(CLI::Range(1e-9, 1.0));
  app.add_option("--over-selection", o.over_selection,
                 "Select this many times the devices a round needs and close it when --fraction "
                 "x live updates are in; the rest are told their work is not needed (1 = off)")
      ->capture_default_str();
  app.add_option("--mode", o.mode,
                 "sync: rounds of --fraction of the live devices; async: buffered asynchronous FL "
                 "(FedBuff): --concurrency devices train at all times and the model steps every "
                 "--buffer updates (a step is a round of --rounds and rounds.csv)")
      ->capture_default_str()
      ->check(CLI::IsMember({"sync", "async"}));
  app.add_option("--concurrency", o.async.concurrency,
                 "async: tasks out on devices at once; an answer frees a slot for an idle device")
      ->capture_default_str();
  app.add_option("--buffer", o.async.buffer, "async: accepted updates per server step (K)")
      ->capture_default_str();
  app.add_option("--staleness-exponent", o.async.staleness_exponent,
                 "async: an update tau steps behind counts 1/(1+tau)^a of a fresh one")
      ->capture_default_str();
  app.add_option(
         "--max-staleness", o.async.max_staleness,
         "async: updates more than this many steps behind are refused (too_stale); tasks that "
         "old are given up and their slots handed on (low values pay with stragglers)")
      ->capture_default_str();
  app.add_option("--deadline", o.round_deadline_seconds,
                 "Seconds a round waits for updates (async: a task is given up after this long)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--client-timeout", o.client_timeout_seconds,
                 "Seconds of silence after which a client is not selected")
      ->capture_default_str();
  app.add_option("--epochs,-E", o.train.epochs, "Local epochs")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--batch,-B", o.train.batch_size, "Local batch size (0 = whole shard)")
      ->capture_default_str();
  app.add_option("--lr", o.train.lr, "Client SGD learning rate")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--lr-decay", o.lr_decay,
                 "Client learning rate of round r: lr x lr-decay^(r-1), sent in the TASK")
      ->capture_default_str();
  app.add_option("--lr-min", o.lr_min, "Floor of the decayed client learning rate")
      ->capture_default_str();
  app.add_option("--momentum", o.train.momentum, "Client SGD momentum")->capture_default_str();
  app.add_option("--weight-decay", o.train.weight_decay, "Client L2 weight decay")
      ->capture_default_str();
  // Aggregation (server/aggregator.h).
  fl::StrategyOptions& so = o.strategy;
  std::string names;
  for (const auto& n : fl::StrategyNames()) names += (names.empty() ? "" : " | ") + n;
  app.add_option("--strategy", so.name, "Aggregation strategy: " + names)
      ->capture_default_str()
      ->group("Strategy");
  const struct {
    const char* flag;
    double* value;
    const char* help;
  } strategy_flags[] = {
      {"--server-lr", &so.server_lr,
       "Server learning rate (0 = the strategy's default: 1; fedadagrad 0.1; fedadam, fedyogi "
       "0.01)"},
      {"--server-momentum", &so.momentum, "fedavgm: server momentum beta"},
      {"--beta1", &so.beta1, "fedadagrad/fedadam/fedyogi: first moment decay"},
      {"--beta2", &so.beta2, "fedadam/fedyogi: second moment decay"},
      {"--tau", &so.tau, "fedadagrad/fedadam/fedyogi: adaptivity tau"},
      {"--mu", &so.mu, "fedprox: proximal term mu sent to clients"},
      {"--trim-fraction", &so.trim_fraction,
       "trimmed_mean: fraction beta dropped at each end of every coordinate"},
      {"--clip", &so.clip,
       "Scale each update's delta to at most this L2 norm before aggregating, with any strategy "
       "(0 = off)"},
  };
  for (const auto& f : strategy_flags) {
    app.add_option(f.flag, *f.value, f.help)->capture_default_str()->group("Strategy");
  }
  // Central differential privacy (server/privacy.h).
  fl::PrivacyOptions& dp = o.privacy;
  app.add_option("--dp-noise-multiplier", dp.noise_multiplier,
                 "DP-FedAvg noise multiplier z: Gaussian noise of sd z x clip on the sum of "
                 "clipped deltas; devices are Poisson-sampled at rate --fraction (0 = no privacy)")
      ->capture_default_str()
      ->group("Privacy");
  app.add_option("--dp-clip", dp.clip, "Clipping norm C of each delta (the start, when adaptive)")
      ->capture_default_str()
      ->group("Privacy");
  app.add_flag("--dp-adaptive-clip", dp.adaptive_clip,
               "Move the clipping norm toward --dp-target-quantile of the deltas' norms "
               "(Andrew et al. 2021)")
      ->group("Privacy");
  app.add_option("--dp-target-quantile", dp.target_quantile,
                 "Adaptive clipping: the quantile of delta norms to clip at")
      ->capture_default_str()
      ->group("Privacy");
  app.add_option("--dp-delta", dp.delta, "delta of the (epsilon, delta) guarantee reported")
      ->capture_default_str()
      ->group("Privacy");
  app.add_option("--krum-f", so.krum_f, "krum/multikrum: Byzantine devices tolerated (f)")
      ->capture_default_str()
      ->group("Strategy");
  app.add_option("--krum-m", so.krum_m, "multikrum: updates averaged (0 = K - f)")
      ->capture_default_str()
      ->group("Strategy");
  std::string downlink = "fp32";
  app.add_option("--model-file", o.model_file, "Start from this compressed model (fl-compress)");
  app.add_option("--model-signer", o.model_signer,
                 "Refuse the model file unless this identity (NAME.pub) signed it "
                 "(fl-compress prune --key)");
  app.add_option("--sparsity", o.sparsity, "Prune the initial model by magnitude to this")
      ->capture_default_str();
  app.add_option("--trainable", o.trainable,
                 "On-device transfer learning: comma-separated patterns of the tensors that train "
                 "(e.g. 'fc2.*'); the others are frozen and deltas carry the trainable ones only");
  app.add_flag("--erk", o.erk,
               "Layer-wise sparsity by Erdos-Renyi-Kernel (at initialisation and when pruning)");
  app.add_option("--prune-to", o.prune_to,
                 "Federated pruning: tighten the mask to this sparsity, by magnitude of the "
                 "aggregated weights, on the Zhu & Gupta schedule (0 = off)")
      ->capture_default_str();
  app.add_option("--prune-rounds", o.prune_rounds,
                 "Federated pruning: reach --prune-to after this many rounds")
      ->capture_default_str();
  app.add_option("--codec", o.train.codec,
                 "Client delta codec: q (block-quantized, --uplink-bits 32, 8, 4 or 2) or sign "
                 "(1 bit per value and a scale per --block values; use it with error feedback)")
      ->capture_default_str()
      ->check(CLI::IsMember(fl::CodecNames()));
  auto* uplink_bits =
      app.add_option("--uplink-bits", o.train.uplink_bits,
                     "Client delta bits per value: 32, 8, 4, 2 (codec q); 1 (codec sign, its "
                     "default)")
          ->capture_default_str();
  app.add_option("--block", o.train.block, "Values per quantization scale")->capture_default_str();
  app.add_option("--downlink", downlink, "Model values in TASKs: fp32 | fp16")
      ->capture_default_str();
  bool no_ef = false, nearest = false;
  app.add_flag("--no-error-feedback", no_ef, "Clients do not carry the quantization residual");
  app.add_flag("--nearest-rounding", nearest, "Round to nearest instead of stochastically");
  app.add_option("--data", o.data.path,
                 "Data whose test split evaluates the model: an IDX folder (MNIST's file names), "
                 "a CSV file, or class folders of images")
      ->capture_default_str();
  fl::AddDataFormatFlags(app, &o.data);
  app.add_option("--classes", o.class_names,
                 "The federation's class names by label index, comma-separated (class folders, "
                 "CSV text labels): sent to devices, which number theirs alike, so a device that "
                 "lacks a class still trains. Default: the test data's");
  app.add_flag("--no-eval", no_eval, "Do not evaluate the global model");
  app.add_option("--eval-every", o.eval_every, "Evaluate every N rounds")->capture_default_str();
  app.add_option("--ingest-threads", o.ingest_threads,
                 "Threads that verify, decode and check received updates, the server's own "
                 "included (0 = one per core, at most 8); what they accept is the same for any "
                 "number")
      ->check(CLI::Range(0, 64));
  app.add_option("--eval-threads", o.eval_threads,
                 "LibTorch threads of the evaluation thread (it runs beside the receive thread, "
                 "overlapping the next round)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  // Test hook: a server whose evaluation takes longer than the clients' timeouts.
  app.add_option("--debug-eval-delay", o.debug_eval_delay_seconds,
                 "Seconds added to every evaluation (testing a slow server)")
      ->group("");
  std::string crash_at;
  app.add_option("--debug-crash-at", crash_at,
                 "POINT:N, SIGKILL the server the N-th time it passes POINT (ack, checkpoint, "
                 "log_removed, model_file): testing crash recovery")
      ->group("");
  app.add_option("--out", o.out_dir, "Folder for rounds.csv, checkpoint.fl and round.wal");
  app.add_flag("--resume", o.resume, "Continue from the checkpoint in --out");
  app.add_option("--seed", o.seed, "Seed of the initial model and client selection")
      ->capture_default_str();
  app.add_option("--max-frame-mb", max_frame_mb, "Largest accepted frame (MiB)")
      ->capture_default_str();
  app.add_option("--linger", o.done_linger_seconds, "Seconds to answer stragglers after DONE")
      ->capture_default_str();
  app.add_option("--key", o.key_path,
                 "Server identity (NAME.key from fl-keygen): signs every message and model file "
                 "it sends, and is the CURVE key of the encrypted transport");
  app.add_option("--clients", o.clients_dir,
                 "Enrollment folder of device public keys (NAME.pub from fl-keygen); only "
                 "enrolled devices can connect and only their signed messages are accepted. "
                 "Re-read every round and on SIGHUP.");
  app.add_flag("--insecure", o.insecure,
               "Plaintext, unauthenticated transport (no CURVE): local experiments only");
  app.add_option("--max-update-norm", o.max_update_norm,
                 "Refuse deltas with a larger L2 norm (0 = derived: --update-norm-factor x the "
                 "L2 norm of the run's starting model)")
      ->capture_default_str();
  app.add_option("--update-norm-factor", o.update_norm_factor,
                 "The derived bound on a delta's L2 norm, as a multiple of the L2 norm of the "
                 "run's starting model (0 with --max-update-norm 0 = no bound)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--transfer-window-mb", transfer_window_mb,
                 "Update bytes, and over CURVE TASK bytes, that may be on their way at once "
                 "(MiB): clients wait their turn, so transfers that happen together do not all "
                 "sit in the server's memory; one is always allowed. 0 = off")
      ->check(CLI::NonNegativeNumber)
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
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--max-clients", o.max_clients,
                 "Devices tracked at once; a new one past it replaces the least recently heard "
                 "one that is not live, or is refused (registry_full)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--max-param-value", o.max_param_value,
                 "Largest magnitude a global model parameter may take; an update that would move "
                 "one beyond it is refused (at most 65504 with --downlink fp16; below 4194304 = "
                 "2^22 in any case: the fixed-point range of exact aggregation)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--max-examples", o.max_examples,
                 "Most examples an update counts with in the average (its weight), whatever "
                 "the device claims")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--max-weight-ratio", o.max_weight_ratio,
                 "An update counts with at most this many times the median examples of the "
                 "round's selected devices (0 = no relative cap)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  // Tiers of aggregators (docs/relays.md).
  fl::RelayUplinkOptions relay;
  app.add_option("--parent", relay.parent,
                 "Run as a relay aggregator under this parent (tcp://root:5555): a server to its "
                 "own devices (--bind, --clients), a participant to the parent, which it sends one "
                 "signed partial aggregate a round; rounds and hyperparameters come from the "
                 "parent (--rounds, --lr, ... are the parent's)")
      ->group("Relays");
  app.add_option("--server-key", relay.parent_key_path,
                 "With --parent: the parent's NAME.pub (the connection must reach it; only "
                 "what it signed is taken)")
      ->group("Relays");
  app.add_option("--relays", o.relays_dir,
                 "Root (or a relay with relays below): folder of the relays' public keys "
                 "(NAME.pub); they are admitted like devices and may send partial aggregates. "
                 "'any' with --insecure: any participant may")
      ->group("Relays");
  app.add_option("--relay-devices", o.relay_devices,
                 "Most devices one relay's partial aggregate may average; a partial weighs at "
                 "most its devices x --max-examples (else refused: relay_weight)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber)
      ->group("Relays");
  app.add_flag("--debug-relay-tamper-model", relay.debug_tamper_model,
               "With --parent: change the parent's model before the devices get it (testing "
               "the devices' --root-key check)")
      ->group("");
  app.add_option("--debug-relay-weight-factor", relay.debug_weight_factor,
                 "With --parent: claim this many times the partials' true weight (testing the "
                 "parent's check)")
      ->group("");
  int metrics_port = -1;
  std::string metrics_bind = "127.0.0.1";
  app.add_option("--metrics-port", metrics_port,
                 "Serve Prometheus metrics on http://--metrics-bind:PORT/metrics (0: a free port, "
                 "logged; -1: off)")
      ->capture_default_str()
      ->check(CLI::Range(-1, 65535));
  app.add_option("--metrics-bind", metrics_bind,
                 "Address the metrics endpoint listens on (0.0.0.0: every interface; it is "
                 "plain HTTP without authentication)")
      ->capture_default_str();
  app.add_flag("--quiet", quiet, "Log warnings and errors only");
  bool reproducible = false;
  app.add_flag("--reproducible", reproducible,
               std::string(fl::kReproducibleHelp) +
                   "; on the server: the starting model and the evaluation");
  fl::AddConfigFile(&app);
  CLI11_PARSE(app, argc, argv);
  if (reproducible) {
    if (const fl::Status st = fl::BecomeReproducible(argv); !st.ok()) {
      spdlog::error("{}", st.ToString());
      return 2;
    }
    spdlog::info("reproducible: {}", fl::DescribeReproducibleSettings());
  }
  const bool is_relay = !relay.parent.empty();
  // A relay evaluates nothing unless asked: the root does.
  if (is_relay && app.count("--data") == 0) no_eval = true;
  if (quiet) spdlog::set_level(spdlog::level::warn);
  if (!crash_at.empty()) {
    const size_t colon = crash_at.find(':');
    o.debug_crash_point = crash_at.substr(0, colon);
    o.debug_crash_count = colon == std::string::npos ? 1 : std::stoull(crash_at.substr(colon + 1));
  }
  if (no_eval) o.data.path.clear();
  if (o.train.codec == "sign" && uplink_bits->count() == 0) o.train.uplink_bits = 1;
  o.train.error_feedback = !no_ef;
  o.train.stochastic_rounding = !nearest;
  auto format = fl::wire::ParseValueFormat(downlink);
  if (!format.ok()) {
    spdlog::error("--downlink: {}", format.status().message());
    return 2;
  }
  o.downlink = *format;
  o.max_frame_bytes = static_cast<size_t>(max_frame_mb * (1 << 20));
  o.transfer_window_bytes = static_cast<size_t>(transfer_window_mb * (1 << 20));
  // --model FILE.flm: start from the file; the server takes the architecture from it.
  if (o.model.size() > 4 && o.model.compare(o.model.size() - 4, 4, ".flm") == 0) {
    o.model_file = o.model;
    o.model.clear();
  }
  o.verbose = !quiet;
  spdlog::info("effective configuration (--config FILE takes these keys):\n{}",
               fl::EffectiveConfig(app));
  if (!o.out_dir.empty()) {
    // Next to the run's outputs, so that the run can be told and repeated.
    if (fl::Status st = fl::WriteEffectiveConfig(app, "fl-server", o.out_dir); !st.ok()) {
      spdlog::error("--out: {}", st.ToString());
      return 1;
    }
  }
  spdlog::info("seed {}", o.seed);
  if (o.clients_dir.empty() && o.insecure) {
    spdlog::warn("no --clients enrollment folder: accepting updates from any client, unsigned");
  }

  std::signal(SIGINT, OnSignal);
  std::signal(SIGTERM, OnSignal);
  std::signal(SIGHUP, OnHangup);  // re-read the enrollment folder now
  o.reload_enrollment = &g_reload;
  fl::ServerMetrics metrics;
  std::unique_ptr<fl::MetricsEndpoint> metrics_endpoint;
  if (metrics_port >= 0) {
    auto e = fl::MetricsEndpoint::Start(&metrics, metrics_bind, metrics_port);
    if (e.ok()) {
      metrics_endpoint = std::move(e).value();
      o.metrics = &metrics;
      spdlog::info("metrics on http://{}:{}/metrics", metrics_bind, metrics_endpoint->port());
    } else {
      // Monitoring does not take the federation down: the server runs on.
      spdlog::error("--metrics-port: {}; running without metrics", e.status().ToString());
    }
  }
  auto ctx = fl::transport::CreateZmqContext();
  std::unique_ptr<fl::Server> server;
  std::unique_ptr<fl::Relay> relayed;
  if (is_relay) {
    auto r = fl::Relay::Create(o, ctx, fl::TorchRuntime());
    if (!r.ok()) {
      spdlog::error("{}", r.status().ToString());
      return 1;
    }
    relayed = std::move(r).value();
    relay.key_path = o.key_path;
    relay.insecure = o.insecure;
    relay.verbose = !quiet;
    char host[64] = "relay";
    gethostname(host, sizeof host - 1);
    relay.id = "relay-" + std::string(host).substr(0, 16) + "-" + std::to_string(getpid());
    if (fl::Status st = relayed->Connect(relay, ctx); !st.ok()) {
      spdlog::error("{}", st.ToString());
      return 2;
    }
    spdlog::info("relay {}: parent {}", relayed->id(), relay.parent);
  } else {
    auto s = fl::Server::Create(o, ctx, fl::TorchRuntime());
    if (!s.ok()) {
      spdlog::error("{}", s.status().ToString());
      return 1;
    }
    server = std::move(s).value();
  }
  auto sum = relayed ? relayed->Run(&g_stop, nullptr) : server->Run(&g_stop, nullptr);
  relayed.reset();
  if (!sum.ok()) {
    spdlog::error("{}", sum.status().ToString());
    return 1;
  }
  std::string rej;
  for (const auto& [reason, n] : sum->rejected) rej += " " + reason + "=" + std::to_string(n);
  if (is_relay) {
    // (A relay evaluates nothing: the root reports the accuracy.)
    spdlog::info("relay {} after round {}: {} bytes from its devices, {} to them; refused:{}",
                 sum->interrupted ? "stopped" : "finished", sum->rounds_completed,
                 sum->upload_bytes, sum->download_bytes, rej.empty() ? " none" : rej);
    return 0;
  }
  spdlog::info("{} after {} rounds: {}, {} bytes up, {} down; refused:{}",
               sum->interrupted ? "stopped" : "finished", sum->rounds_completed,
               no_eval ? std::string("not evaluated (--no-eval)")
                       : fmt::format("final test accuracy {:.2f}%", 100 * sum->final_accuracy),
               sum->upload_bytes, sum->download_bytes, rej.empty() ? " none" : rej);
  return 0;
}
