// fl-sim: a federated experiment on one machine. The real fl-server code and K
// virtual fl-clients, talking over real ZeroMQ sockets on 127.0.0.1; the
// clients are hosted by a small pool of worker threads (default one per core),
// each driving many client sessions and training them one at a time.
//
//   fl-sim --config experiments/configs/quick.toml
//   fl-sim --config experiments/configs/fedavg_cnn_iid.toml --rounds 30 --out runs/iid
//
// Writes to --out: rounds.csv, summary.json, config.toml (the effective config),
// the server's checkpoint.fl and global.flm, and with [security] secure = true
// the generated identities under keys/. --resume continues the run in --out
// from its last checkpoint (same config; --rounds may grow).
#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <optional>
#include <sstream>
#include <thread>

#include "client/local_client.h"
#include "client/session.h"
#include "common/clock.h"
#include "common/codec.h"
#include "common/data_loader.h"
#include "common/dataset.h"
#include "common/file_util.h"
#include "common/partition.h"
#include "common/reproducible.h"
#include "common/text.h"
#include "crypto/ed25519.h"
#include "crypto/identity.h"
#include "crypto/sha256.h"
#include "experiments/sim/adversary.h"
#include "experiments/sim/mpi_world.h"
#include "experiments/sim/sim_config.h"
#include "experiments/sim/sim_report.h"
#include "relay/relay.h"
#include "server/server.h"
#include "server/torch_runtime.h"

namespace fl {
namespace {

std::atomic<bool> g_stop{false};
void OnSignal(int) { g_stop = true; }

// Lets one process hold a socket per virtual client.
void RaiseFileLimit() {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

// Identities of a secure simulation: one per virtual client, plus the server's
// public keys every client pins.
struct SimIdentities {
  std::vector<SigningKey> signing;
  std::vector<CurveKeyPair> curve;
  Ed25519PublicKey server_signing{};
  CurveKey server_curve{};
  // [topology] relays: each relay's public keys, which its clients pin.
  std::vector<Ed25519PublicKey> relay_signing;
  std::vector<CurveKey> relay_curve;
};

// 32 key bytes derived from the run's seed: SHA-256("fedge-sim" | what | seed | index).
// Simulation keys are reproducible so that a secure run is too (node ids decide
// the clients' shuffles and the selection order); they protect nothing and are
// never meant for a deployment, where fl-keygen draws keys from the OS.
Sha256Digest SimKeyBytes(const char* what, uint64_t seed, int index) {
  const std::string label =
      std::string("fedge-sim|") + what + "|" + std::to_string(seed) + "|" + std::to_string(index);
  return Sha256(label);
}

Result<SigningKey> SimSigningKey(uint64_t seed, int index) {
  Sha256Digest b = SimKeyBytes("ed25519", seed, index);
  return SigningKey::FromSeed(b.data(), b.size());
}

Result<CurveKeyPair> SimCurveKey(uint64_t seed, int index) {
  CurveKeyPair kp;
  const Sha256Digest b = SimKeyBytes("curve25519", seed, index);
  std::copy(b.begin(), b.end(), kp.secret_key.begin());
  auto pub = CurvePublicFromSecret(kp.secret_key);
  if (!pub.ok()) return pub.status();
  kp.public_key = *pub;
  return kp;
}

// Makes the server's identity (out/keys/server.key, .pub) and one per virtual
// client, enrolling each client's public keys in out/keys/enrolled, and one per
// relay (out/keys/relay-J.key), enrolled at the server in out/keys/relays.
// Index -1 is the server, -2 - J relay J.
Status MakeIdentities(int clients, int relays, uint64_t seed, const std::string& dir,
                      SimIdentities* ids) {
  if (relays > 0) FL_RETURN_IF_ERROR(CreateDirectories(dir + "/relays"));
  for (int j = 0; j < relays; ++j) {
    auto key = SimSigningKey(seed, -2 - j);
    if (!key.ok()) return key.status();
    auto curve = SimCurveKey(seed, -2 - j);
    if (!curve.ok()) return curve.status();
    const std::string name = "relay-" + std::to_string(j);
    std::remove((dir + "/" + name + ".key").c_str());
    FL_RETURN_IF_ERROR(
        SaveIdentity(dir + "/" + name + ".key", dir + "/relays/" + name + ".pub", *key, *curve));
    ids->relay_signing.push_back(key->public_key());
    ids->relay_curve.push_back(curve->public_key);
  }
  FL_RETURN_IF_ERROR(CreateDirectories(dir + "/enrolled"));
  auto server = SimSigningKey(seed, -1);
  if (!server.ok()) return server.status();
  auto server_curve = SimCurveKey(seed, -1);
  if (!server_curve.ok()) return server_curve.status();
  // The simulation's keys follow from its seed: a rerun into the same folder
  // makes the same ones, so the old file goes first (SaveIdentity never
  // replaces a key file).
  std::remove((dir + "/server.key").c_str());
  FL_RETURN_IF_ERROR(
      SaveIdentity(dir + "/server.key", dir + "/server.pub", *server, *server_curve));
  ids->server_signing = server->public_key();
  ids->server_curve = server_curve->public_key;
  for (int k = 0; k < clients; ++k) {
    auto key = SimSigningKey(seed, k);
    if (!key.ok()) return key.status();
    auto curve = SimCurveKey(seed, k);
    if (!curve.ok()) return curve.status();
    char name[32];
    std::snprintf(name, sizeof(name), "/enrolled/sim-%05d.pub", k);
    FL_RETURN_IF_ERROR(SavePublicIdentity(dir + name, key->public_key(), curve->public_key));
    ids->signing.push_back(std::move(key).value());
    ids->curve.push_back(*curve);
  }
  return Status::OK();
}

// One worker thread: hosts `ids` and drives their sessions until all are done.
struct Worker {
  std::vector<int> ids;
  Status status;
  double train_seconds{0};
  int64_t rounds_trained{0};
};

// The virtual clients that poison their updates ([adversary]), and the
// training set with flipped labels that label_flip adversaries train on.
struct Adversaries {
  std::vector<int> ids;  // sorted
  AdversaryKind kind{AdversaryKind::kSignFlip};
  double scale{0};
  std::optional<Dataset> flipped;
  bool Has(int k) const { return std::binary_search(ids.begin(), ids.end(), k); }
};

// Virtual client k reaches endpoints[k mod size] (the server, or its relay).
void RunWorker(const SimConfig& c, const Dataset& train, const Partition& parts,
               const Adversaries& adversaries, const SimIdentities* identities,
               const std::vector<std::string>& endpoints, std::shared_ptr<transport::Context> ctx,
               Worker* w) {
  auto shared = NewSharedModel(c.model);
  if (!shared.ok()) {
    w->status = shared.status();
    return;
  }
  std::vector<std::unique_ptr<Participant>> clients;
  std::vector<std::unique_ptr<ClientSession>> sessions;
  const std::vector<double> slowdowns = DeviceSlowdowns(c);
  for (int k : w->ids) {
    const bool poisons = adversaries.Has(k);
    const Dataset& data = poisons && adversaries.flipped ? *adversaries.flipped : train;
    auto lc = LocalClient::Create(c.model, data, parts[k], /*threads=*/1, *shared);
    if (!lc.ok()) {
      w->status = lc.status().WithContext("virtual client " + std::to_string(k));
      return;
    }
    std::unique_ptr<Participant> participant = std::move(lc).value();
    if (poisons) {
      participant = std::make_unique<AdversarialParticipant>(std::move(participant),
                                                             adversaries.kind, adversaries.scale);
    }
    ClientOptions co;
    const size_t at = static_cast<size_t>(k) % endpoints.size();
    co.server = endpoints[at];
    char id[32];
    std::snprintf(id, sizeof(id), "sim-%05d", k);
    co.id = id;
    if (identities) {
      // As a deployed device: its own keys, the server's pinned.
      const SigningKey& key = identities->signing[k];
      co.key = &key;
      co.id = NodeId(key.public_key());
      const bool relayed = !identities->relay_signing.empty();
      co.server_key = relayed ? identities->relay_signing[at] : identities->server_signing;
      co.curve.secret_key = KeyBytes(identities->curve[k].secret_key);
      co.curve.public_key = KeyBytes(identities->curve[k].public_key);
      co.curve.server_key =
          KeyBytes(relayed ? identities->relay_curve[at] : identities->server_curve);
    }
    co.heartbeat_seconds = c.heartbeat;
    // Heterogeneous devices ([devices]): held-back updates and dropouts.
    co.slowdown = slowdowns[static_cast<size_t>(k)];
    co.dropout = c.dropout;
    co.fault_seed = c.seed;
    // A worker trains its clients one after another, so a client can stay
    // silent for many rounds' worth of training; never give up on the server.
    co.server_timeout_seconds = 1e9;
    // One machine, loopback: a peer cannot vanish without closing its
    // connection, so ZeroMQ's heartbeats would find nothing; each costs a
    // timer in ZeroMQ's I/O thread, thousands of them here.
    co.transport_heartbeats = false;
    co.verbose = false;
    clients.push_back(std::move(participant));
    sessions.push_back(std::make_unique<ClientSession>(co, ctx, clients.back().get()));
    Status st = sessions.back()->Start();
    if (!st.ok()) {
      w->status = st;
      return;
    }
  }
  std::vector<transport::Socket*> socks;
  std::vector<size_t> index;
  std::vector<bool> ready;
  while (!g_stop) {
    socks.clear();
    index.clear();
    double due = 0.2;
    for (size_t i = 0; i < sessions.size(); ++i) {
      if (sessions[i]->done() || !sessions[i]->socket()) continue;
      socks.push_back(sessions[i]->socket());
      index.push_back(i);
      due = std::min(due, sessions[i]->SecondsUntilDue());
    }
    if (socks.empty()) break;  // every client got DONE
    auto r = ctx->Poll(socks, static_cast<int>(due * 1000) + 1, &ready);
    if (!r.ok()) {
      w->status = r.status();
      return;
    }
    for (size_t j = 0; j < socks.size(); ++j) {
      ClientSession* s = sessions[index[j]].get();
      if (ready[j] || s->SecondsUntilDue() <= 0) {
        Status st = s->Step();
        if (!st.ok()) {
          w->status = st.WithContext(s->id());
          return;
        }
      }
    }
  }
  for (const auto& s : sessions) {
    w->train_seconds += s->stats().train_seconds;
    w->rounds_trained += s->stats().rounds_trained;
  }
}

std::vector<std::string> Split(const std::string& line, char sep) {
  std::vector<std::string> fields;
  std::istringstream in(line);
  std::string f;
  while (std::getline(in, f, sep)) fields.push_back(f);
  return fields;
}

// partition = "folders": every sub-folder of `dir` holding training data (an
// IDX folder or class folders, common/data_loader.h) is one device's data, in
// name order, shorter names first (c0, c1, ..., c10 as fl-partition writes
// them). Their samples are concatenated, and `parts` gets each device's index
// range. InvalidArgument when the count is not `clients` or the devices'
// samples differ in shape or kind. No normalisation is applied here.
Result<Dataset> LoadDeviceFolders(const std::string& dir, const DataOptions& data, int clients,
                                  std::vector<std::vector<int64_t>>* parts) {
  namespace fs = std::filesystem;
  std::vector<std::string> names;
  std::error_code ec;
  fs::directory_iterator it(dir, ec), end;
  for (; !ec && it != end; it.increment(ec)) {
    if (IsDataFolder(it->path().string())) names.push_back(it->path().filename().string());
  }
  if (ec) return Status::IOError(dir, ec.message());
  std::sort(names.begin(), names.end(), [](const std::string& a, const std::string& b) {
    return a.size() != b.size() ? a.size() < b.size() : a < b;
  });
  if (static_cast<int>(names.size()) != clients) {
    return Status::InvalidArgument(
        dir, "holds " + std::to_string(names.size()) +
                 " device folders (sub-folders with training data); with data.partition "
                 "= \"folders\", federation.clients (--clients) must be that number");
  }
  Dataset all;
  for (const auto& name : names) {
    DataOptions one = data;
    one.path = dir + "/" + name;
    one.test_path.clear();
    one.test_fraction = 0;
    one.normalize = "none";
    auto splits = LoadData(one, /*need_train=*/true, /*need_test=*/false);
    if (!splits.ok()) return splits.status();
    Dataset& d = splits->train;
    if (d.count == 0) {
      return Status::InvalidArgument(dir + "/" + name, "holds no training samples");
    }
    std::printf("        virtual client %zu: %s (%lld samples)\n", parts->size(), name.c_str(),
                static_cast<long long>(d.count));
    if (all.count == 0) {
      all.shape = d.shape;
      all.floats = d.floats;
      all.class_names = d.class_names;
    } else if (d.shape != all.shape || d.floats != all.floats) {
      return Status::InvalidArgument(
          dir + "/" + name,
          "holds samples of shape " + d.ShapeString() + ", the other devices " + all.ShapeString());
    } else if (d.class_names != all.class_names) {
      // Devices that lack a class (non-IID fleets) are numbered by the union
      // of the devices' classes; the server's TASK renumbers them by its
      // test data's when that has other ones.
      std::vector<std::string> both = all.class_names;
      both.insert(both.end(), d.class_names.begin(), d.class_names.end());
      std::sort(both.begin(), both.end());
      both.erase(std::unique(both.begin(), both.end()), both.end());
      if (all.class_names.empty() != d.class_names.empty()) {
        return Status::InvalidArgument(
            dir + "/" + name,
            "has numeric labels where the first device has class names, or "
            "the other way round");
      }
      FL_RETURN_IF_ERROR(UseClassNames(&all, both, "the devices before " + name));
      FL_RETURN_IF_ERROR(UseClassNames(&d, both, dir + "/" + name));
    }
    std::vector<int64_t> idx(static_cast<size_t>(d.count));
    for (int64_t i = 0; i < d.count; ++i) idx[static_cast<size_t>(i)] = all.count + i;
    parts->push_back(std::move(idx));
    all.count += d.count;
    all.num_classes = std::max(all.num_classes, d.num_classes);
    all.pixels.insert(all.pixels.end(), d.pixels.begin(), d.pixels.end());
    all.features.insert(all.features.end(), d.features.begin(), d.features.end());
    all.labels.insert(all.labels.end(), d.labels.begin(), d.labels.end());
  }
  return all;
}

// --resume: the run in c.out was made with this config (rounds and workers
// aside), and the accuracy of each round its rounds.csv holds.
Status CheckResumableRun(const SimConfig& c, std::vector<std::pair<uint64_t, double>>* earlier) {
  SimConfig before;
  const std::string path = c.out + "/config.toml";
  if (Status st = LoadSimConfig(path, &before); !st.ok()) {
    return Status::InvalidArgument("--resume: no run to continue in " + c.out, st.message());
  }
  // What does not change the model may change: length, reporting, pacing.
  before.rounds = c.rounds;
  before.workers = c.workers;
  before.ingest_threads = c.ingest_threads;
  before.out = c.out;
  before.targets = c.targets;
  before.stop_at_target = c.stop_at_target;
  before.eval_every = c.eval_every;
  before.round_deadline = c.round_deadline;
  before.heartbeat = c.heartbeat;
  const std::string was = SimConfigToToml(before), now = SimConfigToToml(c);
  if (was != now) {
    std::istringstream a(was), b(now);
    std::string la, lb;
    while (std::getline(a, la) && std::getline(b, lb) && la == lb) {
    }
    return Status::InvalidArgument(
        path, "--resume continues a run with the config it was made with; it had '" + la +
                  "', this one has '" + lb + "'");
  }
  std::ifstream in(c.out + "/rounds.csv");
  std::string line;
  std::vector<std::string> header;
  if (std::getline(in, line)) header = Split(line, ',');
  const auto col = std::find(header.begin(), header.end(), "test_accuracy") - header.begin();
  while (std::getline(in, line)) {
    const std::vector<std::string> f = Split(line, ',');
    if (f.size() <= static_cast<size_t>(col) || f[col].empty()) continue;
    earlier->push_back({std::strtoull(f[0].c_str(), nullptr, 10), std::atof(f[col].c_str())});
  }
  return Status::OK();
}

// The virtual clients `hosted`, spread over `nworkers` threads that each run
// RunWorker against the server at `endpoint`. A worker that fails sets
// `failed` and g_stop.
class WorkerFleet {
 public:
  WorkerFleet(const SimConfig& c, const Dataset& train, const Partition& parts,
              const Adversaries& adversaries, const SimIdentities* identities,
              const std::vector<std::string>& endpoints, std::shared_ptr<transport::Context> ctx,
              const std::vector<int>& hosted, int nworkers)
      : workers_(static_cast<size_t>(nworkers)) {
    for (size_t i = 0; i < hosted.size(); ++i) {
      workers_[i % workers_.size()].ids.push_back(hosted[i]);
    }
    for (auto& w : workers_) {
      threads_.emplace_back(
          [this, &c, &train, &parts, &adversaries, identities, endpoints, ctx, w = &w] {
            RunWorker(c, train, parts, adversaries, identities, endpoints, ctx, w);
            // Its clients are gone: the run stops rather than wait for them.
            if (!w->status.ok()) {
              failed = true;
              g_stop = true;
            }
          });
    }
  }
  // Stops the workers (g_stop) and waits for them; the first worker's error.
  Status Join() {
    Stop();
    for (const auto& w : workers_) FL_RETURN_IF_ERROR(w.status);
    return Status::OK();
  }
  ~WorkerFleet() { Stop(); }

  std::atomic<bool> failed{false};

 private:
  void Stop() {
    g_stop = true;
    for (auto& t : threads_) t.join();
    threads_.clear();
  }

  std::vector<Worker> workers_;
  std::vector<std::thread> threads_;
};

// A rank other than 0 of an MPI run: hosts the virtual clients `hosted` on
// `nworkers` threads against the server at `endpoint` until rank 0 says the
// run is over. 0, or 1 when a worker failed (its error printed).
int HostClients(const SimConfig& c, const Dataset& train, const Partition& parts,
                const Adversaries& adversaries, const SimIdentities* identities,
                const std::vector<std::string>& endpoints, std::shared_ptr<transport::Context> ctx,
                const std::vector<int>& hosted, int nworkers, MpiWorld& world) {
  WorkerFleet fleet(c, train, parts, adversaries, identities, endpoints, ctx, hosted, nworkers);
  world.Wait([&] { return fleet.failed.load(); });
  if (Status st = fleet.Join(); !st.ok()) {
    std::fprintf(stderr, "error: rank %d: worker: %s\n", world.rank(), st.ToString().c_str());
    return 1;
  }
  return 0;
}

// [topology] relays: R relay aggregators in this process (relay/relay.h),
// each on a thread of its own, with the sim's federation settings for its
// clients (k mod R).
class Relays {
 public:
  Status Start(const SimConfig& c, const ServerOptions& base, const std::string& keys_dir,
               const std::string& parent, std::shared_ptr<transport::Context> ctx) {
    const int everyone = base.min_clients;
    for (int j = 0; j < c.relays; ++j) {
      ServerOptions ro = base;
      ro.out_dir.clear();
      ro.resume = false;
      ro.data.path.clear();  // the server evaluates
      ro.privacy = PrivacyOptions();
      ro.strategy.name = c.relay_strategy;
      ro.strategy.server_lr = 0;
      const int share = (c.clients - j + c.relays - 1) / c.relays;
      ro.min_clients = std::max(1, static_cast<int>(std::ceil(static_cast<double>(everyone) *
                                                              share / std::max(1, c.clients))));
      ro.min_clients = std::min(ro.min_clients, share);
      ro.relay_devices = share;
      // Each relay its own seed: without keys, a private round's sampling is
      // drawn from it, and relays must not sample their devices alike.
      ro.seed = base.seed * 1000003ULL + static_cast<uint64_t>(j) + 1;
      const std::string name = "relay-" + std::to_string(j);
      if (c.secure) ro.key_path = keys_dir + "/" + name + ".key";
      auto relay = Relay::Create(ro, ctx, TorchRuntime());
      if (!relay.ok()) return relay.status().WithContext(name);
      RelayUplinkOptions up;
      up.parent = parent;
      up.key_path = ro.key_path;
      up.parent_key_path = c.secure ? keys_dir + "/server.pub" : "";
      up.insecure = !c.secure;
      up.id = name;
      up.verbose = false;
      FL_RETURN_IF_ERROR((*relay)->Connect(up, ctx).WithContext(name));
      relays_.push_back(std::move(relay).value());
    }
    // A relay that fails stops the run, as a failing worker does.
    for (auto& relay : relays_) relay->Start(&g_stop, nullptr, &g_stop);
    return Status::OK();
  }
  std::vector<std::string> endpoints() const {
    std::vector<std::string> out;
    for (const auto& relay : relays_) out.push_back(relay->endpoint());
    return out;
  }
  // Waits for the relays (they end with the server's DONE, or g_stop); the
  // first one's error.
  Status Join() {
    Status first;
    for (auto& relay : relays_) {
      Status st = relay->Join();
      if (!st.ok() && first.ok()) first = st;
    }
    relays_.clear();
    return first;
  }
  ~Relays() {
    g_stop = true;
    (void)Join();
  }

 private:
  std::vector<std::unique_ptr<Relay>> relays_;
};

// True when the command line asks for --reproducible, itself or through its
// --config file's [sim] reproducible (read here before anything starts;
// errors in the file are Main's to report).
bool WantsReproducible(int argc, char** argv) {
  std::string config;
  int flag = -1;  // the last --reproducible[=VALUE] given: 1, 0; -1: none
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--reproducible") {
      flag = 1;
    } else if (a.rfind("--reproducible=", 0) == 0) {
      // CLI11's words for a flag's value.
      const std::string v = a.substr(15);
      flag = v == "false" || v == "0" || v == "no" || v == "off" || v == "disable" ? 0 : 1;
    } else if (a == "--config" && i + 1 < argc) {
      config = argv[++i];
    } else if (a.rfind("--config=", 0) == 0) {
      config = a.substr(9);
    }
  }
  if (flag >= 0 || config.empty()) return flag == 1;
  SimConfig c;
  return LoadSimConfig(config, &c).ok() && c.reproducible;
}

int Main(int argc, char** argv, MpiWorld& world) {
  SimConfig c;
  std::string config_path;
  CLI::App app{"fl-sim: a federated learning experiment with K virtual clients on one machine"};
  app.add_option("--config", config_path, "TOML experiment config (see experiments/configs/)");
  // Overrides; each replaces the config file's value when given.
  int rounds = 0, clients = 0, workers = -1, epochs = 0, bits = 0, ingest_threads = -1;
  double sparsity = 0;
  std::string downlink;
  double fraction = 0, lr = 0, alpha = 0;
  uint64_t seed = 0;
  std::string data, out, partition, model;
  bool quiet = false, resume = false;
  auto* o_rounds = app.add_option("--rounds", rounds, "Rounds to run");
  auto* o_clients = app.add_option("--clients,-K", clients, "Number of virtual clients K");
  auto* o_fraction = app.add_option("--fraction,-C", fraction, "Fraction of clients per round");
  auto* o_data = app.add_option(
      "--data", data,
      "Training data: an IDX folder (MNIST's file names), a CSV file, class folders of images, "
      "or with --partition folders a folder of device folders");
  auto* o_seed = app.add_option("--seed", seed, "Seed");
  auto* o_out = app.add_option("--out", out, "Results folder");
  auto* o_workers = app.add_option("--workers", workers, "Worker threads (0 = one per core)");
  auto* o_ingest = app.add_option("--ingest-threads", ingest_threads,
                                  "The server's threads that verify, decode and check updates "
                                  "([sim] ingest_threads; 0 = one per core)");
  auto* o_epochs = app.add_option("--epochs,-E", epochs, "Local epochs");
  auto* o_lr = app.add_option("--lr", lr, "Client learning rate");
  auto* o_partition = app.add_option(
      "--partition", partition,
      "iid | shards | dirichlet | folders (one sub-folder of --data per client) | column "
      "(a CSV column naming each sample's device: [data] group_column)");
  auto* o_alpha = app.add_option("--alpha", alpha, "Dirichlet concentration");
  auto* o_model =
      app.add_option("--model", model, "Model zoo architecture or TorchScript file (.pt)");
  std::string model_file;
  auto* o_model_file = app.add_option("--model-file", model_file, "Start from this .flm file");
  auto* o_sparsity = app.add_option("--sparsity", sparsity, "Prune the initial model to this");
  std::string codec;
  auto* o_codec = app.add_option("--codec", codec,
                                 "Delta codec: q (quantized at --uplink-bits) | sign (1 bit a "
                                 "value, a scale per block)")
                      ->check(CLI::IsMember(CodecNames()));
  auto* o_bits = app.add_option("--uplink-bits", bits, "Delta bits per value: 32, 8, 4, 2 (q), 1 (sign)");
  auto* o_downlink = app.add_option("--downlink", downlink, "Model values in TASKs: fp32 | fp16");
  bool secure = false;
  int relay_count = -1;
  std::string relay_strategy;
  auto* o_relays = app.add_option("--relays", relay_count,
                                  "Relay aggregators between the server and the clients "
                                  "([topology] relays; 0 = none)");
  auto* o_relay_strategy =
      app.add_option("--relay-strategy", relay_strategy,
                     "The relays' rule ([topology] relay_strategy): fedavg, or a robust rule "
                     "applied per relay (median, trimmed_mean, krum, multikrum)");
  auto* o_secure = app.add_flag("--secure", secure,
                                "Identities per virtual client, CURVE transport, signed messages "
                                "([security] secure)");
  std::string strategy, adversary_kind;
  double clip = 0, adversary_fraction = 0, adversary_scale = 0;
  auto* o_strategy = app.add_option("--strategy", strategy,
                                    "Aggregation strategy ([strategy] name): fedavg, fedavgm, "
                                    "fedadagrad, fedadam, fedyogi, fedprox, median, "
                                    "trimmed_mean, krum, multikrum");
  auto* o_clip =
      app.add_option("--clip", clip, "Clip each delta to this L2 norm ([strategy] clip)");
  auto* o_adv_fraction = app.add_option("--adversary-fraction", adversary_fraction,
                                        "Fraction of malicious clients ([adversary] fraction)");
  auto* o_adv_kind =
      app.add_option("--adversary-kind", adversary_kind,
                     "sign_flip | scale | noise | label_flip | same_value ([adversary] kind)");
  auto* o_adv_scale =
      app.add_option("--adversary-scale", adversary_scale, "Attack scale s ([adversary] scale)");
  double dp_noise = 0;
  auto* o_dp_noise = app.add_option("--dp-noise-multiplier", dp_noise,
                                    "DP-FedAvg noise multiplier ([privacy] noise_multiplier)");
  std::string test_data;
  auto* o_test_data = app.add_option(
      "--test-data", test_data,
      "Test split the server evaluates on: an IDX folder (its t10k files), a CSV file or class "
      "folders ([data] test_dir; default the test split of --data)");
  double test_fraction = 0;
  auto* o_test_fraction =
      app.add_option("--test-fraction", test_fraction,
                     "Hold out this fraction of --data as the test split ([data] test_fraction)");
  std::string label_column, normalize;
  auto* o_label = app.add_option("--label-column", label_column,
                                 "CSV data: the label column, by name or 0-based index ([data] "
                                 "label_column; default the last)");
  auto* o_normalize = app.add_option("--normalize", normalize,
                                     "mean,std[,mean,std...], auto (from the training split; "
                                     "default) or none ([data] normalize)");
  std::string trainable;
  auto* o_trainable = app.add_option(
      "--trainable", trainable,
      "Patterns of the tensors that train, e.g. 'fc2.*' ([model] trainable; default all)");
  bool stop_at_target = false;
  auto* o_stop = app.add_flag("--stop-at-target", stop_at_target,
                              "End the run once a round reaches the highest of the targets "
                              "(stop_at_target; resumable)");
  bool reproducible = false;
  auto* o_reproducible =
      app.add_flag("--reproducible", reproducible,
                   std::string(kReproducibleHelp) + " ([sim] reproducible)");
  app.add_flag("--quiet", quiet, "Print only the final table");
  app.add_flag("--resume", resume,
               "Continue the run in --out from its last checkpoint, up to --rounds rounds in all "
               "(the config must be the one the run was made with; only rounds, targets, "
               "stop_at_target, eval_every, round_deadline, heartbeat, workers and "
               "ingest_threads may differ)");
  app.footer(MpiWorld::Built()
                 ? "MPI: built with MPI; mpirun -np N fl-sim ... spreads the virtual clients over "
                   "N processes (rank 0 runs the server)"
                 : "MPI: built without MPI (install libopenmpi-dev and rebuild for mpirun -np N "
                   "fl-sim)");
  CLI11_PARSE(app, argc, argv);
  // Every rank stops on Ctrl-C (mpirun passes it on): rank 0's server ends
  // the run, checkpointed, and releases the others.
  std::signal(SIGINT, OnSignal);
  std::signal(SIGTERM, OnSignal);

  if (!config_path.empty()) {
    Status st = LoadSimConfig(config_path, &c);
    if (!st.ok()) {
      std::fprintf(stderr, "error: %s\n", st.ToString().c_str());
      return 2;
    }
  }
  if (*o_rounds) c.rounds = rounds;
  if (*o_clients) c.clients = clients;
  if (*o_fraction) c.fraction = fraction;
  if (*o_data) c.data_dir = data;
  if (*o_seed) c.seed = seed;
  if (*o_out) c.out = out;
  if (*o_workers) c.workers = workers;
  if (*o_ingest) c.ingest_threads = ingest_threads;
  if (*o_epochs) c.epochs = epochs;
  if (*o_lr) c.lr = lr;
  if (*o_partition) c.partition = partition;
  if (*o_test_data) c.test_dir = test_data;
  if (*o_test_fraction) c.test_fraction = test_fraction;
  if (*o_label) c.label_column = label_column;
  if (*o_normalize) c.normalize = normalize;
  if (*o_stop) c.stop_at_target = stop_at_target;
  if (*o_trainable) c.trainable = trainable;
  if (*o_alpha) c.alpha = alpha;
  if (*o_model) c.model = model;
  if (*o_sparsity) c.sparsity = sparsity;
  if (*o_model_file) c.model_file = model_file;
  if (*o_codec) {
    c.codec = codec;
    if (codec == "sign") c.uplink_bits = 1;
  }
  if (*o_bits) c.uplink_bits = bits;
  if (*o_downlink) c.downlink = downlink;
  if (*o_secure) c.secure = secure;
  if (*o_relays) c.relays = relay_count;
  if (*o_relay_strategy) c.relay_strategy = relay_strategy;
  if (*o_strategy) c.strategy.name = strategy;
  if (*o_dp_noise) c.privacy.noise_multiplier = dp_noise;
  if (*o_clip) c.strategy.clip = clip;
  if (*o_adv_fraction) c.adversary_fraction = adversary_fraction;
  if (*o_adv_kind) c.adversary_kind = adversary_kind;
  if (*o_adv_scale) c.adversary_scale = adversary_scale;
  if (*o_reproducible) c.reproducible = reproducible;
  Status st = ValidateSimConfig(c);
  if (!st.ok()) {
    std::fprintf(stderr, "error: %s\n", st.ToString().c_str());
    return 2;
  }
  if (c.reproducible) {
    // main() ran this process again with the pinned environment, before MPI
    // started, when the flag or the config asked for it; it is not run again
    // from here, after MPI started.
    if (!ReproducibleEnvironmentSet()) {
      std::fprintf(stderr,
                   "error: --reproducible was not seen before the start (give it as "
                   "--reproducible or [sim] reproducible = true)\n");
      return 2;
    }
    UseDeterministicKernels();
  }
  const bool folders = c.partition == "folders";
  const bool by_column = c.partition == "column";
  auto scheme = folders || by_column ? Result<PartitionScheme>(PartitionScheme::kIid)
                                     : ParsePartitionScheme(c.partition);
  if (!scheme.ok()) {
    std::fprintf(stderr, "error: data.partition: %s\n", scheme.status().message().c_str());
    return 2;
  }
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  // Under mpirun, rank r hosts virtual clients r, r + N, r + 2N, ... and rank
  // 0 also runs the server; the other ranks print nothing but errors.
  const int rank = world.rank(), ranks = world.size();
  const bool lead = rank == 0;
  if (!lead) quiet = true;
  if (!lead && !std::freopen("/dev/null", "w", stdout)) return 1;
  std::vector<int> hosted;
  for (int k = rank; k < c.clients; k += ranks) hosted.push_back(k);
  // The ranks of one machine share its cores.
  const int nworkers =
      std::max(1, std::min(static_cast<int>(hosted.size()),
                           c.workers > 0 ? c.workers : std::max(1, cores / std::max(1, ranks))));
  spdlog::set_level(spdlog::level::warn);
  RaiseFileLimit();

  // Rounds an earlier run in --out evaluated: (round, test accuracy).
  std::vector<std::pair<uint64_t, double>> earlier;
  if (lead) {  // rank 0 owns --out
    if (resume) {
      st = CheckResumableRun(c, &earlier);
    } else {
      // A fresh run replaces earlier results in the same folder.
      st = CreateDirectories(c.out);
      std::remove((c.out + "/rounds.csv").c_str());
      for (const char* f : {"/checkpoint.fl", "/checkpoint.fl.1", "/checkpoint.fl.2"}) {
        std::remove((c.out + f).c_str());
      }
    }
    if (st.ok()) st = WriteFileAtomic(c.out + "/config.toml", SimConfigToToml(c));
  }
  if (!st.ok()) {
    std::fprintf(stderr, "error: %s\n", st.ToString().c_str());
    return 1;
  }

  std::printf("fl-sim: %s, K=%d clients (%s), C=%.2f, E=%d, B=%lld, lr=%g, %d rounds, seed %llu\n",
              c.model.c_str(), c.clients, c.partition.c_str(), c.fraction, c.epochs,
              static_cast<long long>(c.batch), c.lr, c.rounds,
              static_cast<unsigned long long>(c.seed));
  const std::string start = c.model_file.empty()
                                ? "sparsity " + std::to_string(c.sparsity).substr(0, 4)
                                : "model file " + c.model_file;
  std::printf(
      "        %s, uplink codec %s %d-bit (block %d, %s rounding, error feedback %s), "
      "downlink %s\n",
      start.c_str(), c.codec.c_str(), c.uplink_bits, c.block, c.stochastic_rounding ? "stochastic" : "nearest",
      c.error_feedback ? "on" : "off", c.downlink.c_str());
  std::printf("        %d worker thread(s) on %d core(s); results in %s\n", nworkers, cores,
              c.out.c_str());
  if (c.reproducible) {
    std::printf("        reproducible: %s\n", DescribeReproducibleSettings().c_str());
  }
  if (ranks > 1) {
    std::printf(
        "        MPI: %d ranks; rank r hosts virtual clients r, r + %d, ... (%zu on rank 0), "
        "rank 0 the server\n",
        ranks, ranks, hosted.size());
  }
  if (c.slowdown_sigma > 0 || c.straggler_fraction > 0 || c.dropout > 0) {
    std::vector<double> slow = DeviceSlowdowns(c);
    std::sort(slow.begin(), slow.end());
    std::printf(
        "        devices: slowdown median %.2fx, 90th percentile %.2fx, slowest %.2fx "
        "(sigma %g, %.0f%% stragglers x%g); each drops out of a task with probability %g\n",
        slow[slow.size() / 2], slow[slow.size() * 9 / 10], slow.back(), c.slowdown_sigma,
        100 * c.straggler_fraction, c.straggler_slowdown, c.dropout);
  }
  const double t_start = NowSeconds();
  Result<Dataset> train = Status::Internal("not loaded");
  Result<std::vector<std::vector<int64_t>>> parts = Status::Internal("not partitioned");
  DataOptions data_options;
  data_options.path = c.data_dir;
  data_options.test_path = c.test_dir;
  data_options.test_fraction = c.test_fraction;
  data_options.label_column = c.label_column;
  data_options.group_column = c.group_column;
  data_options.normalize = c.normalize;
  std::string normalization_source;
  if (folders) {
    std::vector<std::vector<int64_t>> by_device;
    train = LoadDeviceFolders(c.data_dir, data_options, c.clients, &by_device);
    parts = std::move(by_device);
    if (train.ok() && (c.normalize.empty() || c.normalize == "auto")) {
      train->normalization = ComputeNormalization(*train);
      normalization_source = "computed from the devices' training data";
    } else if (train.ok() && c.normalize != "none") {
      auto n = ParseNormalization(c.normalize);
      Status fits = n.ok() ? CheckNormalization(*train, *n, "data_options.normalize") : n.status();
      if (fits.ok()) train->normalization = *n;
      if (!fits.ok()) train = fits;
      normalization_source = "data_options.normalize";
    }
  } else {
    auto splits = LoadData(data_options, /*need_train=*/true, /*need_test=*/false);
    if (splits.ok()) {
      normalization_source = splits->normalization_source;
      train = std::move(splits->train);
    } else {
      train = splits.status();
    }
  }
  if (!train.ok()) {
    std::fprintf(stderr, "error: %s\n", train.status().ToString().c_str());
    return 1;
  }
  {
    DataSplits described;
    described.train = *train;
    described.normalization_source = normalization_source;
    std::printf("        data %s: %s\n", c.data_dir.c_str(), DescribeData(described).c_str());
    Status fits = CheckModelFitsData(c.model, *train, c.data_dir);
    if (!fits.ok()) {
      std::fprintf(stderr, "error: %s\n", fits.ToString().c_str());
      return 2;
    }
  }
  // The server evaluates with the clients' normalisation.
  data_options.normalize = train->normalization.empty() ? "none" : train->normalization.ToString();
  PartitionOptions po;
  po.scheme = *scheme;
  po.clients = c.clients;
  po.shards_per_client = c.shards_per_client;
  po.alpha = c.alpha;
  po.seed = c.seed;
  if (by_column) {
    parts = PartitionByGroup(train->groups, static_cast<int>(train->group_names.size()), c.clients);
  } else if (!folders) {
    parts = MakePartition(train->labels, train->num_classes, po);
  }
  if (!parts.ok()) {
    std::fprintf(stderr, "error: partition: %s\n", parts.status().ToString().c_str());
    return 2;
  }

  Adversaries adversaries;
  if (c.adversary_fraction > 0) {
    adversaries.ids = ChooseAdversaries(c.clients, c.adversary_fraction, c.seed);
    adversaries.kind = *ParseAdversaryKind(c.adversary_kind);
    adversaries.scale = c.adversary_scale;
    if (adversaries.kind == AdversaryKind::kLabelFlip) adversaries.flipped = FlipLabels(*train);
    std::printf(
        "        adversaries: %zu of %d virtual clients, %s (scale %g), enrolled and signing\n",
        adversaries.ids.size(), c.clients, c.adversary_kind.c_str(), c.adversary_scale);
  }

  ServerOptions so;
  so.bind = "tcp://127.0.0.1:*";
  so.model = c.model;
  so.seed = c.seed;
  so.rounds = c.rounds;
  so.min_clients = c.min_clients > 0 ? c.min_clients : c.clients;
  so.fraction = c.fraction;
  so.over_selection = c.over_selection;
  so.mode = c.mode;
  so.async.concurrency = c.concurrency;
  so.async.buffer = c.buffer;
  so.async.staleness_exponent = c.staleness_exponent;
  so.async.max_staleness = c.max_staleness;
  so.round_deadline_seconds = c.round_deadline;
  so.ingest_threads = c.ingest_threads;
  so.client_timeout_seconds = 1e9;  // see RunWorker: silent while their worker trains others
  so.transport_heartbeats = false;  // see RunWorker
  // The clients' copies of a TASK are in this machine's memory too.
  so.window_plaintext_tasks = true;
  so.train.epochs = c.epochs;
  so.train.batch_size = c.batch;
  so.train.lr = c.lr;
  so.lr_decay = c.lr_decay;
  so.lr_min = c.lr_min;
  so.train.momentum = c.momentum;
  so.train.weight_decay = c.weight_decay;
  so.strategy = c.strategy;
  so.privacy = c.privacy;
  so.sparsity = c.sparsity;
  so.model_file = c.model_file;
  so.global_pruning = c.global_pruning;
  so.erk = c.erk;
  so.prune_to = c.prune_to;
  so.prune_rounds = c.prune_rounds;
  so.train.codec = c.codec;
  so.train.uplink_bits = c.uplink_bits;
  so.train.block = static_cast<uint32_t>(c.block);
  so.train.stochastic_rounding = c.stochastic_rounding;
  so.train.error_feedback = c.error_feedback;
  so.downlink = c.downlink == "fp16" ? wire::ValueFormat::kFp16 : wire::ValueFormat::kFp32;
  so.data = data_options;
  so.trainable = c.trainable;
  so.eval_every = c.eval_every;
  so.out_dir = c.out;
  so.resume = resume;
  so.done_linger_seconds = 1.0;
  so.verbose = false;
  SimIdentities identities;
  // The keys follow from the seed: ranks other than 0 make theirs in a
  // folder of their own, removed at the end.
  std::string keys_dir = c.out + "/keys";
  std::error_code ignored_error;
  if (c.secure && !lead) {
    char tmpl[] = "/tmp/fl-sim-keys-XXXXXX";
    if (::mkdtemp(tmpl) == nullptr) {
      std::fprintf(stderr, "error: rank %d: no temporary folder for its keys\n", rank);
      return 1;
    }
    keys_dir = tmpl;
  }
  if (c.secure) {
    const double t_keys = NowSeconds();
    st = MakeIdentities(c.clients, c.relays, c.seed, keys_dir, &identities);
    if (!st.ok()) {
      std::fprintf(stderr, "error: making identities: %s\n", st.ToString().c_str());
      return 1;
    }
    so.key_path = c.out + "/keys/server.key";
    so.clients_dir = c.out + "/keys/enrolled";
    std::printf(
        "        secure: %d client identities (derived from the seed) enrolled in %s/keys "
        "(%.1f s); CURVE transport, signed messages\n",
        c.clients, c.out.c_str(), NowSeconds() - t_keys);
    // Another rank's copy of the keys is only needed in memory.
    if (!lead) std::filesystem::remove_all(keys_dir, ignored_error);
  } else {
    so.insecure = true;
  }
  // Per virtual client: its DEALER, and with CURVE a handshake monitor (two
  // sockets inside ZeroMQ); plus the server's.
  auto ctx = transport::CreateZmqContext(std::max(1024, 4 * c.clients + 64));
  // Ranks all on rank 0's machine reach the server on 127.0.0.1; otherwise it
  // listens on every interface and they reach it by rank 0's host name.
  char host[256] = {};
  ::gethostname(host, sizeof(host) - 1);
  const std::string lead_host = world.Broadcast(host);
  const bool one_host = world.AllTrue(lead_host == host);
  if (!one_host && !c.secure) {
    std::fprintf(stderr,
                 "error: ranks on other machines than rank 0 reach its server over the network: "
                 "run with --secure (CURVE, enrolled and signing clients), not in plaintext\n");
    return 2;
  }
  if (!one_host) so.bind = "tcp://*:*";
  // [topology] relays: the relays run the sim's federation settings for their
  // clients; the server selects every relay each round and averages them.
  // (Under [privacy] the server's fraction stays the devices' sampling rate,
  // which the relays take from its TASK, and its min_clients counts devices:
  // docs/relays.md.)
  const ServerOptions relay_base = so;
  if (c.relays > 0) {
    so.relays_dir = c.secure ? c.out + "/keys/relays" : "any";
    if (!c.privacy.enabled()) {
      so.min_clients = c.relays;
      so.fraction = 1;
    }
    so.relay_devices = (c.clients + c.relays - 1) / c.relays;
  }
  Result<std::unique_ptr<Server>> server = Status::Internal("the server runs on rank 0");
  Relays relays;
  std::string endpoints;  // the clients': the server's, or the relays', comma-separated
  const auto reachable = [&](std::string e) {
    const std::string any = "tcp://0.0.0.0:";
    return e.rfind(any, 0) == 0 ? "tcp://" + lead_host + ":" + e.substr(any.size()) : e;
  };
  if (lead) {
    server = Server::Create(so, ctx, TorchRuntime());
    if (!server.ok()) {
      std::fprintf(stderr, "error: %s\n", server.status().ToString().c_str());
      return 1;
    }
    endpoints = reachable((*server)->endpoint());
    if (c.relays > 0) {
      st = relays.Start(c, relay_base, keys_dir, endpoints, ctx);
      if (!st.ok()) {
        std::fprintf(stderr, "error: relays: %s\n", st.ToString().c_str());
        return 1;
      }
      endpoints.clear();
      for (const auto& e : relays.endpoints())
        endpoints += (endpoints.empty() ? "" : ",") + reachable(e);
      std::printf("        topology: %d relay aggregators (%s), clients k under relay k mod %d\n",
                  c.relays, c.relay_strategy.c_str(), c.relays);
    }
  }
  const std::vector<std::string> client_endpoints = SplitList(world.Broadcast(endpoints), ',');
  if (!lead)
    return HostClients(c, *train, *parts, adversaries, c.secure ? &identities : nullptr,
                       client_endpoints, ctx, hosted, nworkers, world);
  const uint64_t first_round = (*server)->first_round();
  if (resume && first_round > static_cast<uint64_t>(c.rounds)) {
    std::fprintf(stderr,
                 "error: the run in %s already has %llu rounds; --resume with --rounds above that "
                 "to run more\n",
                 c.out.c_str(), static_cast<unsigned long long>(first_round - 1));
    return 2;
  }

  WorkerFleet fleet(c, *train, *parts, adversaries, c.secure ? &identities : nullptr,
                    client_endpoints, ctx, hosted, nworkers);

  std::vector<RoundMetrics> history;
  uint64_t delta_bytes = 0, updates = 0;
  const double t_rounds = NowSeconds();
  bool reached_target = false;
  auto summary = (*server)->Run(&g_stop, [&](const RoundMetrics& m) {
    history.push_back(m);
    delta_bytes += m.delta_bytes;
    updates += m.participants;
    if (c.stop_at_target && !c.targets.empty() &&
        m.test_accuracy >= *std::max_element(c.targets.begin(), c.targets.end())) {
      reached_target = true;
      g_stop = true;  // the server ends the run after this round, checkpointed
    }
    if (quiet) return;
    const double elapsed = NowSeconds() - t_rounds;
    const double eta = elapsed / history.size() * (c.rounds - static_cast<int>(m.round));
    std::printf(
        "round %3llu/%d  acc %7s  loss %.4f  clients %d/%d  up %s MB  down %s MB  "
        "%.1f s  [elapsed %.0f s, eta %.0f s]%s\n",
        static_cast<unsigned long long>(m.round), c.rounds, Percent(m.test_accuracy).c_str(),
        m.test_loss, m.participants, m.selected, Mb(m.upload_bytes).c_str(),
        Mb(m.download_bytes).c_str(), m.round_seconds, elapsed, eta,
        m.mask_changed ? ("  mask -> " + Percent(m.sparsity) + " sparse").c_str() : "");
    std::fflush(stdout);
  });
  // Workers whose clients missed DONE are released, and the other ranks'.
  const Status workers_status = fleet.Join();
  const Status relays_status = relays.Join();
  world.Release();
  if (!relays_status.ok()) {
    std::fprintf(stderr, "error: relay: %s\n", relays_status.ToString().c_str());
    return 1;
  }
  if (!summary.ok()) {
    std::fprintf(stderr, "error: server: %s\n", summary.status().ToString().c_str());
    return 1;
  }
  if (!workers_status.ok()) {
    std::fprintf(stderr, "error: worker: %s\n", workers_status.ToString().c_str());
    return 1;
  }
  SimOutcome outcome;
  outcome.config = &c;
  outcome.config_path = config_path;
  outcome.history = std::move(history);
  outcome.earlier = std::move(earlier);
  outcome.first_round = first_round;
  outcome.summary = *summary;
  outcome.delta_bytes = delta_bytes;
  outcome.updates = updates;
  outcome.wall_seconds = NowSeconds() - t_start;
  outcome.reached_target = reached_target;
  outcome.adversaries = adversaries.ids.size();
  st = ReportSimRun(outcome);
  if (!st.ok()) {
    std::fprintf(stderr, "error: %s\n", st.ToString().c_str());
    return 1;
  }
  return summary->interrupted && !reached_target ? 130 : 0;
}

}  // namespace
}  // namespace fl

int main(int argc, char** argv) {
  const char* launched = std::getenv("OMPI_COMM_WORLD_SIZE");
  if (!launched) launched = std::getenv("PMI_SIZE");
  if (!fl::MpiWorld::Built() && launched && std::atoi(launched) > 1) {
    std::fprintf(stderr,
                 "error: started by mpirun with %s ranks, but this fl-sim was built without MPI "
                 "(apt-get install libopenmpi-dev, then rebuild); each rank would run the whole "
                 "simulation into the same --out\n",
                 launched);
    return 2;
  }
  // --reproducible pins an environment that libraries read as they load:
  // this process runs itself again with it, before MPI starts.
  if (fl::WantsReproducible(argc, argv) && !fl::ReproducibleEnvironmentSet()) {
    const fl::Status st = fl::PinReproducibleEnvironment(argv);  // returns only on failure
    std::fprintf(stderr, "error: %s\n", st.ToString().c_str());
    return 2;
  }
  fl::MpiWorld world(&argc, &argv);
  const int rc = fl::Main(argc, argv, world);
  // A rank that stops early would leave the others waiting for it (130:
  // rank 0 interrupted, after releasing them).
  if (rc != 0 && rc != 130 && world.size() > 1) world.Abort(rc);
  return rc;
}
