#include "client/session.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <new>
#include <thread>
#include <variant>

#include "client/device_state.h"
#include "client/result_filters.h"
#include "common/clock.h"
#include "common/codec.h"
#include "common/file_util.h"
#include "common/progress.h"
#include "common/random.h"
#include "common/text.h"
#include "common/wire/envelope.h"
#include "common/wire/limits.h"
#include "common/wire/serialize.h"
#include "crypto/ingress.h"
#include "crypto/message.h"
#include "crypto/model_code.h"

namespace fl {
namespace {

// HELLO refusals that come back the same however often the client retries:
// they need the person running it to change something.
bool IsPermanentRefusal(const std::string& reason) {
  return reason == "wrong_architecture" || reason == "no_common_codec" || reason == "bad_payload";
}

// OK when `model` has exactly the tensors (names and shapes, in order) of
// `layout`; checked before the model is expanded.
Status CheckLayout(const wire::CompactModel& model, const std::vector<TensorLayout>& layout) {
  if (model.tensors.size() != layout.size()) {
    return Status::InvalidArgument("'" + Printable(model.architecture) + "' has " +
                                   std::to_string(layout.size()) + " tensors, the TASK carries " +
                                   std::to_string(model.tensors.size()));
  }
  for (size_t i = 0; i < layout.size(); ++i) {
    if (model.tensors[i].name != layout[i].name || model.tensors[i].shape != layout[i].shape) {
      return Status::InvalidArgument("tensor " + std::to_string(i) +
                                     " of the TASK does not match '" + layout[i].name + "' of '" +
                                     Printable(model.architecture) + "'");
    }
  }
  return Status::OK();
}

}  // namespace

struct ClientSession::Impl {
  ClientOptions o;
  std::shared_ptr<transport::Context> ctx;
  Participant* client;
  std::unique_ptr<transport::Socket> sock;
  ClientStats stats;
  // When the oldest message the server has not answered since was sent; < 0
  // when nothing is unanswered. The server answers every HELLO and UPDATE at
  // once (it never blocks on evaluation), so only silence after we spoke means
  // it is gone; time we spent training ourselves does not count against it.
  double awaiting_since{-1};
  // Freshness stamp of the last HELLO sent (wire::HelloStampNonce).
  uint64_t hello_stamp{0};
  // Freshness on this connection: the stamp of its first HELLO (a DONE must
  // echo that or a later one), and the round the server's latest welcome named
  // (a TASK for an earlier round is a replay).
  uint64_t connection_stamp{0};
  uint64_t task_round_floor{0};
  // Largest TASK payload accepted (Participant::TaskPayloadLimit, set by Start).
  size_t task_limit{std::numeric_limits<size_t>::max()};
  // Bound and authenticate (set by Start): the TASK limit, and with a pinned
  // server key, its signature on every message.
  // The pinned key of each server (`o.server`, then `o.alternates`), and the
  // one this connection goes to.
  std::vector<Ed25519Verifier> server_verifiers;
  size_t at{0};
  const std::string& Endpoint() const { return at == 0 ? o.server : o.alternates[at - 1].endpoint; }
  const std::optional<std::array<uint8_t, 32>>& ServerKey() const {
    return at == 0 ? o.server_key : o.alternates[at - 1].server_key;
  }
  IngressPolicy ingress;
  // A refusal that retrying cannot fix: Step() returns it and the client ends.
  Status fatal;
  double last_hello{-1e9};
  double reconnect_at{0};
  double backoff{0};
  bool done{false};
  std::string done_message;
  // Reason the server last gave for refusing our HELLO (logged once).
  std::string last_hello_reject;
  // Last CURVE handshake failure (logged once until it changes).
  std::string last_handshake_error;
  // Quantization residual carried between rounds (error feedback), and the
  // filters on each result (client/result_filters.h), made by Start.
  ErrorFeedback feedback;
  FilterChain filters;
  // An UPDATE sent and not yet answered (ACK or REJECT).
  bool update_unanswered{false};
  // --state-dir: the device's totals before this run (client/device_state.h).
  DeviceState saved;
  uint64_t last_round_trained{0};

  // Loads what an earlier run of this device kept (--state-dir), and holds
  // the folder's lock: two devices in one folder would overwrite each
  // other's residual.
  Status LoadSaved() {
    if (o.state_dir.empty()) return Status::OK();
    if (Status st = CreateDirectories(o.state_dir); !st.ok()) {
      return Status::InvalidArgument("--state-dir", st.ToString());
    }
    const std::string lock = o.state_dir + "/lock";
    state_lock = ::open(lock.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (state_lock < 0 || ::flock(state_lock, LOCK_EX | LOCK_NB) != 0) {
      return Status::FailedPrecondition("--state-dir " + o.state_dir +
                                        " is in use by another fl-client (its lock file is held)");
    }
    if (auto s = LoadDeviceState(o.state_dir); s.ok()) {
      saved = *s;
      spdlog::info("[{}] state in {}: {} round(s) trained before, the last round {} for {}", o.id,
                   o.state_dir, saved.rounds_trained, saved.last_round, saved.server);
    } else if (!s.status().IsNotFound()) {
      spdlog::warn("[{}] the device's counters start afresh: {}", o.id, s.status().ToString());
    }
    uint64_t round = 0;
    auto residual = LoadResidual(o.state_dir, o.server, &round);
    if (residual.ok()) {
      if (!residual->empty()) {
        spdlog::info("[{}] error-feedback residual of {} values restored (from round {})", o.id,
                     residual->size(), round);
      }
      feedback.Restore(std::move(residual).value());
    } else if (residual.status().code() != Status::Code::kNotFound) {
      spdlog::warn("[{}] error-feedback residual not restored: {}", o.id,
                   residual.status().ToString());
    }
    return Status::OK();
  }
  int state_lock{-1};
  // Keeps the residual and the totals (--state-dir); a failure to write is
  // said, not fatal: the device trains on.
  void SaveResidualOf(uint64_t round) {
    if (o.state_dir.empty()) return;
    if (Status st = SaveResidual(o.state_dir, o.server, round, feedback.residual()); !st.ok()) {
      // An older residual left in place would be added again after a
      // restart: better none.
      std::remove((o.state_dir + "/residual.bin").c_str());
      spdlog::warn("[{}] keeping the error-feedback residual: {}; the kept one is removed", o.id,
                   st.ToString());
    }
  }
  void SaveState() {
    if (o.state_dir.empty()) return;
    DeviceState s = saved;
    s.server = o.server;
    s.rounds_trained += stats.rounds_trained;
    s.updates_accepted += stats.updates_accepted;
    if (last_round_trained > 0) s.last_round = last_round_trained;
    if (Status st = SaveDeviceState(o.state_dir, s); !st.ok()) {
      spdlog::warn("[{}] keeping the device's state: {}", o.id, st.ToString());
    }
  }
  // An encoded UPDATE waiting for the server's grant (its TASK asked before
  // upload): sent on ACK "granted" for its round, asked for again after a
  // reconnect, dropped when the server refuses the READY or the round's
  // deadline has passed.
  struct HeldUpdate {
    uint64_t round{0};
    std::array<uint8_t, 32> version{};
    std::array<uint8_t, wire::kNonceBytes> nonce{};
    std::string payload;  // the encoded wire::Update
    double expires{0};    // the clock's time after which the server no longer waits
  };
  std::optional<HeldUpdate> held;
  // An update held back by the slowdown until `due` (the clock's time), and
  // whether the server asked for a READY before it.
  struct SlowUpdate {
    HeldUpdate update;
    bool ask_before_upload{false};
    double due{0};
  };
  std::optional<SlowUpdate> slow;
  // FNV-1a of the client id: mixed into seeds so that devices draw apart.
  uint64_t IdHash() const {
    uint64_t h = 1469598103934665603ULL;
    for (char c : o.id) h = (h ^ static_cast<uint8_t>(c)) * 1099511628211ULL;
    return h;
  }
  // When the last READY went out, while the server has not answered it
  // (granted or queued): an unanswered READY is sent again.
  std::optional<double> ready_unanswered_since;

  // Closes the connection; Step() opens a new one after the backoff, which
  // doubles up to backoff_max until the server answers again.
  void DropAndBackOff(double now) {
    sock.reset();
    update_unanswered = false;  // (it went with the connection)
    stats.reconnects++;
    if (!o.alternates.empty()) {
      // The next server at once; the backoff grows once all were tried.
      at = (at + 1) % (o.alternates.size() + 1);
      if (at != 0) {
        reconnect_at = now + o.backoff_initial_seconds;
        spdlog::warn("[{}] failing over to {}", o.id, Endpoint());
        return;
      }
      spdlog::warn("[{}] all {} servers tried; back to {} in {:.1f} s", o.id,
                   o.alternates.size() + 1, Endpoint(), backoff);
    }
    reconnect_at = now + backoff;
    backoff = std::min(2 * backoff, o.backoff_max_seconds);
  }

  Status Connect() {
    transport::SocketOptions so;
    so.max_frame_bytes = o.max_frame_bytes;
    if (!o.transport_heartbeats) so.heartbeat_ms = 0;
    so.curve = o.curve;
    if (at > 0) so.curve.server_key = o.alternates[at - 1].curve_server_key;
    auto s = ctx->Connect(Endpoint(), so);
    if (!s.ok()) return s.status();
    sock = std::move(s).value();
    awaiting_since = -1;
    last_hello = -1e9;
    connection_stamp = 0;
    task_round_floor = 0;
    // With an update in hand, the HELLO names its round: the server then does
    // not send that round's TASK again, and the READY that follows asks for
    // the upload on the new connection (a resumed server may have reopened
    // the round; any other answers stale_round).
    FL_RETURN_IF_ERROR(SendHello(held ? held->round : 0));
    return held ? SendReady() : Status::OK();
  }

  Status SendReady() {
    ready_unanswered_since = o.clock->Now();
    wire::Ready ready;
    ready.update_bytes = held->payload.size();
    return Send(wire::MessageType::kReady, held->round, held->version, wire::Encode(ready),
                held->nonce);
  }

  // The grant for the held update came: send it.
  Status SendHeld() {
    HeldUpdate h = std::move(*held);
    held.reset();
    return Send(wire::MessageType::kUpdate, h.round, h.version, std::move(h.payload), h.nonce);
  }

  Status Send(wire::MessageType type, uint64_t round, const std::array<uint8_t, 32>& version,
              std::string payload, const std::array<uint8_t, wire::kNonceBytes>& nonce = {}) {
    wire::Envelope env;
    env.type = type;
    env.flags = wire::kFlagReadsExtensions;
    env.sender = o.id;
    env.round = round;
    env.model_version = version;
    env.nonce = nonce;
    SealedMessage m = SealMessage(env, std::move(payload), o.key);
    stats.bytes_sent += m.envelope.size() + m.payload.size();
    if (awaiting_since < 0) awaiting_since = o.clock->Now();
    if (type == wire::MessageType::kUpdate) update_unanswered = true;
    // Shared, not copied: an UPDATE is as large as the model.
    return sock->SendShared("", {std::make_shared<const std::string>(std::move(m.envelope)),
                                 std::make_shared<const std::string>(std::move(m.payload))});
  }

  // `round` 0 is a heartbeat; a round's number says its TASK arrived (the
  // server paces TASKs over CURVE by these receipts).
  Status SendHello(uint64_t round = 0) {
    wire::Hello h;
    h.num_examples = client->num_examples();
    h.architecture = client->architecture();
    h.codecs = CodecNames();
    h.heartbeat_seconds = o.heartbeat_seconds;
    h.takes_model_code = TakesModelCode();
    h.devices = client->devices();
    last_hello = o.clock->Now();
    // Freshness: a stamp newer than any this process sent before, even if the
    // wall clock steps back.
    const uint64_t wall =
        static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(
                                  std::chrono::system_clock::now().time_since_epoch())
                                  .count());
    hello_stamp = std::max(hello_stamp + 1, wall);
    if (connection_stamp == 0) connection_stamp = hello_stamp;
    return Send(wire::MessageType::kHello, round, {}, wire::Encode(h),
                wire::HelloStampNonce(hello_stamp));
  }

  // Whether this device asks for the server's TorchScript file: it has no
  // model of its own, pinned the server's key and has a folder for the file.
  bool TakesModelCode() const {
    return client->architecture().empty() && o.server_key && !o.model_cache_dir.empty();
  }

  // A TASK that carries the model's file: checked against the pinned server
  // key and the architecture it names before anything parses it, then kept
  // in the cache folder and handed to the participant.
  Status AdoptModelCode(const wire::Task& task) {
    if (!TakesModelCode()) return Status::InvalidArgument("a TASK carries a model file unasked");
    FL_RETURN_IF_ERROR(VerifyModelCode(task.model_code, task.model_code_signature, *ServerKey(),
                                       task.model.architecture));
    FL_RETURN_IF_ERROR(CreateDirectories(o.model_cache_dir));
    const std::string path = o.model_cache_dir + "/" +
                             task.model.architecture.substr(task.model.architecture.find(':') + 1) +
                             ".pt";
    FL_RETURN_IF_ERROR(WriteFileAtomic(path, task.model_code));
    return client->AdoptModelFile(path, task.model.architecture);
  }

  void Bad(const std::string& what) {
    stats.bad_messages++;
    spdlog::warn("[{}] dropped message from server: {}", o.id, what);
  }

  // Takes the payload to free it as soon as it is decoded: a device holds as
  // few copies of the model at once as it can (RSS is measured in
  // experiments/BENCHMARKS.md).
  // With a pinned root key (a device under relays): true when the TASK's
  // model is the root's: its own envelope (`raw`) is the root's, or it
  // carries the root's signed envelope for its round and model. Otherwise
  // says why and returns false.
  bool ModelIsTheRoots(const wire::Envelope& env, const std::string& raw, const wire::Task& task) {
    if (!o.root_key) return true;
    const char* why = nullptr;
    auto root = wire::DecodeEnvelope(task.root_endorsement);
    if (task.root_endorsement.empty()) {
      if (VerifyMessageSignature(raw, *o.root_key).ok()) return true;  // from the root itself
      why = "it carries no endorsement by the root";
    } else if (!root.ok() || !VerifyMessageSignature(task.root_endorsement, *o.root_key).ok()) {
      why = "its endorsement is not signed by the root";
    } else if (root->type != wire::MessageType::kTask || root->round != env.round ||
               root->model_version != env.model_version) {
      why = "the root's endorsement is for another round or model";
    }
    if (!why) return true;
    Bad(std::string("TASK refused: its model is not the root's (--root-key): ") + why);
    return false;
  }

  // Whether a TASK of this round is one to train: not one trained already
  // (its update held back or waiting for the grant), not a replay.
  bool WantsTask(const wire::Envelope& env) {
    if (held && held->round == env.round) return false;  // trained: waits for the grant
    if (env.round < task_round_floor) {
      Bad("TASK for round " + std::to_string(env.round) + ", the server is at round " +
          std::to_string(task_round_floor) + " (a replay)");
      return false;
    }
    if (slow && slow->update.round == env.round) return false;  // trained: held back
    if (slow && env.round > slow->update.round) {
      slow.reset();  // an update held for an earlier round is of no use now
    }
    return true;
  }

  // Decodes and checks a TASK: its model is the one its envelope names (and,
  // with a pinned root key, the root's), its configuration is sane, a model
  // file it carries is adopted, and its layout is this participant's.
  // Nothing is allocated for the model before its configuration and layout
  // are known to be sane: a hostile server's block of 2^32 or shape of 2^34
  // values ends here. Nullopt (said why, or `fatal` set) otherwise.
  std::optional<wire::Task> ReadTask(const wire::Envelope& env, const std::string& raw,
                                     VerifiedMessage& msg) {
    wire::Task task;
    Status st = msg.Decode(&task);
    msg.ReleasePayload();
    if (!st.ok()) return Refused(st.ToString());
    if (ModelVersion(task.model) != env.model_version) {
      return Refused("TASK model does not match the version in its envelope");
    }
    if (!ModelIsTheRoots(env, raw, task)) return std::nullopt;
    if (st = wire::CheckTrainConfig(task.config); !st.ok()) {
      return Refused("TASK refused: " + st.message());
    }
    // The file comes with every TASK until the server hears that this device
    // has it; once adopted, later copies are dropped unread.
    if (!task.model_code.empty() && client->architecture() != task.model.architecture) {
      st = AdoptModelCode(task);
      if (st.code() == Status::Code::kFailedPrecondition) return Fatal(st);
      if (!st.ok()) return Refused("TASK's model file refused: " + st.ToString());
    }
    task.model_code.clear();
    auto layout = client->Layout(task.model.architecture);
    if (!layout.ok() && layout.status().code() == Status::Code::kFailedPrecondition) {
      return Fatal(layout.status());
    }
    st = layout.ok() ? CheckLayout(task.model, *layout) : layout.status();
    if (!st.ok()) return Refused("TASK model refused: " + st.message());
    return task;
  }
  std::nullopt_t Refused(const std::string& why) {
    Bad(why);
    return std::nullopt;
  }
  std::nullopt_t Fatal(Status st) {
    fatal = std::move(st);
    return std::nullopt;
  }

  // The training instructions of `task` (its model expanded: the TASK's
  // compact copy is freed).
  std::optional<FitIns> FitInsOf(const wire::Envelope& env, const std::string& raw,
                                 wire::Task* task) {
    FitIns ins;
    // What a relay hands on: the root's endorsement (this TASK's own envelope
    // when it came from the root) and the model's format.
    ins.root_endorsement = task->root_endorsement.empty() ? raw : task->root_endorsement;
    ins.model_format = static_cast<wire::ValueFormat>(task->model.format);  // (Expand checks it)
    Status st = wire::Expand(task->model, &ins.parameters);
    task->model = wire::CompactModel();
    if (!st.ok()) return Refused("TASK model: " + st.ToString());
    const wire::TrainConfig& c = task->config;
    ins.epochs = c.epochs;
    ins.batch_size = c.batch_size;
    ins.lr = c.lr;
    ins.momentum = c.momentum;
    ins.weight_decay = c.weight_decay;
    ins.proximal_mu = c.proximal_mu;
    ins.trainable = c.trainable;
    ins.class_names = c.class_names;
    ins.normalization.mean = c.normalize_mean;
    ins.normalization.std = c.normalize_std;
    // Each client shuffles differently within a round: mix its id into the
    // round's seed (FNV-1a), so runs stay reproducible given the server's seed.
    ins.seed = c.seed ^ IdHash();
    ins.round = env.round;
    ins.config = c;
    return ins;
  }

  // Trains `ins` into `out->res`. False (said why, or `fatal` set) when the
  // participant cannot.
  bool Train(const wire::Envelope& env, FitIns* ins, Outgoing* out) {
    if (o.verbose) {
      spdlog::info("[{}] round {}: training E={} B={} lr={}{} on {} samples", o.id, env.round,
                   ins->epochs, ins->batch_size, ins->lr,
                   ins->proximal_mu > 0 ? fmt::format(" mu={}", ins->proximal_mu) : std::string(),
                   client->num_examples());
    }
    Progress progress(o.progress_seconds);
    if (o.verbose && o.progress_seconds > 0) {
      // A training round of minutes shows where it is, every few seconds.
      ins->on_progress = [&](double fraction) {
        std::string line;
        if (progress.Due(fraction, &line)) {
          spdlog::info("[{}] round {}: training, {}", o.id, env.round, line);
        }
      };
    }
    auto res = client->Fit(*ins);
    ins->on_progress = nullptr;
    if (!res.ok() && res.status().code() == Status::Code::kFailedPrecondition) {
      fatal = res.status();
      return false;
    }
    if (!res.ok()) {
      // A task this client cannot run (wrong architecture, bad hyperparameters)
      // is the server's mistake, not a reason to stop; say so and stay available.
      Bad("cannot train this task: " + res.status().ToString());
      return false;
    }
    out->round = env.round;
    out->ins = ins;
    out->res = std::move(res).value();
    out->compute_seconds = out->res.seconds;
    return true;
  }

  // A TASK: checked, trained, its result through the filters, its UPDATE sent.
  Status HandleTask(const wire::Envelope& env, const std::string& raw_envelope,
                    VerifiedMessage& msg) {
    const double received_at = o.clock->Now();
    if (!WantsTask(env)) return Status::OK();
    std::optional<wire::Task> task = ReadTask(env, raw_envelope, msg);
    if (!task) return Status::OK();
    std::optional<FitIns> ins = FitInsOf(env, raw_envelope, &*task);
    Outgoing out;
    if (!ins || !Train(env, &*ins, &out)) return Status::OK();
    stats.rounds_trained++;
    FL_RETURN_IF_ERROR(filters.Apply(&out));
    ins->parameters = ModelState();
    stats.train_seconds += out.res.seconds;
    stats.last_train_seconds = out.res.seconds;
    if (out.dropped) {
      stats.dropped_out++;
      slow.reset();
      return Status::OK();
    }
    if (out.update.codec != wire::kCodecExactSum) SaveResidualOf(env.round);
    return SendUpdate(env, *task, received_at, out.compute_seconds, out.res.seconds,
                      out.res.last_epoch_loss, std::move(out.update));
  }

  // Sends (or holds back, for a slower device or the upload grant) the
  // UPDATE `u` for `task`, trained in `compute_seconds` of the `seconds` it
  // counts as.
  Status SendUpdate(const wire::Envelope& env, const wire::Task& task, double received_at,
                    double compute_seconds, double seconds, double loss, wire::Update u) {
    last_round_trained = env.round;
    SaveState();
    if (o.verbose) {
      spdlog::info("[{}] round {}: trained in {:.2f} s{}, loss {:.4f}; sending update ({} bytes)",
                   o.id, env.round, compute_seconds,
                   o.slowdown > 1 ? fmt::format(" ({:.2f} s as a device {}x slower; sent then)",
                                                seconds, o.slowdown)
                                  : std::string(),
                   loss, u.data.size());
    }
    std::string encoded = wire::Encode(u);
    std::string().swap(u.data);
    if (seconds > compute_seconds) {
      // Held back until a device of this speed would have finished.
      slow = SlowUpdate{HeldUpdate{env.round, env.model_version, env.nonce, std::move(encoded),
                                   received_at + task.config.deadline_seconds},
                        task.ask_before_upload, o.clock->Now() + seconds - compute_seconds};
      return Status::OK();
    }
    // The TASK's round nonce goes back under our signature: the update is bound
    // to this round of this server run.
    if (!task.ask_before_upload) {
      return Send(wire::MessageType::kUpdate, env.round, env.model_version, std::move(encoded),
                  env.nonce);
    }
    held = HeldUpdate{env.round, env.model_version, env.nonce, std::move(encoded),
                      received_at + task.config.deadline_seconds};
    return SendReady();
  }

  Status HandleAck(const wire::Envelope& env, const VerifiedMessage& msg) {
    wire::Reply reply;
    if (!msg.Decode(&reply).ok()) return Status::OK();
    if (reply.in_reply_to == static_cast<uint8_t>(wire::MessageType::kUpdate)) {
      stats.updates_accepted++;
      update_unanswered = false;
      SaveState();
    } else if (reply.in_reply_to == static_cast<uint8_t>(wire::MessageType::kReady)) {
      // "queued": the grant follows when there is room at the server.
      if (held && held->round == env.round) {
        ready_unanswered_since.reset();
        if (reply.reason == "granted") return SendHeld();
      }
    } else {
      last_hello_reject.clear();
      task_round_floor = env.round;  // a welcome names the server's round
    }
    return Status::OK();
  }

  // Over-selection: the round closed without this device's update (or,
  // asynchronous mode, the task was given up at its deadline). One still
  // held back (slowdown, or waiting for a grant) stays home. A withdrawal
  // naming a nonce applies to the task with that nonce only: a copy of one
  // sent for an earlier task withdraws nothing.
  void HandleWithdrawal(const wire::Envelope& env) {
    static const std::array<uint8_t, wire::kNonceBytes> kNone{};
    auto names = [&](uint64_t round, const std::array<uint8_t, wire::kNonceBytes>& nonce) {
      return round == env.round && (env.nonce == kNone || env.nonce == nonce);
    };
    const bool slow_named = slow && names(slow->update.round, slow->update.nonce);
    const bool held_named = held && names(held->round, held->nonce);
    if (!slow_named && !held_named && env.nonce != kNone &&
        ((slow && slow->update.round == env.round) || (held && held->round == env.round))) {
      Bad("a withdrawal of another task of round " + std::to_string(env.round) +
          " (a replay); the update stays");
      return;
    }
    const bool had = slow_named || held_named;
    if (slow_named) slow.reset();
    if (held_named) held.reset();
    stats.withdrawn++;
    if (o.verbose) {
      spdlog::info("[{}] round {}: the server closed the round without this task{}", o.id,
                   env.round, had ? "; the update is not sent" : "");
    }
  }

  Status HandleReject(const wire::Envelope& env, const VerifiedMessage& msg) {
    wire::Reply reply;
    if (Status st = msg.Decode(&reply); !st.ok()) {
      Bad(st.ToString());
      return Status::OK();
    }
    const auto about = static_cast<wire::MessageType>(reply.in_reply_to);
    if (about == wire::MessageType::kTask && reply.reason == "not_needed") {
      HandleWithdrawal(env);
      return Status::OK();
    }
    if (about == wire::MessageType::kUpdate) {
      stats.updates_rejected++;
      update_unanswered = false;
    } else if (about == wire::MessageType::kReady) {
      if (!held || held->round != env.round) return Status::OK();
      held.reset();  // the server will not take this update
      stats.updates_rejected++;
    } else if (IsPermanentRefusal(reply.reason)) {
      std::string hint;
      if (reply.reason == "wrong_architecture" && client->architecture().empty()) {
        hint =
            " (this server predates clients that take the architecture from it: start "
            "fl-client with --model and the name the server trains)";
      }
      fatal =
          Status::FailedPrecondition("the server refuses this client (" + Printable(reply.reason) +
                                     "): " + Printable(reply.message, 512) + hint);
      return Status::OK();
    } else if (reply.reason == last_hello_reject) {
      return Status::OK();  // a refused heartbeat repeats; say it once
    } else {
      last_hello_reject = reply.reason;
    }
    spdlog::warn("[{}] server rejected our {} (round {}): {}: {}", o.id,
                 wire::MessageTypeName(about), env.round, Printable(reply.reason),
                 Printable(reply.message, 512));
    return Status::OK();
  }

  // A DONE echoes the freshness stamp of a HELLO this connection sent: a
  // DONE captured from another connection or run cannot stop the client.
  void HandleDone(const wire::Envelope& env, const VerifiedMessage& msg) {
    const uint64_t echoed = wire::HelloStampOf(env.nonce);
    if (connection_stamp == 0 || echoed < connection_stamp) {
      Bad("DONE does not answer this connection's HELLO (a replay)");
      return;
    }
    wire::Done d;
    if (Status st = msg.Decode(&d); !st.ok()) {
      Bad(st.ToString());
      return;
    }
    done = true;
    done_message = Printable(d.message, 512);
    if (o.verbose) {
      spdlog::info("[{}] server says done after {} rounds: {}", o.id, d.rounds_completed,
                   done_message);
    }
  }

  // May take r.frames (a TASK's payload is moved out).
  Status Handle(transport::Received& r) {
    stats.bytes_received += r.bytes;
    // Bound, then authenticate (signature, then the payload's hash), then
    // decode: only a VerifiedMessage is decoded (crypto/ingress.h).
    auto verified = Authenticate(r.frame_count, &r.frames, r.peer_key, ingress, nullptr);
    if (auto* refusal = std::get_if<Refusal>(&verified)) {
      Bad((refusal->envelope
               ? std::string(wire::MessageTypeName(refusal->envelope->type)) + " from server: "
               : std::string()) +
          refusal->reason + ": " + refusal->message);
      return Status::OK();
    }
    VerifiedMessage& msg = std::get<VerifiedMessage>(verified);
    const wire::Envelope* env = &msg.envelope();
    awaiting_since = -1;
    backoff = o.backoff_initial_seconds;
    switch (env->type) {
      case wire::MessageType::kTask:
        // Receipt first: training blocks this thread for a while, and the
        // server sends the next TASK once this one is here.
        if (env->round >= task_round_floor) (void)SendHello(env->round);
        // An allocation that fails on a small device ends this TASK, not the
        // client: it says so and stays available for the next round.
        try {
          return HandleTask(*env, r.frames[0], msg);
        } catch (const std::bad_alloc&) {
          Bad("out of memory handling the TASK of round " + std::to_string(env->round));
          return Status::OK();
        }
      case wire::MessageType::kAck:
        return HandleAck(*env, msg);
      case wire::MessageType::kReject:
        return HandleReject(*env, msg);
      case wire::MessageType::kDone:
        HandleDone(*env, msg);
        return Status::OK();
      default:
        Bad(std::string("unexpected ") + wire::MessageTypeName(env->type) + " from server");
        return Status::OK();
    }
  }
};

ClientSession::ClientSession(ClientOptions options, std::shared_ptr<transport::Context> context,
                             Participant* client)
    : impl_(new Impl) {
  impl_->o = std::move(options);
  if (!impl_->o.clock) impl_->o.clock = SystemClock();
  impl_->ctx = std::move(context);
  impl_->client = client;
  impl_->backoff = impl_->o.backoff_initial_seconds;
}

ClientSession::~ClientSession() {
  if (impl_->state_lock >= 0) ::close(impl_->state_lock);  // (the lock goes with it)
}

Status ClientSession::Start() {
  if (!wire::IsValidSenderId(impl_->o.id)) {
    return Status::InvalidArgument("client id '" + impl_->o.id +
                                   "' must be 1-32 printable ASCII characters without spaces");
  }
  FL_RETURN_IF_ERROR(impl_->LoadSaved());
  const ClientOptions& o = impl_->o;
  if (!(o.slowdown >= 1 && o.slowdown <= 1000)) {
    return Status::InvalidArgument("--slowdown must be in [1, 1000]");
  }
  if (!(o.dropout >= 0 && o.dropout < 1)) {
    return Status::InvalidArgument("--dropout must be in [0, 1)");
  }
  FilterOptions f;
  f.train_delay_seconds = o.debug_train_delay_seconds;
  f.clock = o.clock;
  f.slowdown = o.slowdown;
  f.dropout = o.dropout;
  // The dropout's draws: per device, reproducible.
  f.fault_seed = o.fault_seed * 0x9E3779B97F4A7C15ULL ^ impl_->IdHash();
  f.id = o.id;
  f.verbose = o.verbose;
  impl_->filters = DeviceFilters(f, &impl_->feedback);
  // Every TASK is bounded before it is hashed or decoded: by the model this
  // client trains, or the largest one it could be asked to.
  impl_->task_limit = impl_->client->TaskPayloadLimit();
  // A device that takes the server's file does not know its size: the frame
  // cap bounds it.
  if (impl_->TakesModelCode()) impl_->task_limit = impl_->o.max_frame_bytes;
  Impl* s = impl_.get();
  s->ingress.max_frame_bytes = s->o.max_frame_bytes;
  s->ingress.payload_limit = [s](wire::MessageType t) {
    return t == wire::MessageType::kTask ? s->task_limit : wire::kMaxSmallPayloadBytes;
  };
  for (const auto& alt : s->o.alternates) {
    if (alt.server_key.has_value() != s->o.server_key.has_value()) {
      return Status::InvalidArgument("pin the key of every server or of none (" + alt.endpoint +
                                     ")");
    }
  }
  if (s->o.server_key) {
    for (size_t i = 0; i <= s->o.alternates.size(); ++i) {
      const auto& key = i == 0 ? *s->o.server_key : *s->o.alternates[i - 1].server_key;
      auto verifier = Ed25519Verifier::Create(key);
      if (!verifier.ok()) return verifier.status().WithContext("the server's key");
      s->server_verifiers.push_back(*verifier);
    }
    // Whatever the sender calls itself, the pinned key of the server this
    // connection reaches must have signed it.
    s->ingress.sender = [s](const std::string&) -> std::optional<KnownSender> {
      KnownSender k;
      k.verifier = &s->server_verifiers[s->at];
      return k;
    };
  }
  return impl_->Connect();
}

Status ClientSession::Step() {
  Impl& s = *impl_;
  if (!s.fatal.ok()) return s.fatal;
  if (s.done) return Status::OK();
  if (!s.sock) {
    if (s.o.clock->Now() < s.reconnect_at) return Status::OK();
    spdlog::info("[{}] reconnecting to {}", s.o.id, s.Endpoint());
    return s.Connect();
  }
  for (int i = 0; i < 64 && !s.done; ++i) {  // bounded so one peer cannot starve the rest
    transport::Received r;
    auto got = s.sock->TryReceive(&r);
    if (!got.ok()) return got.status();
    if (!*got) break;
    FL_RETURN_IF_ERROR(s.Handle(r));
    if (!s.fatal.ok()) return s.fatal;
  }
  if (s.done) return Status::OK();
  std::string handshake = s.sock->TakeHandshakeError();
  if (!handshake.empty()) {
    // ZeroMQ does not retry a refused handshake: connect again after the
    // backoff (the device may be enrolled by then).
    s.stats.handshake_failures++;
    if (handshake != s.last_handshake_error) {
      spdlog::error("[{}] {} ({}); retrying with backoff", s.o.id, handshake, s.Endpoint());
      s.last_handshake_error = handshake;
    }
    s.DropAndBackOff(s.o.clock->Now());
    return Status::OK();
  }
  const double now = s.o.clock->Now();
  if (s.slow && now >= s.slow->due) {
    // The slowdown's wait is over: the update goes out as it would have,
    // unless the round's deadline passed meanwhile (the server would refuse
    // it, and its bytes would be spent for nothing).
    Impl::SlowUpdate u = std::move(*s.slow);
    s.slow.reset();
    Status st;
    if (now > u.update.expires) {
      spdlog::warn(
          "[{}] round {}: a device this slow misses the round's deadline; dropping "
          "the update",
          s.o.id, u.update.round);
    } else if (u.ask_before_upload) {
      s.held = std::move(u.update);
      st = s.SendReady();
    } else {
      st = s.Send(wire::MessageType::kUpdate, u.update.round, u.update.version,
                  std::move(u.update.payload), u.update.nonce);
    }
    if (!st.ok() && st.code() != Status::Code::kUnavailable) return st;
  }
  if (s.held && now > s.held->expires) {
    spdlog::warn(
        "[{}] round {}: the server did not let the update in before the round's "
        "deadline; dropping it",
        s.o.id, s.held->round);
    s.held.reset();
  }
  if (s.held && s.ready_unanswered_since &&
      now - *s.ready_unanswered_since > 2 * s.o.heartbeat_seconds) {
    // The server drops messages over its rate limit unanswered: ask again.
    Status st = s.SendReady();
    if (!st.ok() && st.code() != Status::Code::kUnavailable) return st;
  }
  if (s.awaiting_since >= 0 && now - s.awaiting_since > s.o.server_timeout_seconds) {
    spdlog::warn("[{}] no answer from {} for {:.0f} s{}", s.o.id, s.Endpoint(),
                 now - s.awaiting_since,
                 s.o.alternates.empty() ? fmt::format("; reconnecting in {:.1f} s", s.backoff)
                                        : std::string());
    s.DropAndBackOff(now);
    return Status::OK();
  }
  if (now - s.last_hello >= s.o.heartbeat_seconds) {
    Status st = s.SendHello();
    // A full send queue means the server is not reading; the timeout handles it.
    if (!st.ok() && st.code() != Status::Code::kUnavailable) return st;
  }
  return Status::OK();
}

transport::Socket* ClientSession::socket() const { return impl_->sock.get(); }

double ClientSession::SecondsUntilDue() const {
  const Impl& s = *impl_;
  const double now = s.o.clock->Now();
  if (!s.sock) return std::max(0.0, s.reconnect_at - now);
  const double hb = s.last_hello + s.o.heartbeat_seconds - now;
  const double slow = s.slow ? s.slow->due - now : hb;
  if (s.awaiting_since < 0) return std::max(0.0, std::min(hb, slow));
  const double to = s.awaiting_since + s.o.server_timeout_seconds - now;
  return std::max(0.0, std::min({hb, to, slow}));
}

bool ClientSession::done() const { return impl_->done; }
bool ClientSession::idle() const {
  return !impl_->held && !impl_->slow && !impl_->update_unanswered;
}
const std::string& ClientSession::done_message() const { return impl_->done_message; }
const ClientStats& ClientSession::stats() const { return impl_->stats; }
const Clock& ClientSession::clock() const { return *impl_->o.clock; }
const std::string& ClientSession::id() const { return impl_->o.id; }

Status RunClient(ClientSession* session, std::shared_ptr<transport::Context> context,
                 const std::atomic<bool>* stop, const std::function<bool()>& leave_when_idle) {
  std::vector<bool> ready;
  while (!session->done() && !(stop && stop->load()) &&
         !(leave_when_idle && session->idle() && leave_when_idle())) {
    const int wait_ms = static_cast<int>(std::min(0.2, session->SecondsUntilDue()) * 1000) + 1;
    if (transport::Socket* s = session->socket()) {
      auto r = context->Poll({s}, wait_ms, &ready);
      if (!r.ok()) return r.status();
    } else {
      session->clock().SleepFor(wait_ms / 1000.0);
    }
    FL_RETURN_IF_ERROR(session->Step());
  }
  return Status::OK();
}

}  // namespace fl
