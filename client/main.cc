// fl-client: a federated learning edge client.
//
// Connects to an fl-server, registers, trains on each TASK with its local data,
// sends back the delta, and exits 0 when the server says DONE. Follows a
// restarted server by reconnecting with backoff.
//
//   fl-client --server tcp://aggregator:5555 --id edge-17 --data /var/lib/fedge/data
//   fl-client --server tcp://127.0.0.1:5555 --id c3 --partition iid --num-partitions 10
//             --partition-index 3     (a shard of a shared set, for experiments)
//
// Exit codes: 0 the federation finished (DONE) or the client was stopped by a
// signal; 1 a runtime error; 2 bad flags or files; 3 the server refuses this
// client for a reason retrying cannot fix (the message says what to change).
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstring>
#include <thread>

#include "client/local_client.h"
#include "client/schedule.h"
#include "client/session.h"
#include "common/cli_checks.h"
#include "common/cli_config.h"
#include "common/data_flags.h"
#include "common/dataset.h"
#include "common/file_util.h"
#include "common/memory.h"
#include "common/partition.h"
#include "common/process_exit.h"
#include "common/reproducible.h"
#include "common/text.h"
#include "crypto/ed25519.h"
#include "crypto/identity.h"

namespace {

std::atomic<bool> g_stop{false};
void OnSignal(int) { g_stop = true; }

// What the flags set.
struct Cli {
  fl::ClientOptions co;
  fl::DataOptions data;
  std::string model;  // empty: the architecture the server's TASK carries
  std::string partition = "none";
  int num_partitions = 1;
  int partition_index = 0;
  double alpha = 0.5;
  uint64_t seed = 1;
  int threads = 1;
  double max_frame_mb = 64;
  bool quiet = false;
  bool reproducible = false;
  bool insecure = false;
  std::string key_path, server_key_path, root_key_path;
  std::string schedule_hours, debug_window_file;
  int nice_level = 0;
};

// The aggregator and how the device reaches it.
void AddConnectionFlags(CLI::App& app, Cli& c) {
  app.add_option("--server", c.co.server,
                 "Aggregator endpoint, e.g. tcp://10.0.0.5:5555; several, comma-separated "
                 "(relay aggregators): the device fails over to the next when one goes silent")
      ->required();
  app.add_option("--id", c.co.id, "Client id, 1-32 printable characters (default: host-pid)")
      ->capture_default_str();
  app.add_option("--heartbeat", c.co.heartbeat_seconds, "Seconds between HELLOs while idle")
      ->capture_default_str();
  app.add_option("--server-timeout", c.co.server_timeout_seconds,
                 "Seconds of server silence before reconnecting")
      ->capture_default_str();
  app.add_option("--backoff-max", c.co.backoff_max_seconds, "Longest reconnect backoff (s)")
      ->capture_default_str();
  app.add_option("--max-frame-mb", c.max_frame_mb, "Largest frame accepted from the server (MiB)")
      ->capture_default_str();
  app.add_option("--key", c.key_path,
                 "This device's identity, NAME.key from fl-keygen: signs every message, "
                 "authenticates the encrypted connection; its node id becomes the client id");
  app.add_option("--server-key", c.server_key_path,
                 "The server's NAME.pub: the connection must reach this server, and only "
                 "models and messages it signed are accepted (with several --server endpoints, "
                 "one key each, comma-separated, in the same order)");
  app.add_option("--root-key", c.root_key_path,
                 "Under relay aggregators: the root's NAME.pub; a TASK is trained on only when "
                 "the root signed its model (the relay forwards the root's signed envelope)");
  app.add_option("--model-cache", c.co.model_cache_dir,
                 "Without --model: take the server's TorchScript file (signed by --server-key, "
                 "checked before it is loaded) and keep it in this folder");
  app.add_flag("--insecure", c.insecure,
               "Plaintext transport without CURVE (local experiments on a trusted network)");
}

// What the device trains, on which data.
void AddTrainingFlags(CLI::App& app, Cli& c) {
  app.add_option("--data", c.data.path,
                 "This device's training data: an IDX folder (MNIST's file names), a CSV file, "
                 "or class folders of images")
      ->capture_default_str();
  fl::AddDataFormatFlags(app, &c.data);
  app.add_option("--model", c.model,
                 "Architecture the client trains: a model zoo name or a TorchScript file (.pt) "
                 "(default: the one the server sends; give it to refuse a federation that "
                 "trains something else)");
  app.add_option("--partition", c.partition,
                 "Use one shard of --data instead of all of it: none | iid | shards | dirichlet")
      ->capture_default_str();
  app.add_option("--num-partitions", c.num_partitions, "Shards --data is split into")
      ->capture_default_str()
      ->check(fl::cli::Positive());
  app.add_option("--partition-index", c.partition_index, "Which shard this client holds")
      ->capture_default_str()
      ->check(fl::cli::NonNegative());
  app.add_option("--alpha", c.alpha, "Dirichlet concentration (--partition dirichlet)")
      ->capture_default_str();
  app.add_option("--seed", c.seed, "Partition seed (must match the other clients')")
      ->capture_default_str();
  app.add_option("--threads", c.threads, "Intra-op threads for training")
      ->capture_default_str()
      ->check(fl::cli::Positive());
  app.add_option("--progress-every", c.co.progress_seconds,
                 "Seconds between progress lines of a training round (percent done, ETA); 0: none")
      ->capture_default_str()
      ->check(fl::cli::NonNegative());
}

// The device as a service: its state, its window, its priority; and the
// experiments' slow and flaky devices.
void AddDeviceFlags(CLI::App& app, Cli& c) {
  app.add_option("--state-dir", c.co.state_dir,
                 "Keep the device's error-feedback residual, counters and effective configuration "
                 "here across restarts (the service: /var/lib/fedge/client)");
  app.add_option("--schedule-hours", c.schedule_hours,
                 "Train only in this daily window of local time, START-END (22-6: overnight); "
                 "outside it the device leaves the federation once its round is done, and "
                 "comes back when the window opens");
  app.add_option("--schedule-nice", c.nice_level,
                 "Lower this process's CPU priority by this much (0-19; the service's unit also "
                 "sets Nice= and CPUQuota=)")
      ->check(CLI::Range(0, 19));
  app.add_option("--slowdown", c.co.slowdown,
                 "Behave as a device this many times slower: each update goes out (slowdown - 1) "
                 "x its training time later (for experiments with slow devices; 1 = as fast as "
                 "this machine)")
      ->capture_default_str()
      ->group("Experiments");
  app.add_option("--dropout", c.co.dropout,
                 "Probability of dropping out of a task after training it: the update is never "
                 "sent (for experiments with flaky devices)")
      ->capture_default_str()
      ->group("Experiments");
  app.add_option("--fault-seed", c.co.fault_seed, "Seed of the --dropout draws")
      ->capture_default_str()
      ->group("Experiments");
  // Test hooks: a device whose training outlasts the timeouts; a window.
  app.add_option("--debug-train-delay", c.co.debug_train_delay_seconds,
                 "Seconds added to every local training (testing a slow device)")
      ->group("");
  app.add_option("--debug-window-open-while", c.debug_window_file,
                 "Test hook: the training window is open while this file exists")
      ->group("");
  app.add_flag("--quiet", c.quiet, "Log warnings and errors only");
  app.add_flag("--reproducible", c.reproducible, fl::kReproducibleHelp);
}

// The device's identity and the servers' pinned keys (--server a,b,c with
// --server-key a.pub,b.pub,c.pub for failover), into `c->co`. InvalidArgument
// naming the flag that is wrong.
fl::Status LoadKeys(Cli* c, std::unique_ptr<fl::SigningKey>* key) {
  fl::ClientOptions& co = c->co;
  if (!c->key_path.empty()) {
    auto id = c->insecure ? fl::LoadIdentity(c->key_path) : fl::LoadIdentityWithCurve(c->key_path);
    if (!id.ok()) return fl::Status::InvalidArgument("--key", id.status().ToString());
    *key = std::make_unique<fl::SigningKey>(std::move(id->signing));
    co.key = key->get();
    co.id = fl::NodeId((*key)->public_key());
    if (!c->insecure) {
      co.curve.secret_key = fl::KeyBytes(id->curve->secret_key);
      co.curve.public_key = fl::KeyBytes(id->curve->public_key);
    }
  }
  const std::vector<std::string> endpoints = fl::SplitList(co.server, ',');
  const std::vector<std::string> key_paths = fl::SplitList(c->server_key_path, ',');
  if (endpoints.empty()) return fl::Status::InvalidArgument("--server", "no endpoint given");
  for (const auto& endpoint : endpoints) {
    if (fl::Status st = fl::transport::CheckConnectEndpoint(endpoint); !st.ok()) {
      return fl::Status::InvalidArgument("--server", st.message());
    }
  }
  if (!key_paths.empty() && key_paths.size() != endpoints.size()) {
    return fl::Status::InvalidArgument(
        "--server names " + std::to_string(endpoints.size()) + " endpoint(s) but --server-key " +
        std::to_string(key_paths.size()) + " key(s): one key per server");
  }
  co.server = endpoints[0];
  for (size_t i = 1; i < endpoints.size(); ++i) co.alternates.push_back({endpoints[i], {}, {}});
  for (size_t i = 0; i < key_paths.size(); ++i) {
    auto pub = c->insecure ? fl::LoadPublicIdentity(key_paths[i])
                           : fl::LoadPublicIdentityWithCurve(key_paths[i]);
    if (!pub.ok()) return fl::Status::InvalidArgument("--server-key", pub.status().ToString());
    const std::string curve = c->insecure ? "" : fl::KeyBytes(*pub->curve);
    if (i == 0) {
      co.server_key = pub->signing;
      if (!c->insecure) co.curve.server_key = curve;
    } else {
      co.alternates[i - 1].server_key = pub->signing;
      co.alternates[i - 1].curve_server_key = curve;
    }
  }
  if (!c->root_key_path.empty()) {
    auto root = fl::LoadPublicIdentity(c->root_key_path);
    if (!root.ok()) return fl::Status::InvalidArgument("--root-key", root.status().ToString());
    co.root_key = root->signing;
  }
  return fl::Status::OK();
}

// The samples of `train` this device holds: all, or its shard (--partition).
fl::Result<std::vector<int64_t>> ShardOf(const Cli& c, const fl::Dataset& train) {
  std::vector<int64_t> indices;
  if (c.partition == "none") {
    indices.resize(train.count);
    for (int64_t i = 0; i < train.count; ++i) indices[i] = i;
    return indices;
  }
  auto scheme = fl::ParsePartitionScheme(c.partition);
  if (!scheme.ok()) return fl::Status::InvalidArgument("--partition", scheme.status().message());
  if (c.partition_index >= c.num_partitions) {
    return fl::Status::InvalidArgument("--partition-index " + std::to_string(c.partition_index) +
                                       " must be below --num-partitions " +
                                       std::to_string(c.num_partitions));
  }
  fl::PartitionOptions po;
  po.scheme = *scheme;
  po.clients = c.num_partitions;
  po.alpha = c.alpha;
  po.seed = c.seed;
  auto parts = fl::MakePartition(train.labels, train.num_classes, po);
  if (!parts.ok()) return parts.status().WithContext("partition");
  return (*parts)[c.partition_index];
}

// One session per stay in the training window: outside it the device is gone
// from the federation (the server stops counting it live), and what it must
// keep across the gap is in --state-dir. Returns the exit code.
int RunInWindows(const Cli& c, const fl::TrainingWindow& window, fl::Participant* client) {
  const auto in_window = [&] {
    if (!c.debug_window_file.empty()) return access(c.debug_window_file.c_str(), F_OK) == 0;
    return window.Contains(fl::LocalHour());
  };
  std::signal(SIGINT, OnSignal);
  std::signal(SIGTERM, OnSignal);
  auto ctx = fl::transport::CreateZmqContext();
  fl::ClientStats s;
  while (!g_stop.load()) {
    if (!in_window()) {
      spdlog::info("outside the training window ({}); waiting for it",
                   c.debug_window_file.empty()
                       ? window.ToString() + " local time"
                       : "--debug-window-open-while " + c.debug_window_file);
      while (!g_stop.load() && !in_window()) {
        std::this_thread::sleep_for(std::chrono::milliseconds(250));
      }
      if (g_stop.load()) break;
      spdlog::info("the training window is open; joining");
    }
    fl::ClientSession session(c.co, ctx, client);
    fl::Status st = session.Start();
    if (st.ok()) st = fl::RunClient(&session, ctx, &g_stop, [&] { return !in_window(); });
    if (!st.ok()) {
      spdlog::error("client {}: {}", c.co.id, st.ToString());
      return st.code() == fl::Status::Code::kFailedPrecondition ? 3 : 1;
    }
    s.Add(session.stats());
    if (session.done() || g_stop.load()) break;
    spdlog::info("client {}: the training window closed; leaving the federation until it opens",
                 c.co.id);
  }
  spdlog::info(
      "client {} exiting: {} rounds trained, {} updates accepted, {} rejected, "
      "{} reconnects, {} failed handshakes, {} bytes sent, {} received, {:.2f} s training{}",
      c.co.id, s.rounds_trained, s.updates_accepted, s.updates_rejected, s.reconnects,
      s.handshake_failures, s.bytes_sent, s.bytes_received, s.train_seconds,
      s.dropped_out ? fmt::format(", {} tasks dropped out of", s.dropped_out) : std::string());
  return 0;
}

// Checks what the flags ask for, before anything is loaded: --reproducible
// (re-executes the process), the transport's keys. The exit code when the
// run cannot go on, else 0.
int CheckFlags(const Cli& c, char** argv) {
  if (c.reproducible) {
    if (c.threads != 1) {
      // (Several threads split a sum in another order.)
      spdlog::error("--reproducible trains on one thread; drop --threads {}", c.threads);
      return 2;
    }
    if (const fl::Status st = fl::BecomeReproducible(argv); !st.ok()) {
      spdlog::error("{}", st.ToString());
      return 2;
    }
  }
  if (!c.insecure && (c.key_path.empty() || c.server_key_path.empty())) {
    spdlog::error(
        "the connection is encrypted and authenticated by default: give this device's identity "
        "(--key NAME.key from fl-keygen) and the server's public key (--server-key SERVER.pub), "
        "or pass --insecure for a local experiment on a trusted network");
    return 2;
  }
  return 0;
}

}  // namespace

static int ClientMain(int argc, char** argv) {
  fl::UseOneMallocArena();
  Cli c;
  c.data.path = FL_DEFAULT_DATA_DIR;
  char host[64] = "client";
  gethostname(host, sizeof(host) - 1);
  c.co.id = std::string(host).substr(0, 20) + "-" + std::to_string(getpid());
  CLI::App app{"fl-client: federated learning edge client (trains locally, sends deltas)"};
  AddConnectionFlags(app, c);
  AddTrainingFlags(app, c);
  AddDeviceFlags(app, c);
  fl::AddConfigFile(&app);
  CLI11_PARSE(app, argc, argv);
  if (const int code = CheckFlags(c, argv); code != 0) return code;
  if (c.quiet) spdlog::set_level(spdlog::level::warn);
  if (c.reproducible) spdlog::info("reproducible: {}", fl::DescribeReproducibleSettings());
  spdlog::info("effective configuration (--config FILE takes these keys):\n{}",
               fl::EffectiveConfig(app));
  c.co.max_frame_bytes = static_cast<size_t>(c.max_frame_mb * (1 << 20));
  if (c.insecure) {
    spdlog::warn(
        "INSECURE TRANSPORT (--insecure): the connection to {} is not encrypted; "
        "use this for local experiments only",
        c.co.server);
  }
  std::unique_ptr<fl::SigningKey> key;
  if (fl::Status st = LoadKeys(&c, &key); !st.ok()) {
    spdlog::error("{}", st.message());
    return 2;
  }
  auto splits = fl::LoadData(c.data, /*need_train=*/true, /*need_test=*/false);
  if (!splits.ok()) {
    spdlog::error("loading local data: {}", splits.status().ToString());
    return 1;
  }
  spdlog::info("data {}: {}", c.data.path, fl::DescribeData(*splits));
  auto indices = ShardOf(c, splits->train);
  if (!indices.ok()) {
    spdlog::error("{}", indices.status().message());
    return 2;
  }
  auto client = fl::LocalClient::Create(c.model, splits->train, *indices, c.threads);
  if (!client.ok()) {
    spdlog::error("{}", client.status().ToString());
    return 2;
  }
  spdlog::info("client {}: {} training samples, model {}, server {}", c.co.id, indices->size(),
               c.model.empty() ? "from the server" : c.model, c.co.server);
  if (!c.co.state_dir.empty()) {
    if (fl::Status st = fl::WriteEffectiveConfig(app, "fl-client", c.co.state_dir); !st.ok()) {
      spdlog::error("--state-dir: {}", st.ToString());
      return 2;
    }
  }
  if (c.nice_level > 0) {
    errno = 0;
    if (nice(c.nice_level) == -1 && errno != 0) {
      spdlog::warn("--schedule-nice {}: {}", c.nice_level, std::strerror(errno));
    } else {
      spdlog::info("CPU priority lowered by {} (nice)", c.nice_level);
    }
  }
  auto window = fl::ParseTrainingWindow(c.schedule_hours);
  if (!window.ok()) {
    spdlog::error("{}", window.status().message());
    return 2;
  }
  if (!window->always() && c.co.state_dir.empty()) {
    spdlog::warn(
        "--schedule-hours without --state-dir: the error-feedback residual is not kept while "
        "the device is away; it starts from none each time the window opens");
  }
  return RunInWindows(c, *window, client->get());
}

// LibTorch's static teardown is skipped: common/process_exit.h.
int main(int argc, char** argv) { fl::ExitWithoutStaticTeardown(ClientMain(argc, argv)); }
