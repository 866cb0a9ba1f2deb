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

// Load generator: K DEALER connections that register and answer each TASK.
// Connection i reaches endpoints[i mod size]; with `partial_of` > 1 its
// UPDATEs are partial aggregates of that many devices.
void Generate(std::shared_ptr<transport::Context> ctx, const std::vector<std::string>& endpoints,
              const std::string& model, int k, int64_t kept, int bits, int partial_of,
              LoadKeys* load, std::atomic<bool>* stop, Status* status) {
  std::vector<SigningKey>* keys = &load->signing;
  // One UPDATE payload for everyone: its digest is computed once, so the
  // generator spends its time sending, not hashing.
  Random rng(7);
  std::vector<float> delta(kept);
  for (auto& v : delta) v = static_cast<float>(rng.Normal() * 1e-3);
  QuantOptions q;
  q.bits = bits;
  wire::Update u{600, 0.1, 1.0, wire::kCodecQuant, QuantEncode(delta.data(), delta.size(), q)};
  if (partial_of > 1) {
    // A relay's partial: the exact sum of its devices' deltas (each the same
    // one here) and their weight.
    u.num_examples = 600 * partial_of;
    u.contributors = static_cast<uint32_t>(partial_of);
    u.codec = wire::kCodecExactSum;
    FixedSum sum;
    *status = AddWeighted(&sum, u.num_examples, delta.data(), delta.size());
    if (!status->ok()) return;
    u.data = EncodeFixedSum(sum);
  }
  const std::string payload = wire::Encode(u);
  const Sha256Digest digest = Sha256(payload);
  wire::Hello hello{600, model, {wire::kCodecQuant}, 1.0};

  std::vector<std::unique_ptr<transport::Socket>> socks;
  std::vector<std::string> ids;
  std::vector<int> key_index;  // socket i signs with (*keys)[key_index[i]]
  // Encodes `e` and, when keys were given, signs it (the payload digest is
  // precomputed, so only the signature is per message).
  auto Envelope = [&](const wire::Envelope& e, int i) {
    return SealEnvelope(e, keys->empty() ? nullptr : &(*keys)[key_index[i]]);
  };
  for (int i = 0; i < k; ++i) {
    transport::SocketOptions so;
    if (!load->curve.empty()) {
      so.curve.secret_key = KeyBytes(load->curve[i].secret_key);
      so.curve.public_key = KeyBytes(load->curve[i].public_key);
      so.curve.server_key = KeyBytes(load->server_curve);
    }
    auto s = ctx->Connect(endpoints[static_cast<size_t>(i) % endpoints.size()], so);
    if (!s.ok()) {
      *status = s.status();
      return;
    }
    socks.push_back(std::move(s).value());
    char id[32];
    std::snprintf(id, sizeof(id), "load-%05d", i);
    ids.push_back(keys->empty() ? std::string(id) : NodeId((*keys)[i].public_key()));
    key_index.push_back(i);
  }
  auto send_hello = [&](int i) {
    const std::string p = wire::Encode(hello);
    wire::Envelope e;
    e.type = wire::MessageType::kHello;
    e.sender = ids[i];
    e.payload_length = p.size();
    e.payload_digest = Sha256(p);
    (void)socks[i]->Send("", {Envelope(e, i), p});
  };
  for (int i = 0; i < k; ++i) send_hello(i);
  std::vector<transport::Socket*> raw;
  for (auto& s : socks) raw.push_back(s.get());
  std::vector<bool> ready;
  while (!stop->load()) {
    auto r = ctx->Poll(raw, 100, &ready);
    if (!r.ok()) {
      *status = r.status();
      return;
    }
    for (int i = 0; i < k; ++i) {
      if (!ready[i]) continue;
      transport::Received rx;
      while (true) {
        auto got = socks[i]->TryReceive(&rx);
        if (!got.ok() || !*got) break;
        if (rx.frame_count != 2) continue;
        auto env = wire::DecodeEnvelope(rx.frames[0]);
        if (!env.ok()) continue;
        if (env->type == wire::MessageType::kTask) {
          wire::Envelope e;
          e.type = wire::MessageType::kUpdate;
          e.sender = ids[i];
          e.round = env->round;
          e.model_version = env->model_version;
          e.nonce = env->nonce;
          e.payload_length = payload.size();
          e.payload_digest = digest;
          (void)socks[i]->Send("", {Envelope(e, i), payload});
        } else if (env->type == wire::MessageType::kDone) {
          socks[i].reset();
          raw[i] = nullptr;
          break;
        }
      }
    }
    bool all_done = true;
    for (auto* s : raw) all_done &= (s == nullptr);
    if (all_done) return;
    // Closed sockets leave the poll set.
    std::vector<transport::Socket*> live;
    for (auto* s : raw) {
      if (s) live.push_back(s);
    }
    if (live.size() != raw.size()) {
      std::vector<std::unique_ptr<transport::Socket>> kept_socks;
      std::vector<std::string> kept_ids;
      std::vector<int> kept_keys;
      for (int i = 0; i < k; ++i) {
        if (socks[i]) {
          kept_socks.push_back(std::move(socks[i]));
          kept_ids.push_back(ids[i]);
          kept_keys.push_back(key_index[i]);
        }
      }
      socks = std::move(kept_socks);
      ids = std::move(kept_ids);
      key_index = std::move(kept_keys);
      raw = live;
      k = static_cast<int>(socks.size());
    }
  }
}

int Main(int argc, char** argv) {
  std::string model = "mnist_cnn";
  int clients = 100;
  int rounds = 6;
  int bits = 32;
  double sparsity = 0;
  std::string mode = "sync";
  int buffer = 0;
  bool signed_updates = false;
  CLI::App app{"fl-bench-ingest: updates per second accepted by the aggregator"};
  app.add_option("--model", model, "Architecture (sets the update size)")->capture_default_str();
  app.add_option("--clients", clients, "Connections sending updates each round")
      ->capture_default_str()
      ->check(CLI::Range(2, 5000));
  app.add_option("--rounds", rounds, "Rounds (the first is a warm-up)")
      ->capture_default_str()
      ->check(CLI::Range(2, 1000));
  app.add_option("--mode", mode, "Server scheduler: sync or async (FedBuff)")
      ->capture_default_str()
      ->check(CLI::IsMember({"sync", "async"}));
  app.add_option("--buffer", buffer, "async: updates per server step (0 = --clients)")
      ->capture_default_str();
  app.add_option("--bits", bits, "Uplink bits per value: 32, 8, 4, 2")->capture_default_str();
  app.add_option("--sparsity", sparsity, "Prune the model to this sparsity first")
      ->capture_default_str();
  app.add_flag("--signed", signed_updates,
               "Enrolled clients sign every message; the server checks each signature");
  bool curve = false;
  app.add_flag("--curve", curve, "CURVE-encrypted connections (implies --signed)");
  int ingest_threads = 0;
  app.add_option("--ingest-threads", ingest_threads,
                 "Server threads that verify, decode and check updates (0 = one per core)")
      ->check(CLI::Range(0, 64));
  std::string out_dir;
  app.add_option("--out", out_dir,
                 "Server output folder: checkpoints and a durable round log (group commit: an "
                 "fdatasync per batch of updates before their ACKs). Without it the round log "
                 "is an unlinked temporary file that is never synced");
  int relays = 0, as_relays = 0;
  app.add_option("--relays", relays,
                 "Relay aggregators between the connections and the root (connection i under "
                 "relay i mod R): device updates per second through them")
      ->check(CLI::Range(0, 64));
  app.add_option("--as-relays", as_relays,
                 "Every connection is an enrolled relay whose UPDATE is a partial aggregate of "
                 "this many devices: the root's ingest of partials")
      ->check(CLI::Range(0, 1000000));
  CLI11_PARSE(app, argc, argv);
  signed_updates |= curve;
  if ((relays > 0 || as_relays > 0) && (curve || mode != "sync")) {
    std::fprintf(stderr, "error: --relays and --as-relays run sync rounds, without --curve\n");
    return 2;
  }
  if (relays > 0 && as_relays > 0) {
    std::fprintf(stderr, "error: --relays or --as-relays, not both\n");
    return 2;
  }
  spdlog::set_level(spdlog::level::warn);

  auto m = CreateModel(model, 1);
  if (!m.ok()) {
    std::fprintf(stderr, "error: %s\n", m.status().ToString().c_str());
    return 2;
  }
  // The server prunes its initial model the same way (same seed), so this is
  // the kept count its deltas must have.
  ModelState state = GetModelState(model, **m);
  if (sparsity > 0) {
    Status st = PruneByMagnitude(&state, sparsity, true);
    if (!st.ok()) {
      std::fprintf(stderr, "error: %s\n", st.ToString().c_str());
      return 2;
    }
  }
  const int64_t params = state.KeptCount();
  auto ctx = transport::CreateZmqContext(4 * clients + 64);  // CURVE adds a monitor per client
  ServerOptions so;
  so.bind = "tcp://127.0.0.1:*";
  so.model = model;
  so.rounds = rounds;
  so.min_clients = clients;
  so.fraction = 1.0;
  so.mode = mode;
  so.async.concurrency = clients;
  so.async.buffer = buffer > 0 ? buffer : clients;
  so.async.max_staleness = 1000000;
  so.round_deadline_seconds = 300;
  so.client_timeout_seconds = 1e9;
  so.done_linger_seconds = 0.5;
  so.verbose = false;
  so.sparsity = sparsity;
  so.insecure = !curve;
  so.ingest_threads = ingest_threads;
  so.train.uplink_bits = bits;
  so.out_dir = out_dir;
  // --signed: one identity per connection, all enrolled with the server.
  LoadKeys keys;
  char tmpl[] = "/tmp/fedge_ingest_XXXXXX";
  const std::string enroll_dir = signed_updates ? ::mkdtemp(tmpl) : "";
  for (int i = 0; signed_updates && i < clients; ++i) {
    auto key = SigningKey::Generate();
    auto ck = GenerateCurveKeyPair();
    Status st = !key.ok() ? key.status() : !ck.ok() ? ck.status() : Status::OK();
    if (st.ok()) {
      st = SavePublicIdentity(enroll_dir + "/" + std::to_string(i) + ".pub", key->public_key(),
                              ck->public_key);
    }
    if (!st.ok()) {
      std::fprintf(stderr, "error: %s\n", st.ToString().c_str());
      return 1;
    }
    keys.signing.push_back(std::move(key).value());
    if (curve) keys.curve.push_back(*ck);
  }
  if (curve) {
    auto server_key = SigningKey::Generate();
    auto server_curve = GenerateCurveKeyPair();
    Status st = !server_key.ok() ? server_key.status()
                : !server_curve.ok()
                    ? server_curve.status()
                    : SaveIdentity(enroll_dir + "/server.key.pem", enroll_dir + "/server.identity",
                                   *server_key, *server_curve);
    if (!st.ok()) {
      std::fprintf(stderr, "error: %s\n", st.ToString().c_str());
      return 1;
    }
    so.key_path = enroll_dir + "/server.key.pem";
    keys.server_curve = server_curve->public_key;
  }
  so.clients_dir = enroll_dir;
  ServerOptions relay_base = so;  // a relay's: the connections are its devices
  if (as_relays > 0) {
    // The connections are relays: enrolled as such (or any, unsigned).
    so.clients_dir.clear();
    so.relays_dir = signed_updates ? enroll_dir : "any";
    so.relay_devices = as_relays;
  }
  // --relays: their identities (signed: enrolled at the root), the root's
  // settings for them, and the relays themselves.
  std::vector<std::string> relay_keys;
  if (relays > 0) {
    so.clients_dir.clear();
    so.min_clients = relays;
    so.relay_devices = (clients + relays - 1) / relays;
    so.relays_dir = signed_updates ? enroll_dir + "/relays" : "any";
    for (int j = 0; signed_updates && j < relays; ++j) {
      auto key = SigningKey::Generate();
      auto ck = GenerateCurveKeyPair();
      Status st = !key.ok() ? key.status() : !ck.ok() ? ck.status() : Status::OK();
      if (st.ok()) st = CreateDirectories(so.relays_dir);
      const std::string name = "relay-" + std::to_string(j);
      if (st.ok()) {
        st = SaveIdentity(enroll_dir + "/" + name + ".key", so.relays_dir + "/" + name + ".pub",
                          *key, *ck);
      }
      if (!st.ok()) {
        std::fprintf(stderr, "error: %s\n", st.ToString().c_str());
        return 1;
      }
      relay_keys.push_back(enroll_dir + "/" + name + ".key");
    }
  }
  auto server = Server::Create(so, ctx, TorchRuntime());
  if (!server.ok()) {
    std::fprintf(stderr, "error: %s\n", server.status().ToString().c_str());
    return 1;
  }
  std::atomic<bool> stop{false};
  std::vector<std::string> endpoints = {(*server)->endpoint()};
  // Device updates each relay accepted, by round.
  std::mutex relayed_mu;
  std::map<uint64_t, int64_t> relayed;
  std::vector<std::unique_ptr<Relay>> relay_servers;
  for (int j = 0; j < relays; ++j) {
    ServerOptions ro = relay_base;
    ro.out_dir.clear();
    ro.min_clients = (clients - j + relays - 1) / relays;
    if (signed_updates) ro.key_path = relay_keys[static_cast<size_t>(j)];
    auto relay = Relay::Create(ro, ctx, TorchRuntime());
    RelayUplinkOptions up;
    up.parent = (*server)->endpoint();
    up.key_path = ro.key_path;
    up.insecure = true;
    up.id = "relay-" + std::to_string(j);
    up.verbose = false;
    const Status st = relay.ok() ? (*relay)->Connect(up, ctx) : relay.status();
    if (!st.ok()) {
      std::fprintf(stderr, "error: relay %d: %s\n", j, st.ToString().c_str());
      return 1;
    }
    relay_servers.push_back(std::move(relay).value());
  }
  if (relays > 0) endpoints.clear();
  for (auto& relay : relay_servers) {
    endpoints.push_back(relay->endpoint());
    relay->Start(&stop, [&](const RoundMetrics& m) {
      std::lock_guard<std::mutex> lock(relayed_mu);
      relayed[m.round] += m.participants;
    });
  }
  Status gen_status;
  std::thread gen(Generate, ctx, endpoints, model, clients, params, bits, as_relays, &keys, &stop,
                  &gen_status);
  const double update_mb = QuantEncodedSize(params, bits, 256) / 1e6;
  std::printf(
      "fl-bench-ingest: %s, sparsity %.2f (%lld kept values), %d-bit uplink "
      "(%.3f MB per update), %d clients, %d rounds, %s, %d ingest thread(s), round log %s\n",
      model.c_str(), sparsity, static_cast<long long>(params), bits, update_mb, clients, rounds,
      mode == "async"
          ? ("async (FedBuff), " + std::to_string(so.async.buffer) + " updates a step").c_str()
          : "sync",
      IngestThreads(ingest_threads),
      out_dir.empty() ? "not synced (no --out)" : ("durable in " + out_dir).c_str());
  if (relays > 0) {
    std::printf(
        "through %d relay aggregator(s), %d-%d devices each; the root sees one partial "
        "per relay a round\n",
        relays, clients / relays, (clients + relays - 1) / relays);
  }
  if (as_relays > 0) {
    std::printf("every connection is a relay: each UPDATE a partial aggregate of %d devices\n",
                as_relays);
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
  double total_updates = 0, total_seconds = 0, total_handle = 0, total_auth = 0;
  int64_t total_received = 0, total_together = 0;
  double first_round_end = 0, last_round_end = 0;
  double total_devices = 0, total_collect = 0;
  auto sum = (*server)->Run(nullptr, [&](const RoundMetrics& r) {
    const double ups = r.ingest_seconds > 0 ? (r.participants - 1) / r.ingest_seconds : 0;
    const double n = std::max<int64_t>(1, r.updates_received);
    int64_t devices = r.participants;
    if (as_relays > 0) devices *= as_relays;
    if (relays > 0) {
      std::lock_guard<std::mutex> lock(relayed_mu);
      devices = relayed[r.round];
    }
    const double dev_rate = r.collect_seconds > 0 ? devices / r.collect_seconds : 0;
    std::printf("%5llu %9d %10.3f %12.1f %10.1f %10.1f %9.1f %9.1f%% %9lld %10.1f%s\n",
                static_cast<unsigned long long>(r.round), r.participants, r.ingest_seconds, ups,
                ups * update_mb, 1e6 * r.update_handle_seconds / n, 1e6 * r.update_auth_seconds / n,
                100 * r.update_auth_seconds / std::max(1e-12, r.update_handle_seconds),
                static_cast<long long>(devices), dev_rate, r.round == 1 ? "  (warm-up)" : "");
    std::fflush(stdout);
    last_round_end = NowSeconds();
    if (r.round == 1) first_round_end = last_round_end;
    if (r.round > 1) {
      total_devices += static_cast<double>(devices);
      total_collect += r.collect_seconds;
      total_updates += r.participants - 1;
      total_seconds += r.ingest_seconds;
      total_handle += r.update_handle_seconds;
      total_auth += r.update_auth_seconds;
      total_received += r.updates_received;
      total_together += r.updates_prepared_together;
    }
  });
  stop = true;
  gen.join();
  for (auto& relay : relay_servers) {
    if (Status st = relay->Join(); !st.ok()) {
      std::fprintf(stderr, "error: relay: %s\n", st.ToString().c_str());
    }
  }
  relay_servers.clear();
  if (!sum.ok() || !gen_status.ok()) {
    std::fprintf(stderr, "error: %s\n", (!sum.ok() ? sum.status() : gen_status).ToString().c_str());
    return 1;
  }
  std::printf(
      "mean over rounds 2..%d: %.1f updates/s accepted; per update %.1f us handled, "
      "%.1f us of it hashing and verifying (%.1f%%); %.1f%% prepared in batches; %.2f rounds/s "
      "(%s)\n",
      rounds, total_updates / total_seconds, 1e6 * total_handle / total_received,
      1e6 * total_auth / total_received, 100 * total_auth / total_handle,
      100.0 * total_together / std::max<int64_t>(1, total_received),
      (rounds - 1) / std::max(1e-9, last_round_end - first_round_end),
      mode == "async" ? "server steps, each after its buffer" : "rounds, selection to checkpoint");
  std::printf("device updates per second over the root's collect time (rounds 2..%d): %.1f\n",
              rounds, total_devices / std::max(1e-9, total_collect));
  if (!enroll_dir.empty()) std::system(("rm -rf '" + enroll_dir + "'").c_str());
  return 0;
}

}  // namespace
}  // namespace fl

int main(int argc, char** argv) { return fl::Main(argc, argv); }
