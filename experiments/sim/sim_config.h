// Configuration of an fl-sim experiment: a TOML file, overridden by flags.
//
//   seed = 1
//   rounds = 5
//   targets = [0.97, 0.99]          # report rounds to reach each test accuracy
//   stop_at_target = false          # end the run once the highest target is reached
//   [data]       dir, partition ("iid" | "shards" | "dirichlet" | "folders" | "column"),
//                alpha, shards_per_client, test_dir, test_fraction, label_column,
//                group_column, normalize (common/data_loader.h)
//   [model]      name, file, trainable
//   [federation] clients, fraction, min_clients, round_deadline, eval_every, over_selection,
//                mode ("sync" | "async"), concurrency, buffer, staleness_exponent,
//                max_staleness (server/async_tasks.h; a "round" is a server step in async)
//                (server_lr here is read as [strategy] server_lr)
//   [strategy]   name, server_lr, momentum, beta1, beta2, tau, mu, trim_fraction,
//                krum_f, krum_m, clip (server/aggregator.h)
//   [client]     epochs, batch, lr, lr_decay, lr_min, momentum, weight_decay
//   [compression] sparsity, global_pruning, erk, prune_to, prune_rounds, codec, uplink_bits, block,
//                stochastic_rounding,
//                error_feedback, downlink ("fp32" | "fp16")
//   [privacy]    noise_multiplier (0 = off), clip, adaptive_clip, target_quantile,
//                delta (server/privacy.h)
//   [adversary]  fraction, kind ("sign_flip" | "scale" | "noise" | "label_flip" |
//                "same_value"), scale (experiments/sim/adversary.h)
//   [devices]    slowdown_sigma, straggler_fraction, straggler_slowdown, dropout
//                (heterogeneous devices: DeviceSlowdowns below)
//   [sim]        workers (0 = one per core), ingest_threads (the server's; 0 = one per
//                core), out, heartbeat, reproducible (common/reproducible.h: the
//                same seed gives the same model on any x86-64 machine with AVX2)
//   [security]   secure (false: plaintext loopback; true: a generated identity per
//                virtual client, CURVE transport, enrolled and signed, as deployed)
//   [topology]   relays (0 = every client at the server; R: R relay aggregators
//                under the server, client k under relay k mod R; docs/relays.md),
//                relay_strategy (the relays' rule: "fedavg", or a robust rule
//                applied per relay: "median", "trimmed_mean", "krum", "multikrum")
//
// Unknown keys and wrong types are errors naming the key, so a typo cannot be
// silently ignored. Every run writes its effective config next to its results.
#ifndef FEDGE_EXPERIMENTS_SIM_SIM_CONFIG_H_
#define FEDGE_EXPERIMENTS_SIM_SIM_CONFIG_H_

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"
#include "server/aggregator.h"

namespace fl {

struct SimConfig {
  // Seed for partition, initial model, selection and client shuffles.
  uint64_t seed{1};
  // Federated rounds to run.
  int rounds{5};
  // Test accuracies to report rounds-to-target for.
  std::vector<double> targets{0.97, 0.99};
  // End the run (checkpointed, resumable) after the first round whose test
  // accuracy reaches the highest target: rounds-to-accuracy sweeps stop paying
  // for rounds they do not need.
  bool stop_at_target{false};

  // [data] MNIST-format folder, and how its training split is partitioned;
  // "folders": `data_dir` holds one MNIST-format folder per device (what
  // fl-partition writes, or a real fleet's data), one virtual client each.
  // The server evaluates on the test split of `test_dir` (default data_dir).
  std::string data_dir{"data/mnist"};
  std::string partition{"iid"};
  std::string test_dir;
  double alpha{0.5};
  int shards_per_client{2};
  // Data formats (common/data_loader.h): `data_dir` may also be a CSV file or
  // class folders of images. The test split: test_dir, else the data's own,
  // else test_fraction of the training samples. CSV: the label column, and
  // for partition "column" the column naming each sample's device (one
  // virtual client per distinct value when clients equals their count; else
  // devices are dealt to clients in turn).
  double test_fraction{0};
  std::string label_column;
  std::string group_column;
  // "auto" (computed from the whole training split), "none", or
  // "mean,std[,...]".
  std::string normalize{"auto"};

  // [model] model zoo architecture, and optionally a compressed model file
  // (fl-compress) to start from; without one, [compression] sparsity prunes the
  // initial model on the fly.
  std::string model{"mnist_cnn"};
  std::string model_file;
  // On-device transfer learning: patterns of the tensors that train (server
  // --trainable); empty = all.
  std::string trainable;

  // [federation] K clients, fraction C selected per round, and server settings.
  int clients{10};
  double fraction{1.0};
  int min_clients{0};  // 0 = all K clients
  double round_deadline{600};
  int eval_every{1};

  // [strategy] aggregation on the server (fedavg unless set).
  StrategyOptions strategy;

  // [client] local training.
  int epochs{1};
  int64_t batch{10};
  double lr{0.05};
  // Round r trains at max(lr * lr_decay^(r-1), lr_min).
  double lr_decay{1.0};
  double lr_min{0.0};
  double momentum{0.0};
  double weight_decay{0.0};

  // [compression] prune the initial model to `sparsity` by magnitude (global or
  // per layer); clients send deltas at the kept positions quantized to
  // `uplink_bits` (32 = none) with one scale per `block` values, stochastic or
  // nearest rounding, with or without error feedback; the TASK carries kept
  // values as `downlink` ("fp32" or "fp16").
  double sparsity{0.0};
  bool global_pruning{true};
  // Layer-wise sparsity by ERK; federated pruning to `prune_to` over rounds
  // 1..prune_rounds (fl-server --erk, --prune-to, --prune-rounds).
  bool erk{false};
  double prune_to{0.0};
  int prune_rounds{0};
  // The codec (common/codec.h): "q" (quantized at `uplink_bits`) or "sign"
  // (1 bit per value; `uplink_bits` then defaults to 1).
  std::string codec{"q"};
  int uplink_bits{32};
  int block{256};
  bool stochastic_rounding{true};
  bool error_feedback{true};
  std::string downlink{"fp32"};

  // [privacy] central differential privacy (DP-FedAvg); off unless
  // noise_multiplier > 0.
  PrivacyOptions privacy;

  // [adversary] this fraction of the virtual clients poison their updates
  // (enrolled and signing correctly), of this kind and with this scale s.
  double adversary_fraction{0.0};
  std::string adversary_kind{"sign_flip"};
  double adversary_scale{10.0};
  // Heterogeneous devices ([devices]): virtual client k behaves as a device
  // DeviceSlowdowns(...)[k] times slower than this machine (its update is
  // held back, ClientOptions::slowdown), and drops out of a task after
  // training with probability `dropout` (ClientOptions::dropout).
  double slowdown_sigma{0};
  // [federation] over_selection: ServerOptions::over_selection (1 = off).
  double over_selection{1};
  // [federation] mode and FedBuff's settings: ServerOptions::mode, ::async.
  std::string mode{"sync"};
  int concurrency{10};
  int buffer{5};
  double staleness_exponent{0.5};
  int max_staleness{10};
  double straggler_fraction{0};
  double straggler_slowdown{10};
  double dropout{0};

  // [sim] worker threads hosting the virtual clients (0 = one per core),
  // results folder, client heartbeat interval.
  int workers{0};
  // The server's --ingest-threads (0 = one per core).
  int ingest_threads{0};
  std::string out{"runs/sim"};
  double heartbeat{5.0};
  // Pins the kernels and threads that differ between CPUs, and deterministic
  // algorithms (common/reproducible.h); trains slower (docs/simulations.md,
  // "Exact aggregation and reproducible runs").
  bool reproducible{false};

  // [topology] relay aggregators between the server and the clients: the
  // server selects every relay each round ([federation] fraction then applies
  // to each relay's clients), and averages their partial aggregates.
  int relays{0};
  std::string relay_strategy{"fedavg"};

  // [security] Run as a deployment does: the server and every virtual client
  // get a generated identity (written under out/keys), the server enrolls all
  // clients, connections use CURVE and every message is signed. Off: plaintext
  // loopback, unsigned (the server logs that it is insecure).
  bool secure{false};
};

// Reads a TOML file into `config` (keys absent from the file keep their values).
Status LoadSimConfig(const std::string& path, SimConfig* config);

// Checks ranges and combinations; InvalidArgument naming the key.
Status ValidateSimConfig(const SimConfig& config);

// The config as TOML, loadable by LoadSimConfig.
std::string SimConfigToToml(const SimConfig& config);

// Per virtual client: max(1, exp(sigma x z)) with z standard normal (a
// log-normal slowdown whose median device is this machine), times
// `straggler_slowdown` for round(straggler_fraction x clients) of them chosen
// at random; all from `seed`.
// Capped at kMaxDeviceSlowdown (what ClientOptions::slowdown accepts).
constexpr double kMaxDeviceSlowdown = 1000;
std::vector<double> DeviceSlowdowns(const SimConfig& c);

}  // namespace fl

#endif  // FEDGE_EXPERIMENTS_SIM_SIM_CONFIG_H_
