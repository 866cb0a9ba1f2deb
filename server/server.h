// The aggregator: client registry, rounds, FedAvg, evaluation, checkpoints.
//
// Threads: the caller of Run owns the listening socket and does receive,
// handling, aggregation and checkpoints; it never stops answering for longer
// than one of those steps takes (milliseconds). The ingest threads
// (--ingest-threads) authenticate, decode and check received messages in
// batches beside it; the round log syncs on a thread of its own (group
// commit); evaluation runs on its own thread (BackgroundEvaluator),
// overlapping the next round. How rounds happen is a scheduler's
// (server/scheduler.h, docs/architecture.md). A synchronous round:
//   1. wait until at least min_clients clients are live: heard from within
//      client_timeout on a connection the server can still reach (messages
//      waiting in the socket are read first, so a client that reconnected is
//      known by its new connection);
//   2. select max(1, round(fraction * live)) of them with a seeded RNG;
//   3. send each a TASK (global model, version hash, hyperparameters, deadline);
//      a selected client whose connection is gone, or that reconnects during
//      the round, gets the TASK again on its new connection (once a round);
//   4. collect UPDATEs until every selected client answered or the deadline
//      passed (a client that vanished does not hold the round up);
//   5. FedAvg the accepted deltas, write the checkpoint, hand the new global
//      model to the evaluator when a test set is configured; the round's row of
//      rounds.csv (and the RoundCallback) follow when its evaluation is done,
//      in round order.
// After the last round (and its evaluation) every known client gets DONE.
//
// Transport: ZeroMQ CURVE unless `insecure`; the handshake admits only the
// CURVE keys of enrolled devices, and a message is accepted only when its
// signer is the device whose CURVE key the connection authenticated.
//
// Every incoming message is checked in the order bound, authenticate, decode
// (see crypto/message.h). Anything refused gets a REJECT with a reason code, a
// log line (the first few per reason and round) and a per-reason counter in the
// round's metrics; it never touches the global model, and the server carries on.
#ifndef FEDGE_SERVER_SERVER_H_
#define FEDGE_SERVER_SERVER_H_

#include <atomic>
#include <cmath>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "common/clock.h"
#include "common/data_loader.h"
#include "common/status.h"
#include "common/wire/messages.h"
#include "server/aggregator.h"
#include "server/async_tasks.h"
#include "server/evaluator.h"
#include "server/round_metrics.h"
#include "transport/transport.h"

namespace fl {

class RelayLink;
class ServerMetrics;

// Defaults of the update checks (see ServerOptions and docs/protocol.md).
constexpr double kDefaultUpdateNormFactor = 10.0;
constexpr int64_t kDefaultMaxExamples = 1000000;
constexpr double kDefaultMaxWeightRatio = 10.0;

struct ServerOptions {
  // Endpoint to listen on.
  std::string bind{"tcp://*:5555"};
  // Architecture of the global model (model zoo name). May be empty when
  // `model_file` is set: the file names it.
  std::string model{"mnist_cnn"};
  // Seed of the initial model and of client selection.
  uint64_t seed{1};
  // Rounds to run.
  int rounds{10};
  // Clients that must be active before a round starts.
  int min_clients{2};
  // Fraction C of active clients selected each round.
  double fraction{0.1};
  // Over-selection (Bonawitz et al. 2019): select ceil(over_selection x
  // target) devices, where target = max(1, round(fraction x live)); the round
  // closes once `target` updates are in, and the devices still training are
  // told (REJECT "not_needed" about their TASK) so they do not upload.
  // 1 = off. Not with privacy (Poisson sampling).
  double over_selection{1};
  // The scheduler: "sync", rounds as above; or "async", buffered
  // asynchronous FL (FedBuff; server/async_tasks.h): `async.concurrency`
  // devices train at all times, each on the model of the step it got its
  // task in; every `async.buffer` accepted updates (each scaled by its
  // staleness weight) the model steps, and the step is a "round" of
  // rounds.csv, the checkpoint and the evaluation. A task not answered within
  // round_deadline_seconds is given up. Not with privacy, federated pruning
  // or over-selection.
  std::string mode{"sync"};
  AsyncOptions async;
  // Seconds a round waits for updates.
  double round_deadline_seconds{120};
  // A client not heard from for this long is not selected.
  double client_timeout_seconds{15};
  // Local training hyperparameters sent with each TASK.
  wire::TrainConfig train;
  // Client learning-rate schedule: round r's TASK carries
  // max(train.lr * lr_decay^(r-1), lr_min). 1 = constant.
  double lr_decay{1};
  double lr_min{0};
  // How the round's updates become the next global model (server/aggregator.h):
  // FedAvg by default; its server_lr is the server learning rate.
  StrategyOptions strategy;
  // Central differential privacy (server/privacy.h); off unless its noise
  // multiplier is > 0. Selection is then Poisson sampling at rate `fraction`.
  PrivacyOptions privacy;
  // Start round 1 from this compressed model file (.flm, from fl-compress)
  // instead of a freshly initialised model; its masks become the federation's.
  std::string model_file;
  // When set (a NAME.pub), `model_file` must be signed by that identity.
  std::string model_signer;
  // Prune the initial model by magnitude to this sparsity before round 1
  // (0 = dense; ignored when resuming or starting from a model file).
  double sparsity{0.0};
  // Rank weights across all layers (true) or prune each layer to `sparsity`.
  bool global_pruning{true};
  // Layer-wise sparsity by Erdos-Renyi-Kernel (common/model_state.h) instead
  // of `global_pruning`, at initialisation and when the mask tightens.
  bool erk{false};
  // Federated pruning: after each of rounds 1..prune_rounds the global model
  // is pruned by magnitude (of the aggregated weights) on Zhu & Gupta's
  // gradual schedule, from the starting model's sparsity to `prune_to`; the
  // next TASK carries the new mask (0 = the mask never changes).
  double prune_to{0};
  // On-device transfer learning: comma-separated shell patterns of the
  // tensors that train ("fc2.*"); the others stay as the starting model has
  // them, and deltas (uplink, aggregation, strategy state) cover the kept
  // values of the trainable tensors only. Empty: everything trains.
  std::string trainable;
  int prune_rounds{0};
  // How the TASK carries the global model's kept values: fp32 or fp16.
  wire::ValueFormat downlink{wire::ValueFormat::kFp32};
  // The data whose test split evaluates the global model after each round
  // (common/data_loader.h: an IDX folder, a CSV file, class folders, with
  // --test-data / --test-fraction / --normalize); empty path = no evaluation.
  DataOptions data;
  // The federation's class names by label index, comma-separated, sent in
  // every TASK so that devices number their classes alike (class folders,
  // CSV text labels). Empty: those of the test data when it has names.
  std::string class_names;
  // Evaluate every this many rounds (and always after the last).
  int eval_every{1};
  // LibTorch intra-op threads of the evaluation thread.
  int eval_threads{1};
  // Threads that authenticate, decode and check received updates (the
  // server's own thread included); 0 = one per core, at most 8 (IngestThreads).
  int ingest_threads{0};
  // Test hook: seconds added to every evaluation, standing in for a slow
  // server (fl-server --debug-eval-delay).
  double debug_eval_delay_seconds{0};
  // Test hook (fl-server --debug-crash-at POINT:N): SIGKILL the process the
  // N-th time it passes POINT: "ack" (after sending an ACK), "checkpoint",
  // "log_removed", "model_file" (after writing them for round N).
  std::string debug_crash_point;
  uint64_t debug_crash_count{0};
  // Folder for rounds.csv and checkpoint.fl; empty = write nothing.
  std::string out_dir;
  // Continue from out_dir/checkpoint.fl when it exists.
  bool resume{false};
  // Largest frame accepted (bounds every incoming message before it is read).
  size_t max_frame_bytes{64u << 20};
  // After DONE, keep answering late clients with DONE for this long.
  double done_linger_seconds{2.0};
  // Log each round at info level.
  bool verbose{true};
  // Enrollment: a folder of client public keys (PEM, one file per device,
  // made by fl-keygen). When set, only messages from enrolled node ids with a
  // valid signature are accepted; the folder is re-read at every round, so
  // adding or removing a device is adding or removing a file. Empty = open.
  std::string clients_dir;
  // Refuse an update whose delta has an L2 norm above this. 0 = the bound is
  // derived: update_norm_factor times the L2 norm of the run's starting model
  // (kept values; fixed for the run, so accepted updates cannot ratchet it up;
  // kept in the checkpoint). Both 0 = no bound.
  double max_update_norm{0};
  double update_norm_factor{kDefaultUpdateNormFactor};
  // An update counts with at most this many examples (its weight in the
  // average), whatever the device claims.
  int64_t max_examples{kDefaultMaxExamples};
  // ... and at most this many times the median examples the round's selected
  // devices registered with (0 = no relative cap), so one device cannot
  // outweigh the rest of the round by claiming a huge dataset.
  double max_weight_ratio{kDefaultMaxWeightRatio};
  // Transfer windows (server/transfer_window.h): the update bytes, and over
  // CURVE the TASK bytes, that may be on their way at once. Clients that read
  // payload extensions ask (READY) before they upload and confirm each TASK, so
  // updates that finish together, and per-connection encrypted copies of the
  // TASK, do not all sit in memory at once. One transfer is always allowed.
  // 0 = off (every client gets its TASK and sends its UPDATE at once).
  size_t transfer_window_bytes{16u << 20};
  // Plaintext TASKs through the transfer window too. A plaintext TASK is one
  // buffer the server shares among its sends, so the server does not need
  // it; a simulation does, where the receiving clients' copies are in the
  // same machine's memory.
  bool window_plaintext_tasks{false};
  // Connections the transport holds at once: a handshake past it is refused
  // (counted as connection_cap) and the connection closed. A connection that
  // has not finished its handshake within 10 s is closed. Lowered to fit the
  // process's file descriptor limit. 0 = as many as that limit allows.
  int max_connections{10000};
  // Memory the aggregation rule may hold for the round's deltas. The mean
  // streams (8 B per kept value whatever the count); the robust rules keep
  // every delta (K x 4 B per kept value), so with them a round selects at
  // most max_aggregation_bytes / (4 x kept values) devices.
  size_t max_aggregation_bytes{size_t{2} << 30};
  // Devices the server keeps track of at once. A HELLO from a new device when
  // the registry is full evicts the device heard from least recently that is
  // neither live nor in the open round, or is refused (registry_full).
  size_t max_clients{10000};
  // Largest magnitude a parameter of the global model may take. An update that
  // would move one beyond it is refused (out_of_range). The default is what
  // an fp16 TASK carries, so a model stays sendable either way.
  double max_param_value{65504.0};
  // When set, the server re-reads the enrollment folder as soon as it finds
  // this flag true (and clears it): fl-server sets it on SIGHUP.
  std::atomic<bool>* reload_enrollment{nullptr};
  // The server's identity (NAME.key from fl-keygen): its Ed25519 key signs
  // every message and model file the server sends or writes, and its CURVE key
  // encrypts the transport.
  std::string key_path;
  // Relay aggregator (server/relay_link.h): the rounds come from a parent
  // aggregator through this link, not from `rounds`: each is the parent's
  // round, model and hyperparameters, run for this server's devices, and its
  // result (the exact sum of the devices' weighted deltas, their total
  // weight and count) goes back up.
  // Null: a root. Not owned.
  RelayLink* parent{nullptr};
  // Prometheus metrics (server/metrics.h, fl-server --metrics-port) the
  // server records into; null: none.
  ServerMetrics* metrics{nullptr};
  // The server's time: deadlines, timeouts, windows, the evaluation delay.
  // Null: the steady clock. A test of a whole federation in simulated time
  // passes its transport::SimulatedNetwork. Not owned.
  const Clock* clock{nullptr};
  // Root (or a relay with relays below it): a folder of enrolled relay
  // aggregators' public keys (NAME.pub, admitted like --clients); their
  // UPDATEs may be partial aggregates. "any" (with `insecure` only): any
  // participant may send one. Empty: no relays.
  std::string relays_dir;
  // Most devices one relay's partial aggregate may average (the default is
  // the most a relay tracks, max_clients); its weight is at most its devices
  // times max_examples.
  int relay_devices{10000};
  // ZeroMQ's own heartbeats on every connection (ClientOptions::
  // transport_heartbeats says why a simulation turns them off).
  bool transport_heartbeats{true};
  // Plaintext, unauthenticated transport (no CURVE). Off by default: a server
  // then needs `key_path` (with a CURVE key) and `clients_dir`, and admits a
  // connection only from a CURVE key that an enrolled device's .pub lists.
  // For local experiments only; the server says so loudly in its log.
  bool insecure{false};
};

// The checks Server::Create makes of `o` that need nothing but `o` (ranges,
// the modes that combine, the strategy's and privacy's parameters): a tool
// refuses bad settings with them before it reads any data (fl-sim).
// InvalidArgument naming the flag.
Status CheckServerOptions(const ServerOptions& o);

class Server final {
 public:
  // Binds the socket, builds or resumes the global model, loads the test set.
  // `runtime` makes the initial model and the evaluator (TorchRuntime() from
  // server/torch_runtime.h for the model zoo).
  static Result<std::unique_ptr<Server>> Create(ServerOptions options,
                                                std::shared_ptr<transport::Context> context,
                                                const ModelRuntime& runtime);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // The bound endpoint (useful with "tcp://127.0.0.1:*").
  std::string endpoint() const;

  // The round the run will start at (1, or the checkpoint's round + 1).
  uint64_t first_round() const;

  // Runs until all rounds are done or `*stop` becomes true (then the current
  // round is abandoned; the last checkpoint stays). `on_round` may be null.
  Result<ServerSummary> Run(const std::atomic<bool>* stop, const RoundCallback& on_round);

 private:
  struct Impl;
  explicit Server(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// The ingest threads --ingest-threads N gives: N, or for 0 one per core
// (std::thread::hardware_concurrency), at most 8.
int IngestThreads(int requested);

// The client learning rate round `round` (1-based) sends in its TASK:
// max(train.lr * lr_decay^(round-1), lr_min), and never below the smallest
// normal float (clients train in float; a TASK with lr 0 is refused).
double RoundLearningRate(const ServerOptions& o, int round);

}  // namespace fl

#endif  // FEDGE_SERVER_SERVER_H_
