// Configuration of an fl-sim experiment: flags, or a TOML file of them
// (--config), under the names fl-server and fl-client use. The server's
// settings are fl-server's own flags, bound by the same options schema
// (server/flags.h): --lr, --strategy, --dp-noise-multiplier (or in a file
// `[dp] noise-multiplier`), --deadline, ... The settings of the simulation
// itself are flags of the "Simulation" group:
//
//   clients (K), partition ("iid" | "shards" | "dirichlet" | "folders" |
//   "column"), alpha, shards-per-client, group-column, targets, stop-at-target,
//   workers, heartbeat, reproducible, secure, relays, relay-strategy,
//   adversary-fraction | -kind | -scale, slowdown-sigma, straggler-fraction,
//   straggler-slowdown, dropout
//
// A key that names no flag is an error naming the key and its line; a key of
// the TOML tables fl-sim used to read ([federation] round_deadline, ...) is
// refused with its new name (kRenamedSimKeys). Every run writes its effective
// configuration to OUT/config.toml, which --config reads back.
#ifndef FEDGE_EXPERIMENTS_SIM_SIM_CONFIG_H_
#define FEDGE_EXPERIMENTS_SIM_SIM_CONFIG_H_

#include <cstdint>
#include <string>
#include <vector>

#include "common/cli_config.h"
#include "common/status.h"
#include "server/server.h"

namespace fl {

struct SimConfig {
  // The server's settings (fl-server's flags), and the training data: the
  // virtual clients partition server.data.path; the server evaluates on its
  // test split (or server.data.test_path) unless --no-eval.
  ServerOptions server;
  bool evaluate{true};

  // Test accuracies to report rounds-to-target for.
  std::vector<double> targets{0.97, 0.99};
  // End the run (checkpointed, resumable) after the first round whose test
  // accuracy reaches the highest target: rounds-to-accuracy sweeps stop paying
  // for rounds they do not need.
  bool stop_at_target{false};

  // How the training split is dealt to the K virtual clients; "folders":
  // server.data.path holds one MNIST-format folder per device (what
  // fl-partition writes, or a real fleet's data), one virtual client each;
  // "column": the CSV column server.data.group_column names each sample's
  // device (one virtual client per distinct value when clients equals their
  // count; else devices are dealt to clients in turn).
  int clients{10};
  std::string partition{"iid"};
  double alpha{0.5};
  int shards_per_client{2};

  // This fraction of the virtual clients poison their updates (enrolled and
  // signing correctly), of this kind and with this scale s.
  double adversary_fraction{0.0};
  std::string adversary_kind{"sign_flip"};
  double adversary_scale{10.0};
  // Heterogeneous devices: virtual client k behaves as a device
  // DeviceSlowdowns(...)[k] times slower than this machine (its update is
  // held back, ClientOptions::slowdown), and drops out of a task after
  // training with probability `dropout` (ClientOptions::dropout).
  double slowdown_sigma{0};
  double straggler_fraction{0};
  double straggler_slowdown{10};
  double dropout{0};

  // Worker threads hosting the virtual clients (0 = one per core); the
  // clients' heartbeat interval.
  int workers{0};
  double heartbeat{5.0};
  // Pins the kernels and threads that differ between CPUs, and deterministic
  // algorithms (common/reproducible.h); trains slower (docs/simulations.md,
  // "Exact aggregation and reproducible runs").
  bool reproducible{false};

  // Relay aggregators between the server and the clients: the server
  // selects every relay each round (--fraction then applies to each relay's
  // clients), and averages their partial aggregates.
  int relays{0};
  std::string relay_strategy{"fedavg"};

  // Run as a deployment does: the server and every virtual client get a
  // generated identity (written under out/keys), the server enrolls all
  // clients, connections use CURVE and every message is signed. Off:
  // plaintext loopback, unsigned (the server logs that it is insecure).
  bool secure{false};
};

// fl-sim's defaults of the server's settings where they differ from
// fl-server's (5 rounds, every client each round, lr 0.05, ...).
ServerOptions SimServerDefaults();

// The keys of fl-sim's former TOML tables and their names now.
extern const RenamedKeys kRenamedSimKeys;

// An fl-sim command line, parsed.
struct SimCommandLine {
  SimConfig config;
  bool quiet{false};
  std::string config_path;  // --config, if given
  // The run's settings after the parse, as TOML (common/cli_config.h):
  // OUT/config.toml, and what --resume compares.
  std::string effective;
};

// Parses fl-sim's arguments (without the program name): the server's flags
// through the options schema (server/flags.h) with fl-sim's defaults, the
// simulation's own ("Simulation" in --help), and --config for a TOML file of
// them; then the checks of ValidateSimConfig. InvalidArgument with the flag
// or the config key (and its line) that is wrong.
Status ParseSimFlags(const std::vector<std::string>& args, SimCommandLine* out);

// fl-sim's --help.
std::string SimHelp();

// Checks the combinations of settings the flags' own checks cannot see;
// InvalidArgument naming the flag. (The server checks its settings again as
// it starts.)
Status ValidateSimConfig(const SimConfig& config);

// Per virtual client: max(1, exp(sigma x z)) with z standard normal (a
// log-normal slowdown whose median device is this machine), times
// `straggler_slowdown` for round(straggler_fraction x clients) of them chosen
// at random; all from `seed`.
// Capped at kMaxDeviceSlowdown (what ClientOptions::slowdown accepts).
constexpr double kMaxDeviceSlowdown = 1000;
std::vector<double> DeviceSlowdowns(const SimConfig& c);

}  // namespace fl

#endif  // FEDGE_EXPERIMENTS_SIM_SIM_CONFIG_H_
