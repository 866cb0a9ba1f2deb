// fl-bench-ingest: how many model updates per second the aggregator accepts.
//
// Runs the real server (receive; bound, digest check, signature check, decode
// and validate on --ingest-threads threads; log and accumulate on the server's
// thread) against a load generator holding K client connections
// that answer every TASK at once with a prebuilt dense fp32 UPDATE of the
// model's size. Reports, per round, accepted updates divided by the server's
// ingest window (first UPDATE received to last accepted), and rounds per
// second. --mode async runs the server as FedBuff (every connection holds a
// task at all times, --buffer updates a step); a step is then a "round".
//
// Relays (docs/relays.md): --relays R puts R relay aggregators (the same
// Server with a parent, and its uplink) between the connections and the
// root, connection i under relay i mod R; a round is then the root's, and
// its device updates per second are the connections' updates over the
// root's collect time (selection to the last partial accepted).
// --as-relays N makes every connection an enrolled relay whose UPDATE is a
// partial aggregate of N devices: the root's ingest of partials.
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <thread>

#include "common/clock.h"
#include "common/file_util.h"
#include "common/fixed_point.h"
#include "common/model_zoo.h"
#include "common/quant_codec.h"
#include "common/random.h"
#include "common/wire/envelope.h"
#include "common/wire/serialize.h"
#include "crypto/ed25519.h"
#include "crypto/identity.h"
#include "crypto/message.h"
#include "crypto/sha256.h"
#include "relay/relay.h"
#include "server/server.h"
#include "server/torch_runtime.h"

namespace fl {
namespace {

// Keys of the load generator's connections (--signed, --curve).
struct LoadKeys {
  std::vector<SigningKey> signing;
  std::vector<CurveKeyPair> curve;
  CurveKey server_curve{};
};

// One UPDATE payload for every connection (its digest computed once, so the
// generator spends its time sending, not hashing); with `partial_of` > 1 a
// relay's partial: the exact sum of its devices' deltas (each the same one
// here) and their weight.
Result<std::string> LoadPayload(int64_t kept, int bits, int partial_of) {
  Random rng(7);
  std::vector<float> delta(kept);
  for (auto& v : delta) v = static_cast<float>(rng.Normal() * 1e-3);
  QuantOptions q;
  q.bits = bits;
  wire::Update u{600, 0.1, 1.0, wire::kCodecQuant, QuantEncode(delta.data(), delta.size(), q)};
  if (partial_of > 1) {
    u.num_examples = 600 * partial_of;
    u.contributors = static_cast<uint32_t>(partial_of);
    u.codec = wire::kCodecExactSum;
    FixedSum sum;
    FL_RETURN_IF_ERROR(AddWeighted(&sum, u.num_examples, delta.data(), delta.size()));
    u.data = EncodeFixedSum(sum);
  }
  return wire::Encode(u);
}

// Load generator: K DEALER connections that register and answer each TASK.
// Connection i reaches endpoints[i mod size].
class LoadGenerator {
 public:
  LoadGenerator(std::shared_ptr<transport::Context> ctx, LoadKeys* load, std::string payload)
      : ctx_(std::move(ctx)), load_(load), payload_(std::move(payload)), digest_(Sha256(payload_)) {}

  Status Connect(const std::vector<std::string>& endpoints, int k) {
    for (int i = 0; i < k; ++i) {
      transport::SocketOptions so;
      if (!load_->curve.empty()) {
        so.curve.secret_key = KeyBytes(load_->curve[i].secret_key);
        so.curve.public_key = KeyBytes(load_->curve[i].public_key);
        so.curve.server_key = KeyBytes(load_->server_curve);
      }
      auto s = ctx_->Connect(endpoints[static_cast<size_t>(i) % endpoints.size()], so);
      if (!s.ok()) return s.status();
      socks_.push_back(std::move(s).value());
      char id[32];
      std::snprintf(id, sizeof(id), "load-%05d", i);
      ids_.push_back(Keys().empty() ? std::string(id) : NodeId(Keys()[i].public_key()));
      key_index_.push_back(i);
    }
    return Status::OK();
  }

  void Hello(const std::string& model) {
    const std::string p = wire::Encode(wire::Hello{600, model, {wire::kCodecQuant}, 1.0});
    for (size_t i = 0; i < socks_.size(); ++i) {
      wire::Envelope e;
      e.type = wire::MessageType::kHello;
      e.sender = ids_[i];
      e.payload_length = p.size();
      e.payload_digest = Sha256(p);
      (void)socks_[i]->Send("", {Seal(e, i), p});
    }
  }

  // Answers every TASK until each connection got DONE, or `*stop`.
  Status Serve(const std::atomic<bool>* stop) {
    std::vector<bool> ready;
    while (!stop->load() && !socks_.empty()) {
      std::vector<transport::Socket*> raw;
      for (auto& sock : socks_) raw.push_back(sock.get());
      auto r = ctx_->Poll(raw, 100, &ready);
      if (!r.ok()) return r.status();
      for (size_t i = 0; i < socks_.size(); ++i) {
        if (ready[i]) Answer(i);
      }
      DropClosed();
    }
    return Status::OK();
  }

 private:
  const std::vector<SigningKey>& Keys() const { return load_->signing; }
  // Encodes `e` and, when keys were given, signs it (the payload digest is
  // precomputed, so only the signature is per message).
  std::string Seal(const wire::Envelope& e, size_t i) const {
    return SealEnvelope(e, Keys().empty() ? nullptr : &Keys()[key_index_[i]]);
  }

  void Answer(size_t i) {
    transport::Received rx;
    while (socks_[i]) {
      auto got = socks_[i]->TryReceive(&rx);
      if (!got.ok() || !*got) break;
      if (rx.frame_count != 2) continue;
      auto env = wire::DecodeEnvelope(rx.frames[0]);
      if (!env.ok()) continue;
      if (env->type == wire::MessageType::kTask) {
        wire::Envelope e;
        e.type = wire::MessageType::kUpdate;
        e.sender = ids_[i];
        e.round = env->round;
        e.model_version = env->model_version;
        e.nonce = env->nonce;
        e.payload_length = payload_.size();
        e.payload_digest = digest_;
        (void)socks_[i]->Send("", {Seal(e, i), payload_});
      } else if (env->type == wire::MessageType::kDone) {
        socks_[i].reset();
      }
    }
  }

  // Closed sockets leave the poll set.
  void DropClosed() {
    size_t j = 0;
    for (size_t i = 0; i < socks_.size(); ++i) {
      if (!socks_[i]) continue;
      socks_[j] = std::move(socks_[i]);
      ids_[j] = ids_[i];
      key_index_[j] = key_index_[i];
      ++j;
    }
    socks_.resize(j);
    ids_.resize(j);
    key_index_.resize(j);
  }

  std::shared_ptr<transport::Context> ctx_;
  LoadKeys* load_;
  const std::string payload_;
  const Sha256Digest digest_;
  std::vector<std::unique_ptr<transport::Socket>> socks_;
  std::vector<std::string> ids_;
  std::vector<int> key_index_;  // socket i signs with Keys()[key_index_[i]]
};

void Generate(std::shared_ptr<transport::Context> ctx, const std::vector<std::string>& endpoints,
              const std::string& model, int k, int64_t kept, int bits, int partial_of,
              LoadKeys* load, std::atomic<bool>* stop, Status* status) {
  auto payload = LoadPayload(kept, bits, partial_of);
  if (!payload.ok()) {
    *status = payload.status();
    return;
  }
  LoadGenerator gen(std::move(ctx), load, std::move(payload).value());
  *status = gen.Connect(endpoints, k);
  if (!status->ok()) return;
  gen.Hello(model);
  *status = gen.Serve(stop);
}

struct BenchFlags {
  std::string model = "mnist_cnn";
  int clients = 100;
  int rounds = 6;
  int bits = 32;
  double sparsity = 0;
  std::string mode = "sync";
  int buffer = 0;
  bool signed_updates = false;
  bool curve = false;
  int ingest_threads = 0;
  std::string out_dir;
  int relays = 0, as_relays = 0;
};

void AddFlags(CLI::App& app, BenchFlags& f) {
  app.add_option("--model", f.model, "Architecture (sets the update size)")->capture_default_str();
  app.add_option("--clients", f.clients, "Connections sending updates each round")
      ->capture_default_str()
      ->check(CLI::Range(2, 5000));
  app.add_option("--rounds", f.rounds, "Rounds (the first is a warm-up)")
      ->capture_default_str()
      ->check(CLI::Range(2, 1000));
  app.add_option("--mode", f.mode, "Server scheduler: sync or async (FedBuff)")
      ->capture_default_str()
      ->check(CLI::IsMember({"sync", "async"}));
  app.add_option("--buffer", f.buffer, "async: updates per server step (0 = --clients)")
      ->capture_default_str();
  app.add_option("--bits", f.bits, "Uplink bits per value: 32, 8, 4, 2")->capture_default_str();
  app.add_option("--sparsity", f.sparsity, "Prune the model to this sparsity first")
      ->capture_default_str();
  app.add_flag("--signed", f.signed_updates,
               "Enrolled clients sign every message; the server checks each signature");
  app.add_flag("--curve", f.curve, "CURVE-encrypted connections (implies --signed)");
  app.add_option("--ingest-threads", f.ingest_threads,
                 "Server threads that verify, decode and check updates (0 = one per core)")
      ->check(CLI::Range(0, 64));
  app.add_option("--out", f.out_dir,
                 "Server output folder: checkpoints and a durable round log (group commit: an "
                 "fdatasync per batch of updates before their ACKs). Without it the round log "
                 "is an unlinked temporary file that is never synced");
  app.add_option("--relays", f.relays,
                 "Relay aggregators between the connections and the root (connection i under "
                 "relay i mod R): device updates per second through them")
      ->check(CLI::Range(0, 64));
  app.add_option("--as-relays", f.as_relays,
                 "Every connection is an enrolled relay whose UPDATE is a partial aggregate of "
                 "this many devices: the root's ingest of partials")
      ->check(CLI::Range(0, 1000000));
}

ServerOptions RootOptions(const BenchFlags& f) {
  ServerOptions so;
  so.bind = "tcp://127.0.0.1:*";
  so.model = f.model;
  so.rounds = f.rounds;
  so.min_clients = f.clients;
  so.fraction = 1.0;
  so.mode = f.mode;
  so.async.concurrency = f.clients;
  so.async.buffer = f.buffer > 0 ? f.buffer : f.clients;
  so.async.max_staleness = 1000000;
  so.round_deadline_seconds = 300;
  so.client_timeout_seconds = 1e9;
  so.done_linger_seconds = 0.5;
  so.verbose = false;
  so.sparsity = f.sparsity;
  so.insecure = !f.curve;
  so.ingest_threads = f.ingest_threads;
  so.train.uplink_bits = f.bits;
  so.out_dir = f.out_dir;
  return so;
}

// --signed: one identity per connection, all enrolled in `dir`; --curve: the
// server's identity there too.
Status EnrollConnections(const BenchFlags& f, const std::string& dir, LoadKeys* keys,
                         ServerOptions* so) {
  for (int i = 0; f.signed_updates && i < f.clients; ++i) {
    auto key = SigningKey::Generate();
    auto ck = GenerateCurveKeyPair();
    FL_RETURN_IF_ERROR(!key.ok() ? key.status() : ck.status());
    FL_RETURN_IF_ERROR(
        SavePublicIdentity(dir + "/" + std::to_string(i) + ".pub", key->public_key(),
                           ck->public_key));
    keys->signing.push_back(std::move(key).value());
    if (f.curve) keys->curve.push_back(*ck);
  }
  if (f.curve) {
    auto server_key = SigningKey::Generate();
    auto server_curve = GenerateCurveKeyPair();
    FL_RETURN_IF_ERROR(!server_key.ok() ? server_key.status() : server_curve.status());
    FL_RETURN_IF_ERROR(SaveIdentity(dir + "/server.key.pem", dir + "/server.identity",
                                    *server_key, *server_curve));
    so->key_path = dir + "/server.key.pem";
    keys->server_curve = server_curve->public_key;
  }
  so->clients_dir = dir;
  return Status::OK();
}

// --relays: their identities (signed: enrolled at the root) and the root's
// settings for them. The relays' key files.
Result<std::vector<std::string>> EnrollRelays(const BenchFlags& f, const std::string& dir,
                                              ServerOptions* so) {
  std::vector<std::string> relay_keys;
  so->clients_dir.clear();
  so->min_clients = f.relays;
  so->relay_devices = (f.clients + f.relays - 1) / f.relays;
  so->relays_dir = f.signed_updates ? dir + "/relays" : "any";
  for (int j = 0; f.signed_updates && j < f.relays; ++j) {
    auto key = SigningKey::Generate();
    auto ck = GenerateCurveKeyPair();
    FL_RETURN_IF_ERROR(!key.ok() ? key.status() : ck.status());
    FL_RETURN_IF_ERROR(CreateDirectories(so->relays_dir));
    const std::string name = "relay-" + std::to_string(j);
    FL_RETURN_IF_ERROR(
        SaveIdentity(dir + "/" + name + ".key", so->relays_dir + "/" + name + ".pub", *key, *ck));
    relay_keys.push_back(dir + "/" + name + ".key");
  }
  return relay_keys;
}

// The relays, each a server for its share of the connections and a
// participant to the root at `parent`.
Result<std::vector<std::unique_ptr<Relay>>> StartRelays(
    const BenchFlags& f, const ServerOptions& relay_base, const std::vector<std::string>& keys,
    const std::string& parent, std::shared_ptr<transport::Context> ctx) {
  std::vector<std::unique_ptr<Relay>> relays;
  for (int j = 0; j < f.relays; ++j) {
    ServerOptions ro = relay_base;
    ro.out_dir.clear();
    ro.min_clients = (f.clients - j + f.relays - 1) / f.relays;
    if (f.signed_updates) ro.key_path = keys[static_cast<size_t>(j)];
    auto relay = Relay::Create(ro, ctx, TorchRuntime());
    RelayUplinkOptions up;
    up.parent = parent;
    up.key_path = ro.key_path;
    up.insecure = true;
    up.id = "relay-" + std::to_string(j);
    up.verbose = false;
    const Status st = relay.ok() ? (*relay)->Connect(up, ctx) : relay.status();
    if (!st.ok()) return st.WithContext("relay " + std::to_string(j));
    relays.push_back(std::move(relay).value());
  }
  return relays;
}

void PrintHeader(const BenchFlags& f, const ServerOptions& so, int64_t params, double update_mb) {
  std::printf(
      "fl-bench-ingest: %s, sparsity %.2f (%lld kept values), %d-bit uplink "
      "(%.3f MB per update), %d clients, %d rounds, %s, %d ingest thread(s), round log %s\n",
      f.model.c_str(), f.sparsity, static_cast<long long>(params), f.bits, update_mb, f.clients,
      f.rounds,
      f.mode == "async"
          ? ("async (FedBuff), " + std::to_string(so.async.buffer) + " updates a step").c_str()
          : "sync",
      IngestThreads(f.ingest_threads),
      f.out_dir.empty() ? "not synced (no --out)" : ("durable in " + f.out_dir).c_str());
  if (f.relays > 0) {
    std::printf(
        "through %d relay aggregator(s), %d-%d devices each; the root sees one partial "
        "per relay a round\n",
        f.relays, f.clients / f.relays, (f.clients + f.relays - 1) / f.relays);
  }
  if (f.as_relays > 0) {
    std::printf("every connection is a relay: each UPDATE a partial aggregate of %d devices\n",
                f.as_relays);
  }
  // handle_us: the server threads' time per UPDATE, receive to reply, summed
  // over the threads that worked on it; auth_us: of it, the payload SHA-256
  // and the signature check; auth_share = auth / handle.
  // devices: the device updates the round averaged (through relays: what the
  // relays accepted); dev/s: those over the root's collect time, selection to
  // the last update accepted (TASKs out, training, upload, and through relays
  // their rounds too).
  std::printf("%5s %9s %10s %12s %10s %10s %9s %10s %9s %10s\n", "round", "accepted", "ingest_s",
              "updates/s", "MB/s", "handle_us", "auth_us", "auth_share", "devices", "dev/s");
}

// The rounds' lines, and their totals over rounds 2.. (the first is a warm-up).
struct Totals {
  double updates = 0, seconds = 0, handle = 0, auth = 0, devices = 0, collect = 0;
  int64_t received = 0, together = 0;
  double first_round_end = 0, last_round_end = 0;

  void Add(const RoundMetrics& r, int64_t devices_in, double update_mb) {
    const double ups = r.ingest_seconds > 0 ? (r.participants - 1) / r.ingest_seconds : 0;
    const double n = std::max<int64_t>(1, r.updates_received);
    const double dev_rate = r.collect_seconds > 0 ? devices_in / r.collect_seconds : 0;
    std::printf("%5llu %9d %10.3f %12.1f %10.1f %10.1f %9.1f %9.1f%% %9lld %10.1f%s\n",
                static_cast<unsigned long long>(r.round), r.participants, r.ingest_seconds, ups,
                ups * update_mb, 1e6 * r.update_handle_seconds / n, 1e6 * r.update_auth_seconds / n,
                100 * r.update_auth_seconds / std::max(1e-12, r.update_handle_seconds),
                static_cast<long long>(devices_in), dev_rate, r.round == 1 ? "  (warm-up)" : "");
    std::fflush(stdout);
    last_round_end = NowSeconds();
    if (r.round == 1) first_round_end = last_round_end;
    if (r.round == 1) return;
    devices += static_cast<double>(devices_in);
    collect += r.collect_seconds;
    updates += r.participants - 1;
    seconds += r.ingest_seconds;
    handle += r.update_handle_seconds;
    auth += r.update_auth_seconds;
    received += r.updates_received;
    together += r.updates_prepared_together;
  }

  void Print(const BenchFlags& f) const {
    std::printf(
        "mean over rounds 2..%d: %.1f updates/s accepted; per update %.1f us handled, "
        "%.1f us of it hashing and verifying (%.1f%%); %.1f%% prepared in batches; %.2f rounds/s "
        "(%s)\n",
        f.rounds, updates / seconds, 1e6 * handle / received, 1e6 * auth / received,
        100 * auth / handle, 100.0 * together / std::max<int64_t>(1, received),
        (f.rounds - 1) / std::max(1e-9, last_round_end - first_round_end),
        f.mode == "async" ? "server steps, each after its buffer"
                          : "rounds, selection to checkpoint");
    std::printf("device updates per second over the root's collect time (rounds 2..%d): %.1f\n",
                f.rounds, devices / std::max(1e-9, collect));
  }
};

// The kept values of the model's deltas: the server prunes its initial
// model the same way (same seed).
Result<int64_t> KeptValues(const BenchFlags& f) {
  auto m = CreateModel(f.model, 1);
  if (!m.ok()) return m.status();
  ModelState state = GetModelState(f.model, **m);
  if (f.sparsity > 0) FL_RETURN_IF_ERROR(PruneByMagnitude(&state, f.sparsity, true));
  return state.KeptCount();
}

// The root, the relays and the load; the rounds' lines. The exit code.
int RunBench(const BenchFlags& f, int64_t params, const std::string& enroll_dir) {
  auto ctx = transport::CreateZmqContext(4 * f.clients + 64);  // CURVE adds a monitor per client
  ServerOptions so = RootOptions(f);
  LoadKeys keys;
  Status st = EnrollConnections(f, enroll_dir, &keys, &so);
  const ServerOptions relay_base = so;  // a relay's: the connections are its devices
  if (f.as_relays > 0) {
    // The connections are relays: enrolled as such (or any, unsigned).
    so.clients_dir.clear();
    so.relays_dir = f.signed_updates ? enroll_dir : "any";
    so.relay_devices = f.as_relays;
  }
  Result<std::vector<std::string>> relay_keys = std::vector<std::string>();
  if (st.ok() && f.relays > 0) relay_keys = EnrollRelays(f, enroll_dir, &so);
  if (!st.ok() || !relay_keys.ok()) {
    std::fprintf(stderr, "error: %s\n", (st.ok() ? relay_keys.status() : st).ToString().c_str());
    return 1;
  }
  auto server = Server::Create(so, ctx, TorchRuntime());
  if (!server.ok()) {
    std::fprintf(stderr, "error: %s\n", server.status().ToString().c_str());
    return 1;
  }
  auto relays = StartRelays(f, relay_base, *relay_keys, (*server)->endpoint(), ctx);
  if (!relays.ok()) {
    std::fprintf(stderr, "error: %s\n", relays.status().ToString().c_str());
    return 1;
  }
  std::atomic<bool> stop{false};
  std::vector<std::string> endpoints = {(*server)->endpoint()};
  // Device updates each relay accepted, by round.
  std::mutex relayed_mu;
  std::map<uint64_t, int64_t> relayed;
  if (f.relays > 0) endpoints.clear();
  for (auto& relay : *relays) {
    endpoints.push_back(relay->endpoint());
    relay->Start(&stop, [&](const RoundMetrics& m) {
      std::lock_guard<std::mutex> lock(relayed_mu);
      relayed[m.round] += m.participants;
    });
  }
  Status gen_status;
  std::thread gen(Generate, ctx, endpoints, f.model, f.clients, params, f.bits, f.as_relays,
                  &keys, &stop, &gen_status);
  const double update_mb = QuantEncodedSize(params, f.bits, 256) / 1e6;
  PrintHeader(f, so, params, update_mb);
  Totals totals;
  auto sum = (*server)->Run(nullptr, [&](const RoundMetrics& r) {
    int64_t devices = r.participants;
    if (f.as_relays > 0) devices *= f.as_relays;
    if (f.relays > 0) {
      std::lock_guard<std::mutex> lock(relayed_mu);
      devices = relayed[r.round];
    }
    totals.Add(r, devices, update_mb);
  });
  stop = true;
  gen.join();
  for (auto& relay : *relays) {
    if (Status rs = relay->Join(); !rs.ok()) {
      std::fprintf(stderr, "error: relay: %s\n", rs.ToString().c_str());
    }
  }
  relays->clear();
  if (!sum.ok() || !gen_status.ok()) {
    std::fprintf(stderr, "error: %s\n", (!sum.ok() ? sum.status() : gen_status).ToString().c_str());
    return 1;
  }
  totals.Print(f);
  return 0;
}

int Main(int argc, char** argv) {
  BenchFlags f;
  CLI::App app{"fl-bench-ingest: updates per second accepted by the aggregator"};
  AddFlags(app, f);
  CLI11_PARSE(app, argc, argv);
  f.signed_updates |= f.curve;
  if ((f.relays > 0 || f.as_relays > 0) && (f.curve || f.mode != "sync")) {
    std::fprintf(stderr, "error: --relays and --as-relays run sync rounds, without --curve\n");
    return 2;
  }
  if (f.relays > 0 && f.as_relays > 0) {
    std::fprintf(stderr, "error: --relays or --as-relays, not both\n");
    return 2;
  }
  spdlog::set_level(spdlog::level::warn);
  auto params = KeptValues(f);
  if (!params.ok()) {
    std::fprintf(stderr, "error: %s\n", params.status().ToString().c_str());
    return 2;
  }
  char tmpl[] = "/tmp/fedge_ingest_XXXXXX";
  const std::string enroll_dir = f.signed_updates ? ::mkdtemp(tmpl) : "";
  const int code = RunBench(f, *params, enroll_dir);
  if (!enroll_dir.empty()) std::system(("rm -rf '" + enroll_dir + "'").c_str());
  return code;
}

}  // namespace
}  // namespace fl

int main(int argc, char** argv) { return fl::Main(argc, argv); }
