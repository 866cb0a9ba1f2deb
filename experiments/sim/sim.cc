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
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <optional>
#include <set>
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
#include "common/process_exit.h"
#include "common/reproducible.h"
#include "common/text.h"
#include "common/wire/compact.h"
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

// Virtual client k's session options: it reaches endpoints[k mod size] (the
// server, or its relay); with identities, as a deployed device.
ClientOptions ClientOptionsFor(const SimConfig& c, int k, const SimIdentities* identities,
                               const std::vector<std::string>& endpoints, double slowdown) {
  ClientOptions co;
  const size_t at = static_cast<size_t>(k) % endpoints.size();
  co.server = endpoints[at];
  char id[32];
  std::snprintf(id, sizeof(id), "sim-%05d", k);
  co.id = id;
  if (identities) {
    // Its own keys, the server's (or its relay's) pinned.
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
  co.slowdown = slowdown;
  co.dropout = c.dropout;
  co.fault_seed = c.server.seed;
  // A worker trains its clients one after another, so a client can stay
  // silent for many rounds' worth of training; never give up on the server.
  co.server_timeout_seconds = 1e9;
  // One machine, loopback: a peer cannot vanish without closing its
  // connection, so ZeroMQ's heartbeats would find nothing; each costs a
  // timer in ZeroMQ's I/O thread, thousands of them here.
  co.transport_heartbeats = false;
  co.verbose = false;
  return co;
}

// Steps every session whose socket is readable or whose timer is due, until
// each has its DONE (or the run is stopped).
Status DriveSessions(const std::vector<std::unique_ptr<ClientSession>>& sessions,
                     transport::Context& ctx) {
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
    auto r = ctx.Poll(socks, static_cast<int>(due * 1000) + 1, &ready);
    if (!r.ok()) return r.status();
    for (size_t j = 0; j < socks.size(); ++j) {
      ClientSession* s = sessions[index[j]].get();
      if (ready[j] || s->SecondsUntilDue() <= 0) {
        Status st = s->Step();
        if (!st.ok()) return st.WithContext(s->id());
      }
    }
  }
  return Status::OK();
}

// One worker thread: its virtual clients' sessions, driven to the end.
void RunWorker(const SimConfig& c, const Dataset& train, const Partition& parts,
               const Adversaries& adversaries, const SimIdentities* identities,
               const std::vector<std::string>& endpoints, std::shared_ptr<transport::Context> ctx,
               Worker* w) {
  auto shared = NewSharedModel(c.server.model);
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
    auto lc = LocalClient::Create(c.server.model, data, parts[k], /*threads=*/1, *shared);
    if (!lc.ok()) {
      w->status = lc.status().WithContext("virtual client " + std::to_string(k));
      return;
    }
    std::unique_ptr<Participant> participant = std::move(lc).value();
    if (poisons) {
      participant = std::make_unique<AdversarialParticipant>(std::move(participant),
                                                             adversaries.kind, adversaries.scale);
    }
    clients.push_back(std::move(participant));
    sessions.push_back(std::make_unique<ClientSession>(
        ClientOptionsFor(c, k, identities, endpoints, slowdowns[static_cast<size_t>(k)]), ctx,
        clients.back().get()));
    if (Status st = sessions.back()->Start(); !st.ok()) {
      w->status = st;
      return;
    }
  }
  w->status = DriveSessions(sessions, *ctx);
  if (!w->status.ok()) return;
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

// The "key = value" lines of an effective configuration (comments and
// blank lines dropped), but for the keys a resumed run may change: its
// length, reporting and pacing, which do not change the model.
std::vector<std::string> ComparedSettings(const std::string& toml) {
  static const std::set<std::string> may_differ = {
      "rounds",         "workers",      "ingest-threads", "out",       "targets",
      "stop-at-target", "eval-every",   "deadline",       "heartbeat", "resume",
      "quiet",          "eval-threads", "linger",         "no-eval"};
  std::vector<std::string> out;
  std::istringstream in(toml);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    if (may_differ.count(line.substr(0, line.find(" = ")))) continue;
    out.push_back(line);
  }
  return out;
}

// --resume: the run in --out was made with these settings (`effective`,
// pacing and reporting aside), and the accuracy of each round its
// rounds.csv holds.
Status CheckResumableRun(const SimConfig& c, const std::string& effective,
                         std::vector<std::pair<uint64_t, double>>* earlier) {
  const std::string path = c.server.out_dir + "/config.toml";
  auto before = ReadFile(path);
  if (!before.ok()) {
    return Status::InvalidArgument("--resume: no run to continue in " + c.server.out_dir,
                                   before.status().message());
  }
  // An older fl-sim wrote its keys in tables: its checkpoint's run settings
  // (which the server compares as it resumes) are the check then.
  const bool older = before->find("\n[") != std::string::npos;
  if (older) {
    std::printf("        %s is an older fl-sim's; the checkpoint's run settings are checked\n",
                path.c_str());
  }
  const std::vector<std::string> was = ComparedSettings(*before), now = ComparedSettings(effective);
  if (!older && was != now) {
    size_t i = 0;
    while (i < was.size() && i < now.size() && was[i] == now[i]) ++i;
    return Status::InvalidArgument(
        path, "--resume continues a run with the settings it was made with; it had '" +
                  (i < was.size() ? was[i] : std::string("nothing more")) + "', this one has '" +
                  (i < now.size() ? now[i] : std::string("nothing more")) + "'");
  }
  std::ifstream in(c.server.out_dir + "/rounds.csv");
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
// --config file (read here before anything starts; errors are Main's to
// report).
bool WantsReproducible(int argc, char** argv) {
  SimCommandLine line;
  return ParseSimFlags(std::vector<std::string>(argv + 1, argv + argc), &line).ok() &&
         line.config.reproducible;
}

// The flags (and the config file under them), then the checks. 0, or the
// exit code of a run that cannot start (-1: --help was shown).
int ParseSim(int argc, char** argv, SimCommandLine* line) {
  const std::vector<std::string> args(argv + 1, argv + argc);
  if (std::find(args.begin(), args.end(), "--help") != args.end() ||
      std::find(args.begin(), args.end(), "-h") != args.end()) {
    std::printf("%s\n%s\n", SimHelp().c_str(),
                MpiWorld::Built()
                    ? "MPI: built with MPI; mpirun -np N fl-sim ... spreads the virtual clients "
                      "over N processes (rank 0 runs the server)"
                    : "MPI: built without MPI (install libopenmpi-dev and rebuild for mpirun -np "
                      "N fl-sim)");
    return -1;
  }
  if (Status st = ParseSimFlags(args, line); !st.ok()) {
    std::fprintf(stderr, "error: %s\nRun with --help for more information.\n",
                 st.message().c_str());
    return 2;
  }
  if (line->config.reproducible) {
    // main() ran this process again with the pinned environment, before MPI
    // started, when the flag or the config asked for it; it is not run again
    // from here, after MPI started.
    if (!ReproducibleEnvironmentSet()) {
      std::fprintf(stderr,
                   "error: --reproducible was not seen before the start (give it as "
                   "--reproducible or reproducible = true in the --config file)\n");
      return 2;
    }
    UseDeterministicKernels();
  }
  return 0;
}
// One fl-sim run, step by step; every step returns 0 or the exit code.
class SimRun {
 public:
  SimRun(const SimCommandLine& line, MpiWorld& world)
      : c_(line.config), f_(line), quiet_(line.quiet), world_(world), lead_(world.rank() == 0) {}

  int Go() {
    int rc = Place();
    if (rc == 0) rc = PrepareOut();
    if (rc != 0) return rc;
    PrintHeader();
    t_start_ = NowSeconds();
    rc = LoadTraining();
    if (rc == 0) rc = Partition();
    if (rc != 0) return rc;
    ChooseAdversaries();
    rc = StartServer();
    if (rc != 0) return rc;
    if (lead_ && c_.server.resume) {
      if (Status st = WriteConfig(); !st.ok()) {
        std::fprintf(stderr, "error: %s\n", st.ToString().c_str());
        return 1;
      }
    }
    const std::vector<std::string> clients = SplitList(world_.Broadcast(endpoints_), ',');
    if (!lead_) {
      return HostClients(c_, *train_, *parts_, adversaries_, c_.secure ? &identities_ : nullptr,
                         clients, ctx_, hosted_, nworkers_, world_);
    }
    return RunRounds(clients);
  }

 private:
  // Under mpirun, rank r hosts virtual clients r, r + N, r + 2N, ... and rank
  // 0 also runs the server; the other ranks print nothing but errors.
  int Place() {
    const int rank = world_.rank(), ranks = world_.size();
    if (!lead_) quiet_ = true;
    if (!lead_ && !std::freopen("/dev/null", "w", stdout)) return 1;
    for (int k = rank; k < c_.clients; k += ranks) hosted_.push_back(k);
    // The ranks of one machine share its cores.
    cores_ = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    nworkers_ = std::max(
        1, std::min(static_cast<int>(hosted_.size()),
                    c_.workers > 0 ? c_.workers : std::max(1, cores_ / std::max(1, ranks))));
    spdlog::set_level(spdlog::level::warn);
    RaiseFileLimit();
    return 0;
  }

  // Rank 0 owns --out: a resumed run's rounds so far (round, accuracy), or a
  // fresh run replacing earlier results; config.toml either way.
  int PrepareOut() {
    if (!lead_) return 0;
    Status st;
    if (c_.server.resume) {
      st = CheckResumableRun(c_, f_.effective, &earlier_);
    } else {
      st = CreateDirectories(c_.server.out_dir);
      std::remove((c_.server.out_dir + "/rounds.csv").c_str());
      for (const char* f : {"/checkpoint.fl", "/checkpoint.fl.1", "/checkpoint.fl.2"}) {
        std::remove((c_.server.out_dir + f).c_str());
      }
    }
    // (A resumed run's once its server took the checkpoint: a refused
    // --resume leaves the run's config.toml as it was.)
    if (st.ok() && !c_.server.resume) st = WriteConfig();
    if (!st.ok()) {
      std::fprintf(stderr, "error: %s\n", st.ToString().c_str());
      return 1;
    }
    return 0;
  }

  // OUT/config.toml: the run's effective configuration.
  Status WriteConfig() const {
    const std::string path = c_.server.out_dir + "/config.toml";
    return WriteFileAtomic(path,
                           "# the effective configuration of this fl-sim run (read back with "
                           "fl-sim --config " +
                               path + ")\n" + f_.effective);
  }

  void PrintHeader() const {
    std::printf(
        "fl-sim: %s, K=%d clients (%s), C=%.2f, E=%d, B=%lld, lr=%g, %d rounds, seed %llu\n",
        c_.server.model.c_str(), c_.clients, c_.partition.c_str(), c_.server.fraction,
        c_.server.train.epochs, static_cast<long long>(c_.server.train.batch_size),
        c_.server.train.lr, c_.server.rounds, static_cast<unsigned long long>(c_.server.seed));
    const std::string start = c_.server.model_file.empty()
                                  ? "sparsity " + std::to_string(c_.server.sparsity).substr(0, 4)
                                  : "model file " + c_.server.model_file;
    std::printf(
        "        %s, uplink codec %s %d-bit (block %d, %s rounding, error feedback %s), "
        "downlink %s\n",
        start.c_str(), c_.server.train.codec.c_str(), c_.server.train.uplink_bits,
        c_.server.train.block, c_.server.train.stochastic_rounding ? "stochastic" : "nearest",
        c_.server.train.error_feedback ? "on" : "off", wire::ValueFormatName(c_.server.downlink));
    std::printf("        %d worker thread(s) on %d core(s); results in %s\n", nworkers_, cores_,
                c_.server.out_dir.c_str());
    if (c_.reproducible) {
      std::printf("        reproducible: %s\n", DescribeReproducibleSettings().c_str());
    }
    if (world_.size() > 1) {
      std::printf(
          "        MPI: %d ranks; rank r hosts virtual clients r, r + %d, ... (%zu on rank 0), "
          "rank 0 the server\n",
          world_.size(), world_.size(), hosted_.size());
    }
    if (c_.slowdown_sigma > 0 || c_.straggler_fraction > 0 || c_.dropout > 0) {
      std::vector<double> slow = DeviceSlowdowns(c_);
      std::sort(slow.begin(), slow.end());
      std::printf(
          "        devices: slowdown median %.2fx, 90th percentile %.2fx, slowest %.2fx "
          "(sigma %g, %.0f%% stragglers x%g); each drops out of a task with probability %g\n",
          slow[slow.size() / 2], slow[slow.size() * 9 / 10], slow.back(), c_.slowdown_sigma,
          100 * c_.straggler_fraction, c_.straggler_slowdown, c_.dropout);
    }
  }

  // The devices' training data: a folder per device, or one set to partition.
  int LoadTraining() {
    data_options_ = c_.server.data;
    std::string normalization_source;
    if (c_.partition == "folders") {
      std::vector<std::vector<int64_t>> by_device;
      train_ = LoadDeviceFolders(c_.server.data.path, data_options_, c_.clients, &by_device);
      parts_ = std::move(by_device);
      if (train_.ok() && (c_.server.data.normalize.empty() || c_.server.data.normalize == "auto")) {
        train_->normalization = ComputeNormalization(*train_);
        normalization_source = "computed from the devices' training data";
      } else if (train_.ok() && c_.server.data.normalize != "none") {
        auto n = ParseNormalization(c_.server.data.normalize);
        Status fits =
            n.ok() ? CheckNormalization(*train_, *n, "data_options.normalize") : n.status();
        if (fits.ok()) train_->normalization = *n;
        if (!fits.ok()) train_ = fits;
        normalization_source = "data_options.normalize";
      }
    } else {
      auto splits = LoadData(data_options_, /*need_train=*/true, /*need_test=*/false);
      if (splits.ok()) {
        normalization_source = splits->normalization_source;
        train_ = std::move(splits->train);
      } else {
        train_ = splits.status();
      }
    }
    if (!train_.ok()) {
      std::fprintf(stderr, "error: %s\n", train_.status().ToString().c_str());
      return 1;
    }
    DataSplits described;
    described.train = *train_;
    described.normalization_source = normalization_source;
    std::printf("        data %s: %s\n", c_.server.data.path.c_str(),
                DescribeData(described).c_str());
    if (Status fits = CheckModelFitsData(c_.server.model, *train_, c_.server.data.path);
        !fits.ok()) {
      std::fprintf(stderr, "error: %s\n", fits.ToString().c_str());
      return 2;
    }
    // The server evaluates with the clients' normalisation.
    data_options_.normalize =
        train_->normalization.empty() ? "none" : train_->normalization.ToString();
    return 0;
  }

  int Partition() {
    const bool folders = c_.partition == "folders", by_column = c_.partition == "column";
    auto scheme = folders || by_column ? Result<PartitionScheme>(PartitionScheme::kIid)
                                       : ParsePartitionScheme(c_.partition);
    if (!scheme.ok()) {
      std::fprintf(stderr, "error: data.partition: %s\n", scheme.status().message().c_str());
      return 2;
    }
    PartitionOptions po;
    po.scheme = *scheme;
    po.clients = c_.clients;
    po.shards_per_client = c_.shards_per_client;
    po.alpha = c_.alpha;
    po.seed = c_.server.seed;
    if (by_column) {
      parts_ = PartitionByGroup(train_->groups, static_cast<int>(train_->group_names.size()),
                                c_.clients);
    } else if (!folders) {
      parts_ = MakePartition(train_->labels, train_->num_classes, po);
    }
    if (!parts_.ok()) {
      std::fprintf(stderr, "error: partition: %s\n", parts_.status().ToString().c_str());
      return 2;
    }
    return 0;
  }

  void ChooseAdversaries() {
    if (!(c_.adversary_fraction > 0)) return;
    adversaries_.ids = fl::ChooseAdversaries(c_.clients, c_.adversary_fraction, c_.server.seed);
    adversaries_.kind = *ParseAdversaryKind(c_.adversary_kind);
    adversaries_.scale = c_.adversary_scale;
    if (adversaries_.kind == AdversaryKind::kLabelFlip) adversaries_.flipped = FlipLabels(*train_);
    std::printf(
        "        adversaries: %zu of %d virtual clients, %s (scale %g), enrolled and signing\n",
        adversaries_.ids.size(), c_.clients, c_.adversary_kind.c_str(), c_.adversary_scale);
  }

  // The server's options from the sim's config.
  ServerOptions ServerOptionsOf() const {
    ServerOptions so = c_.server;
    so.bind = "tcp://127.0.0.1:*";
    if (so.min_clients == 0) so.min_clients = c_.clients;
    so.client_timeout_seconds = 1e9;  // see RunWorker: silent while their worker trains others
    so.transport_heartbeats = false;  // see RunWorker
    // The clients' copies of a TASK are in this machine's memory too.
    so.window_plaintext_tasks = true;
    so.data = data_options_;
    if (!c_.evaluate) {  // --no-eval
      so.data.path.clear();
      // The classes a checkpoint records come from the test data otherwise.
      if (so.class_names.empty()) {
        for (const auto& name : train_->class_names) {
          so.class_names += (so.class_names.empty() ? "" : ",") + name;
        }
      }
    }
    so.verbose = false;
    return so;
  }

  // --secure: the identities (from the seed) and the server's enrollment.
  // The keys of ranks other than 0 go to a folder of their own, removed once
  // made (they are needed in memory only).
  int MakeKeys(ServerOptions* so) {
    keys_dir_ = c_.server.out_dir + "/keys";
    if (!c_.secure) {
      so->insecure = true;
      return 0;
    }
    if (!lead_) {
      char tmpl[] = "/tmp/fl-sim-keys-XXXXXX";
      if (::mkdtemp(tmpl) == nullptr) {
        std::fprintf(stderr, "error: rank %d: no temporary folder for its keys\n", world_.rank());
        return 1;
      }
      keys_dir_ = tmpl;
    }
    const double t_keys = NowSeconds();
    if (Status st = MakeIdentities(c_.clients, c_.relays, c_.server.seed, keys_dir_, &identities_);
        !st.ok()) {
      std::fprintf(stderr, "error: making identities: %s\n", st.ToString().c_str());
      return 1;
    }
    so->key_path = c_.server.out_dir + "/keys/server.key";
    so->clients_dir = c_.server.out_dir + "/keys/enrolled";
    std::printf(
        "        secure: %d client identities (derived from the seed) enrolled in %s/keys "
        "(%.1f s); CURVE transport, signed messages\n",
        c_.clients, c_.server.out_dir.c_str(), NowSeconds() - t_keys);
    std::error_code ignored_error;
    if (!lead_) std::filesystem::remove_all(keys_dir_, ignored_error);
    return 0;
  }

  // Rank 0's server (and [topology] relays between it and the clients), and
  // the endpoints the clients reach: the server's, or the relays'.
  int StartServer() {
    ServerOptions so = ServerOptionsOf();
    if (const int rc = MakeKeys(&so); rc != 0) return rc;
    // Per virtual client: its DEALER, and with CURVE a handshake monitor (two
    // sockets inside ZeroMQ); plus the server's.
    ctx_ = transport::CreateZmqContext(std::max(1024, 4 * c_.clients + 64));
    // Ranks all on rank 0's machine reach the server on 127.0.0.1; otherwise
    // it listens on every interface and they reach it by rank 0's host name.
    char host[256] = {};
    ::gethostname(host, sizeof(host) - 1);
    lead_host_ = world_.Broadcast(host);
    const bool one_host = world_.AllTrue(lead_host_ == host);
    if (!one_host && !c_.secure) {
      std::fprintf(stderr,
                   "error: ranks on other machines than rank 0 reach its server over the "
                   "network: run with --secure (CURVE, enrolled and signing clients), not in "
                   "plaintext\n");
      return 2;
    }
    if (!one_host) so.bind = "tcp://*:*";
    // [topology] relays: the relays run the sim's federation settings for
    // their clients; the server selects every relay each round and averages
    // them. (Under [privacy] the server's fraction stays the devices'
    // sampling rate, which the relays take from its TASK, and its min_clients
    // counts devices: docs/relays.md.)
    const ServerOptions relay_base = so;
    if (c_.relays > 0) {
      so.relays_dir = c_.secure ? c_.server.out_dir + "/keys/relays" : "any";
      if (!c_.server.privacy.enabled()) {
        so.min_clients = c_.relays;
        so.fraction = 1;
      }
      so.relay_devices = (c_.clients + c_.relays - 1) / c_.relays;
    }
    if (!lead_) return 0;
    server_ = Server::Create(so, ctx_, TorchRuntime());
    if (!server_.ok()) {
      std::fprintf(stderr, "error: %s\n", server_.status().ToString().c_str());
      return 1;
    }
    endpoints_ = Reachable((*server_)->endpoint());
    if (c_.relays == 0) return 0;
    if (Status st = relays_.Start(c_, relay_base, keys_dir_, endpoints_, ctx_); !st.ok()) {
      std::fprintf(stderr, "error: relays: %s\n", st.ToString().c_str());
      return 1;
    }
    endpoints_.clear();
    for (const auto& e : relays_.endpoints()) {
      endpoints_ += (endpoints_.empty() ? "" : ",") + Reachable(e);
    }
    std::printf("        topology: %d relay aggregators (%s), clients k under relay k mod %d\n",
                c_.relays, c_.relay_strategy.c_str(), c_.relays);
    return 0;
  }

  std::string Reachable(const std::string& e) const {
    const std::string any = "tcp://0.0.0.0:";
    return e.rfind(any, 0) == 0 ? "tcp://" + lead_host_ + ":" + e.substr(any.size()) : e;
  }

  // Rank 0: the rounds, with a line each, then the report.
  int RunRounds(const std::vector<std::string>& clients) {
    const uint64_t first_round = (*server_)->first_round();
    if (c_.server.resume && first_round > static_cast<uint64_t>(c_.server.rounds)) {
      std::fprintf(stderr,
                   "error: the run in %s already has %llu rounds; --resume with --rounds above "
                   "that to run more\n",
                   c_.server.out_dir.c_str(), static_cast<unsigned long long>(first_round - 1));
      return 2;
    }
    WorkerFleet fleet(c_, *train_, *parts_, adversaries_, c_.secure ? &identities_ : nullptr,
                      clients, ctx_, hosted_, nworkers_);
    SimOutcome o;
    o.config = &c_;
    o.config_path = f_.config_path;
    o.earlier = earlier_;
    o.first_round = first_round;
    o.adversaries = adversaries_.ids.size();
    const double t_rounds = NowSeconds();
    auto summary = (*server_)->Run(&g_stop, [&](const RoundMetrics& m) {
      o.history.push_back(m);
      o.delta_bytes += m.delta_bytes;
      o.updates += m.participants;
      if (c_.stop_at_target && !c_.targets.empty() &&
          m.test_accuracy >= *std::max_element(c_.targets.begin(), c_.targets.end())) {
        o.reached_target = true;
        g_stop = true;  // the server ends the run after this round, checkpointed
      }
      if (!quiet_) PrintRound(m, NowSeconds() - t_rounds, o.history.size());
    });
    // Workers whose clients missed DONE are released, and the other ranks'.
    const Status workers_status = fleet.Join();
    const Status relays_status = relays_.Join();
    world_.Release();
    // (The first failure, named by where it happened.)
    const std::pair<const char*, Status> failures[] = {
        {"relay", relays_status}, {"server", summary.status()}, {"worker", workers_status}};
    for (const auto& [where, st] : failures) {
      if (st.ok()) continue;
      std::fprintf(stderr, "error: %s: %s\n", where, st.ToString().c_str());
      return 1;
    }
    o.summary = *summary;
    o.wall_seconds = NowSeconds() - t_start_;
    if (Status st = ReportSimRun(o); !st.ok()) {
      std::fprintf(stderr, "error: %s\n", st.ToString().c_str());
      return 1;
    }
    return summary->interrupted && !o.reached_target ? 130 : 0;
  }

  void PrintRound(const RoundMetrics& m, double elapsed, size_t done) const {
    const double eta = elapsed / done * (c_.server.rounds - static_cast<int>(m.round));
    std::printf(
        "round %3llu/%d  acc %7s  loss %.4f  clients %d/%d  up %s MB  down %s MB  "
        "%.1f s  [elapsed %.0f s, eta %.0f s]%s\n",
        static_cast<unsigned long long>(m.round), c_.server.rounds,
        Percent(m.test_accuracy).c_str(), m.test_loss, m.participants, m.selected,
        Mb(m.upload_bytes).c_str(), Mb(m.download_bytes).c_str(), m.round_seconds, elapsed, eta,
        m.mask_changed ? ("  mask -> " + Percent(m.sparsity) + " sparse").c_str() : "");
    std::fflush(stdout);
  }

  const SimConfig& c_;
  const SimCommandLine& f_;  // (Main's, which outlives the run)
  bool quiet_;
  MpiWorld& world_;
  const bool lead_;
  std::vector<int> hosted_;
  int cores_{1};
  int nworkers_{1};
  std::vector<std::pair<uint64_t, double>> earlier_;
  double t_start_{0};
  DataOptions data_options_;
  Result<Dataset> train_ = Status::Internal("not loaded");
  Result<std::vector<std::vector<int64_t>>> parts_ = Status::Internal("not partitioned");
  Adversaries adversaries_;
  SimIdentities identities_;
  std::string keys_dir_;
  std::shared_ptr<transport::Context> ctx_;
  std::string lead_host_;
  Result<std::unique_ptr<Server>> server_ = Status::Internal("the server runs on rank 0");
  Relays relays_;
  std::string endpoints_;  // the clients': the server's, or the relays', comma-separated
};

int Main(int argc, char** argv, MpiWorld& world) {
  SimCommandLine line;
  const int rc = ParseSim(argc, argv, &line);
  if (rc != 0) return rc < 0 ? 0 : rc;
  // Every rank stops on Ctrl-C (mpirun passes it on): rank 0's server ends
  // the run, checkpointed, and releases the others.
  std::signal(SIGINT, OnSignal);
  std::signal(SIGTERM, OnSignal);
  SimRun run(line, world);
  return run.Go();
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
  int rc = 0;
  {
    fl::MpiWorld world(&argc, &argv);
    rc = fl::Main(argc, argv, world);
    // A rank that stops early would leave the others waiting for it (130:
    // rank 0 interrupted, after releasing them).
    if (rc != 0 && rc != 130 && world.size() > 1) world.Abort(rc);
  }
  // MPI has finished; LibTorch's static teardown is skipped
  // (common/process_exit.h).
  fl::ExitWithoutStaticTeardown(rc);
}
