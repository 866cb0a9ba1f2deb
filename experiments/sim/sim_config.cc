#include "experiments/sim/sim_config.h"

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cmath>
#include <sstream>

#include "common/cli_checks.h"
#include "common/partition.h"
#include "common/random.h"
#include "common/reproducible.h"
#include "crypto/model_file.h"
#include "experiments/sim/adversary.h"
#include "server/flags.h"

namespace fl {

ServerOptions SimServerDefaults() {
  ServerOptions o;
  o.rounds = 5;
  o.min_clients = 0;  // every virtual client
  o.fraction = 1.0;
  o.round_deadline_seconds = 600;
  o.train.lr = 0.05;
  o.train.codec = "q";
  o.data.path = "data/mnist";
  o.data.normalize = "auto";
  o.out_dir = "runs/sim";
  o.done_linger_seconds = 1.0;
  return o;
}

namespace {

// The keys of fl-sim's TOML tables before it took the servers' names, and
// their names now.
const char* const kOldSimKeys[][2] = {
    {"data.dir", "data"},
    {"data.partition", "partition"},
    {"data.test_dir", "test-data"},
    {"data.alpha", "alpha"},
    {"data.shards_per_client", "shards-per-client"},
    {"data.test_fraction", "test-fraction"},
    {"data.label_column", "label-column"},
    {"data.group_column", "group-column"},
    {"data.normalize", "normalize"},
    {"model.name", "model"},
    {"model.trainable", "trainable"},
    {"federation.clients", "clients"},
    {"federation.fraction", "fraction"},
    {"federation.min_clients", "min-clients"},
    {"federation.round_deadline", "deadline"},
    {"federation.server_lr", "server-lr"},
    {"federation.eval_every", "eval-every"},
    {"federation.over_selection", "over-selection"},
    {"federation.mode", "mode"},
    {"federation.concurrency", "concurrency"},
    {"federation.buffer", "buffer"},
    {"federation.staleness_exponent", "staleness-exponent"},
    {"federation.max_staleness", "max-staleness"},
    {"strategy.name", "strategy"},
    {"strategy.server_lr", "server-lr"},
    {"strategy.momentum", "server-momentum"},
    {"strategy.beta1", "beta1"},
    {"strategy.beta2", "beta2"},
    {"strategy.tau", "tau"},
    {"strategy.mu", "mu"},
    {"strategy.trim_fraction", "trim-fraction"},
    {"strategy.krum_f", "krum-f"},
    {"strategy.krum_m", "krum-m"},
    {"strategy.clip", "clip"},
    {"privacy.noise_multiplier", "dp-noise-multiplier"},
    {"privacy.clip", "dp-clip"},
    {"privacy.adaptive_clip", "dp-adaptive-clip"},
    {"privacy.target_quantile", "dp-target-quantile"},
    {"privacy.delta", "dp-delta"},
    {"client.epochs", "epochs"},
    {"client.batch", "batch"},
    {"client.lr", "lr"},
    {"client.lr_decay", "lr-decay"},
    {"client.lr_min", "lr-min"},
    {"client.momentum", "momentum"},
    {"client.weight_decay", "weight-decay"},
    {"compression.sparsity", "sparsity"},
    {"compression.global_pruning", "global-pruning"},
    {"compression.erk", "erk"},
    {"compression.prune_to", "prune-to"},
    {"compression.prune_rounds", "prune-rounds"},
    {"compression.codec", "codec"},
    {"compression.uplink_bits", "uplink-bits"},
    {"compression.block", "block"},
    {"compression.stochastic_rounding",
     "'nearest-rounding', inverted (stochastic_rounding = false is nearest-rounding = true)"},
    {"compression.error_feedback",
     "'no-error-feedback', inverted (error_feedback = false is no-error-feedback = true)"},
    {"compression.downlink", "downlink"},
    {"devices.slowdown_sigma", "slowdown-sigma"},
    {"devices.straggler_fraction", "straggler-fraction"},
    {"devices.straggler_slowdown", "straggler-slowdown"},
    {"devices.dropout", "dropout"},
    {"sim.workers", "workers"},
    {"sim.ingest_threads", "ingest-threads"},
    {"sim.out", "out"},
    {"sim.heartbeat", "heartbeat"},
    {"sim.reproducible", "reproducible"},
    {"security.secure", "secure"},
    {"topology.relays", "relays"},
    {"topology.relay_strategy", "relay-strategy"},
};

RenamedKeys SimRenames() {
  RenamedKeys out;
  for (const auto& [key, now] : kOldSimKeys) {
    const std::string name = now;
    out[key] = name.find(' ') == std::string::npos ? "'" + name + "'" : name;
  }
  return out;
}

}  // namespace

const RenamedKeys kRenamedSimKeys = SimRenames();

namespace {

// The simulation's own flags (the "Simulation" group).
void AddSimulationFlags(CLI::App* app, SimConfig* c) {
  const std::string g = "Simulation";
  app->add_option("--clients,-K", c->clients, "Number of virtual clients K")
      ->capture_default_str()
      ->check(cli::Positive())
      ->group(g);
  app->add_option("--partition", c->partition,
                  "How the training split is dealt to the clients: iid | shards | dirichlet | "
                  "folders (one sub-folder of --data per client) | column (the CSV column "
                  "--group-column names each sample's device)")
      ->capture_default_str()
      ->group(g);
  app->add_option("--alpha", c->alpha, "dirichlet: concentration (smaller: more skewed)")
      ->capture_default_str()
      ->group(g);
  app->add_option("--shards-per-client", c->shards_per_client,
                  "shards: label-sorted shards each client gets")
      ->capture_default_str()
      ->check(cli::Positive())
      ->group(g);
  app->add_option("--targets", c->targets,
                  "Test accuracies to report the rounds to (default 0.97 0.99)")
      ->delimiter(',')
      ->check(CLI::Range(1e-9, 1.0))
      ->group(g);
  app->add_flag("--stop-at-target", c->stop_at_target,
                "End the run once a round reaches the highest target (resumable)")
      ->group(g);
  app->add_option("--workers", c->workers, "Worker threads hosting the clients (0 = one per core)")
      ->capture_default_str()
      ->check(cli::NonNegative())
      ->group(g);
  app->add_option("--heartbeat", c->heartbeat, "Seconds between the clients' heartbeats")
      ->capture_default_str()
      ->check(cli::Positive())
      ->group(g);
  app->add_flag("--reproducible", c->reproducible, kReproducibleHelp)->group(g);
  app->add_flag("--secure", c->secure,
                "An identity per virtual client, CURVE transport, enrolled and signed messages, "
                "as deployed (keys under --out/keys)")
      ->group(g);
  app->add_option("--relays", c->relays,
                  "Relay aggregators between the server and the clients (client k under relay k "
                  "mod R; 0 = none)")
      ->capture_default_str()
      ->check(cli::NonNegative())
      ->group(g);
  app->add_option("--relay-strategy", c->relay_strategy,
                  "The relays' rule: fedavg, or a robust rule applied per relay")
      ->capture_default_str()
      ->check(CLI::IsMember({"fedavg", "median", "trimmed_mean", "krum", "multikrum"}))
      ->group(g);
  const struct {
    const char* flag;
    double* value;
    const char* help;
    CLI::Validator check;
  } fleet[] = {
      {"--adversary-fraction", &c->adversary_fraction,
       "Fraction of the clients that poison their updates", CLI::Range(0.0, 0.999999)},
      {"--adversary-scale", &c->adversary_scale, "The attack's scale s", cli::NonNegative()},
      {"--slowdown-sigma", &c->slowdown_sigma,
       "Devices slower than this machine by exp(sigma x z), z standard normal",
       CLI::Range(0.0, 3.0)},
      {"--straggler-fraction", &c->straggler_fraction,
       "Fraction of the devices that are stragglers", CLI::Range(0.0, 1.0)},
      {"--straggler-slowdown", &c->straggler_slowdown, "How many times slower a straggler is",
       CLI::Range(1.0, 100.0)},
      {"--dropout", &c->dropout, "Probability a device drops out of a task after training",
       CLI::Range(0.0, 0.999999)},
  };
  for (const auto& d : fleet) {
    app->add_option(d.flag, *d.value, d.help)->capture_default_str()->check(d.check)->group(g);
  }
  app->add_option("--adversary-kind", c->adversary_kind,
                  "sign_flip | scale | noise | label_flip | same_value")
      ->capture_default_str()
      ->check([](const std::string& kind) {
        const Status st = ParseAdversaryKind(kind).status();
        return st.ok() ? std::string() : st.message();
      })
      ->group(g);
}

// Every flag of fl-sim, bound to `server` and `line`.
void BindSim(CLI::App& app, ServerFlags& server, SimCommandLine& line) {
  server.o = SimServerDefaults();
  AddServerFlags(&app, &server, ServerFlagSet::kSimulation);
  app.get_option("--data")->description(
      "Training data, dealt to the virtual clients by --partition: an IDX folder (MNIST's file "
      "names), a CSV file, class folders of images, or with --partition folders a folder of "
      "device folders. Its test split evaluates the model");
  app.get_option("--min-clients")
      ->description("Clients needed to start a round (0 = every virtual client)");
  app.get_option("--out")->description(
      "Results folder: rounds.csv, summary.json, config.toml (the effective configuration), "
      "checkpoints");
  app.get_option("--resume")
      ->description(
          "Continue the run in --out from its last checkpoint, up to --rounds rounds in all (with "
          "the settings it was made with; pacing, reporting and --rounds may differ)");
  AddSimulationFlags(&app, &line.config);
  // (A server setting fl-server has no flag for: the clients' data only.)
  app.add_option("--group-column", server.o.data.group_column,
                 "partition column: the CSV column naming each sample's device")
      ->group("Simulation");
  app.add_flag("--quiet", line.quiet, "Print only the final table")->group("Simulation");
  AddConfigFile(&app, "", kRenamedSimKeys);
}

const char kSimDescription[] =
    "fl-sim: a federated learning experiment with K virtual clients on one machine";

// fl-sim's virtual clients build the model too: with `--model FILE.flm`
// (or only --model-file), the architecture the file holds.
Status ResolveArchitecture(ServerOptions* o) {
  if (!o->model.empty()) return Status::OK();
  auto file = ReadModelFile(o->model_file);
  if (!file.ok()) return file.status();
  o->model = file->architecture;
  return Status::OK();
}

}  // namespace

Status ParseSimFlags(const std::vector<std::string>& args, SimCommandLine* out) {
  CLI::App app{kSimDescription, "fl-sim"};
  ServerFlags server;
  BindSim(app, server, *out);
  std::vector<std::string> reversed(args.rbegin(), args.rend());  // (CLI11 takes them so)
  try {
    app.parse(reversed);
  } catch (const CLI::ParseError& e) {
    return Status::InvalidArgument(e.what());
  }
  // --no-eval keeps --data: it is the clients' training data here.
  SimConfig& c = out->config;
  c.evaluate = !server.no_eval;
  server.no_eval = false;
  FL_RETURN_IF_ERROR(FinishServerFlags(&server));
  c.server = server.o;
  FL_RETURN_IF_ERROR(ResolveArchitecture(&c.server));
  FL_RETURN_IF_ERROR(ValidateSimConfig(c));
  if (const CLI::Option* config = app.get_option("--config"); config->count() > 0) {
    out->config_path = config->as<std::string>();
  }
  // (Not --resume or --quiet: read back with --config, the file starts the
  // same run afresh.)
  std::istringstream settings(EffectiveConfig(app));
  out->effective.clear();
  for (std::string line; std::getline(settings, line);) {
    if (line.rfind("resume = ", 0) == 0 || line.rfind("quiet = ", 0) == 0) continue;
    out->effective += line + "\n";
  }
  return Status::OK();
}

std::string SimHelp() {
  CLI::App app{kSimDescription, "fl-sim"};
  ServerFlags server;
  SimCommandLine line;
  BindSim(app, server, line);
  return app.help();
}

Status ValidateSimConfig(const SimConfig& c) {
  const ServerOptions& s = c.server;
  auto bad = [](const std::string& flag, const std::string& why) {
    return Status::InvalidArgument(flag, why);
  };
  if (c.partition != "folders" && c.partition != "column" &&
      !ParsePartitionScheme(c.partition).ok()) {
    return bad("--partition",
               "must be iid, shards, dirichlet, folders or column, not '" + c.partition + "'");
  }
  if (c.partition == "column" && s.data.group_column.empty()) {
    return bad("--partition column", "needs --group-column");
  }
  // The server's own checks, as it will make them, before any data is read.
  ServerOptions as_run = s;
  if (as_run.min_clients == 0) as_run.min_clients = c.clients;
  FL_RETURN_IF_ERROR(CheckServerOptions(as_run));
  if (s.min_clients > c.clients) return bad("--min-clients", "must be at most --clients");
  if (s.mode == "async" && s.async.concurrency > c.clients) {
    return bad("--concurrency", "must be at most --clients");
  }
  if (c.relays > c.clients) return bad("--relays", "must be at most --clients");
  if (c.relays > 0 && (s.mode != "sync" || s.prune_to > 0 || s.over_selection > 1)) {
    return bad("--relays",
               "relays take the server's rounds as they come: not with --mode async, --prune-to "
               "or --over-selection");
  }
  return Status::OK();
}

std::vector<double> DeviceSlowdowns(const SimConfig& c) {
  const int n = std::max(0, c.clients);
  std::vector<double> out(static_cast<size_t>(n), 1.0);
  Random r(c.server.seed * 0x2545F4914F6CDD1DULL + 17);
  for (double& s : out) s = std::max(1.0, std::exp(c.slowdown_sigma * r.Normal()));
  std::vector<int64_t> order(static_cast<size_t>(n));
  for (int k = 0; k < n; ++k) order[static_cast<size_t>(k)] = k;
  r.Shuffle(&order);
  const auto stragglers = static_cast<size_t>(std::llround(c.straggler_fraction * n));
  for (size_t i = 0; i < stragglers && i < order.size(); ++i) {
    out[static_cast<size_t>(order[i])] *= c.straggler_slowdown;
  }
  for (double& s : out) s = std::min(s, kMaxDeviceSlowdown);  // what a session takes
  return out;
}

}  // namespace fl
