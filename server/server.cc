// The conductor's receive path and the verbs it offers its scheduler
// (server/conductor.h); Server's public face.
#include "server/server.h"

#include <openssl/crypto.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <csignal>
#include <limits>
#include <thread>

#include "common/clock.h"
#include "common/codec.h"
#include "common/text.h"
#include "common/wire/envelope.h"
#include "common/wire/limits.h"
#include "common/wire/serialize.h"
#include "crypto/identity.h"
#include "crypto/sha256.h"
#include "server/conductor.h"
#include "server/metrics.h"

namespace fl {

double RoundLearningRate(const ServerOptions& o, int round) {
  const double lr = o.train.lr * std::pow(o.lr_decay, std::max(0, round - 1));
  // Clients train in float: a rate below the smallest normal float trains nothing.
  return std::max({lr, o.lr_min, static_cast<double>(std::numeric_limits<float>::min())});
}

int IngestThreads(int requested) {
  if (requested > 0) return requested;
  const unsigned cores = std::thread::hardware_concurrency();
  return static_cast<int>(std::clamp(cores, 1u, 8u));
}

namespace {

// The server's id in envelopes it sends.
const char kServerId[] = "server";
// Type reported in a REJECT when the refused message's type is unknown.
const wire::MessageType kUnknownType = static_cast<wire::MessageType>(0);
// Log at most this many refusals per reason per round; the rest are counted.
const int kLogPerReason = 5;
// Messages received and prepared on the ingest threads together: enough to
// keep every thread busy, few enough that replies are not held back.
const size_t kIngestBatch = 32;

}  // namespace

// --- the verbs --------------------------------------------------------------

Status Conductor::BeginRound(uint64_t r) {
  open().Reset(r);
  return LoadEnrollment();
}

// Receives and handles messages until `until` (a Now() time) or `*stop`.
// Returns early when `done_when` says so.
Status Conductor::Pump(double until, const std::atomic<bool>* stop,
                       const std::function<bool()>& done_when) {
  std::vector<bool> ready;
  while (!(stop && stop->load()) && !(done_when && done_when())) {
    if (o_.reload_enrollment && o_.reload_enrollment->exchange(false)) {
      Status st = LoadEnrollment();
      if (!st.ok()) spdlog::error("reloading enrollment: {}", st.ToString());
    }
    const double left = until - Now();
    if (left <= 0) break;
    // Freed task slots are handed out before the wait for messages (the
    // devices they go to are what the server would wait for).
    if (open().collecting) scheduler_->Tick();
    // While ACKs wait for the log's sync, look again within a millisecond.
    const double wait = open().unsynced_acks.empty() ? std::min(left, 0.2) : 0.0;
    auto r = ctx_->Poll({sock_.get()}, static_cast<int>(wait * 1000) + 1, &ready);
    if (!r.ok()) return r.status();
    // Handle what is waiting, bounded so the deadline is still checked.
    FL_RETURN_IF_ERROR(Drain(256));
    FL_RETURN_IF_ERROR(CommitAcks(/*wait=*/false));
    GrantTransfers();  // grants that lapsed make room
    CountRefusedConnections();
    PublishMetrics();
    FL_RETURN_IF_ERROR(reporter_->Report(/*wait=*/false));
  }
  return Status::OK();
}

// Handshakes the ZAP thread refused, and connections past the cap, since the
// last look.
void Conductor::CountRefusedConnections() {
  RoundMetrics& m = open().m;
  if (const int64_t denied = enrollment_.admission()->denied.exchange(0)) {
    m.rejected["transport_denied"] += denied;
    totals_rejected_["transport_denied"] += denied;
  }
  if (const int64_t refused = sock_->TakeRefusedConnections()) {
    m.rejected["connection_cap"] += refused;
    const int64_t total = totals_rejected_["connection_cap"] += refused;
    // Logged at 1, 2, 4, 8, ... refusals: a flood stays readable.
    if (total >= connections_.next_log) {
      spdlog::warn("refused {} connection(s) at the cap of {} (--max-connections); {} so far",
                   refused, connections_.cap, total);
      while (connections_.next_log <= total) connections_.next_log *= 2;
    }
  }
}

// --metrics-port: what changes between rounds, once a second (the round's
// own numbers go in as each round is reported).
void Conductor::PublishMetrics() {
  if (!o_.metrics || Now() - metrics_published_ < 1.0) return;
  metrics_published_ = Now();
  o_.metrics->SetClients(Live(nullptr), static_cast<int64_t>(registry_.entries().size()));
  o_.metrics->SetRefused(totals_rejected_);
  o_.metrics->SetModelVersion(ToHex(model_.version()));
}

// Handles up to `max` messages already waiting in the socket, without
// waiting for more: in batches of up to kIngestBatch, each prepared
// (authenticated, and an UPDATE checked and decoded) on the ingest threads
// at once, then handled one by one in the order received.
Status Conductor::Drain(int max) {
  std::vector<Inbound> batch;
  batch.reserve(kIngestBatch);  // never reallocated: a VerifiedMessage points into its frames
  for (int handled = 0; handled < max;) {
    size_t room = std::min<size_t>(kIngestBatch, static_cast<size_t>(max - handled));
    if (open().collecting) {
      const size_t takes = scheduler_->Room();
      if (takes == 0) break;
      room = std::min(room, takes);
    }
    batch.clear();
    while (batch.size() < room) {
      Inbound in;
      const double t0 = NowSeconds();
      auto got = sock_->TryReceive(&in.rx);
      if (!got.ok()) return got.status();
      if (!*got) break;
      in.work_seconds = NowSeconds() - t0;
      batch.push_back(std::move(in));
    }
    if (batch.empty()) break;
    ingest_.pool->Run(batch.size(), [this, &batch](size_t i, int thread) {
      Prepare(&batch[i], &ingest_.scratch[static_cast<size_t>(thread)]);
    });
    for (Inbound& in : batch) {
      Handle(&in);
      if (batch.size() > 1 && ingest_.pool->threads() > 1 && in.checked) {
        open().m.updates_prepared_together++;
      }
    }
    handled += static_cast<int>(batch.size());
  }
  return Status::OK();
}

// Sends the open round's TASK to selected client `id` now, or, over CURVE
// (where every connection encrypts a copy of its own), once the TASK bytes
// on their way to other clients leave room (GrantTransfers sends it then).
void Conductor::SendTask(const std::string& id) {
  ClientEntry& c = registry_.entries()[id];
  if (!c.reads_extensions && !model_.trainable().empty() && tasks_->WarnOnce(id)) {
    spdlog::warn(
        "{} predates optional TASK fields: it would train every tensor and send a delta of "
        "all of them, which this --trainable federation refuses; upgrade it",
        id);
  }
  if (!c.reads_extensions && rule().proximal_mu() > 0 && tasks_->WarnOnce(id)) {
    spdlog::warn(
        "{} predates optional TASK fields: it trains without FedProx's proximal term (plain "
        "FedAvg); upgrade it to use --mu",
        id);
  }
  if ((!o_.insecure || o_.window_plaintext_tasks) && o_.transfer_window_bytes > 0 &&
      c.reads_extensions) {
    scheduler_->Refresh(id);
    const auto task = scheduler_->TaskOf(id);
    if (task) {
      const OpenRound& r = open();
      const auto frames = tasks_->For(c, *task, r.round, r.nonce, model_, plan());
      if (!frames.empty() && !task_sends_->Ask(id, frames[0]->size() + frames[1]->size(), Now())) {
        return;
      }
    }
  }
  SendTaskNow(id, &c);
}

Status Conductor::SendTaskFrames(const std::string& id, const ClientEntry& c) {
  scheduler_->Refresh(id);
  const auto task = scheduler_->TaskOf(id);
  if (!task) return Status::FailedPrecondition("no task");
  const OpenRound& r = open();
  const auto frames = tasks_->For(c, *task, r.round, r.nonce, model_, plan());
  if (frames.empty()) return Status::FailedPrecondition("no task");
  Status st = sock_->SendShared(c.peer, frames);
  if (st.ok()) open().m.download_bytes += frames[0]->size() + frames[1]->size();
  return st;
}

void Conductor::SendTaskNow(const std::string& id, ClientEntry* c) {
  Status st = SendTaskFrames(id, *c);
  // Its deadline runs from when it left, not from a wait for the window.
  if (st.ok()) {
    scheduler_->Sent(id);
    return;
  }
  // Its connection went away since it was last heard. It stays selected:
  // when it reconnects (its next HELLO) it gets the TASK on the new
  // connection; if it does not within client_timeout, GiveUpOnVanished
  // closes its turn.
  spdlog::warn("round {}: could not send TASK to {} ({}); it gets it when it reconnects",
               open().round, id, st.message());
  MarkUnreachable(c);
  task_sends_->Release(id);
}

void Conductor::ResendTask(const std::string& id) {
  auto it = registry_.entries().find(id);
  if (it == registry_.entries().end() || !open().resent.insert(id).second) return;
  task_sends_->Release(id);  // outside the window: it is owed
  if (!SendTaskFrames(id, it->second).ok()) MarkUnreachable(&it->second);
}

void Conductor::Withdraw(const std::string& id, uint64_t step, const OpenRound::Nonce& nonce,
                         const std::string& why) {
  const auto it = registry_.entries().find(id);
  if (it == registry_.entries().end() || !it->second.reachable) return;
  Reply(it->second.peer, false, wire::MessageType::kTask, step, "not_needed", why, nonce);
}

// Closes `id`'s turn (its task, in asynchronous mode) and its transfers.
void Conductor::EndTurn(const std::string& id) {
  open().pending.erase(id);
  uploads_->Release(id);
  task_sends_->Release(id);
  scheduler_->Closed(id);
}

void Conductor::MissedDeadline(const std::string& id) {
  auto it = registry_.entries().find(id);
  if (it != registry_.entries().end()) it->second.last_seen = -1e18;
}

void Conductor::ResetTransfers() {
  uploads_->Clear();
  task_sends_->Clear();
}

void Conductor::CloseTransfers(bool keep) {
  RoundMetrics& m = open().m;
  m.upload_window_peak_bytes = uploads_->peak_granted_bytes();
  m.uploads_queued = uploads_->queued();
  m.tasks_queued = task_sends_->queued();
  tasks_->Clear();  // sends in flight hold their own references
  if (keep) {
    uploads_->ResetStats();
    task_sends_->ResetStats();
  } else {
    ResetTransfers();
  }
}

// Stops waiting for selected clients whose TASK could not be sent and that
// have not come back (a HELLO on a new connection) within client_timeout: a
// device that died just before selection does not hold the round until the
// deadline.
void Conductor::GiveUpOnVanished() {
  OpenRound& r = open();
  // A round reopened after a crash waits for its devices until the deadline:
  // they need time to notice the server is back.
  if (r.reopened) return;
  const double now = Now();
  // A relay works on its round for as long as its devices train, in silence
  // like a device; unlike a device's, its loss costs many updates. Once a
  // second it is sent a welcome (which it takes as a heartbeat's answer): the
  // send fails once its connection has closed (a killed relay), and the round
  // stops waiting for it after client_timeout.
  for (auto it = r.pending.begin(); it != r.pending.end();) {
    ClientEntry& c = registry_.entries()[*it];
    if (c.reachable && IsRelay(*it) && now - r.relay_probed[*it] >= 1.0) {
      r.relay_probed[*it] = now;
      // (A full queue is a relay busy with its round, not a closed one.)
      if (SendReply(c.peer, true, wire::MessageType::kHello, r.round, "welcome", "").IsNotFound()) {
        spdlog::warn("round {}: relay {} closed its connection", r.round, *it);
        MarkUnreachable(&c);
      }
    }
    if (!c.reachable && now - c.unreachable_since > o_.client_timeout_seconds) {
      spdlog::warn(
          "round {}: {} did not reconnect within {:.0f} s of losing its connection; not "
          "waiting for it",
          r.round, *it, o_.client_timeout_seconds);
      const std::string id = *it++;
      EndTurn(id);
    } else {
      ++it;
    }
  }
}

int Conductor::Live(std::vector<std::string>* ids) const { return registry_.Live(Now(), ids); }

bool Conductor::IsRelay(const std::string& id) const {
  const auto it = registry_.entries().find(id);
  return enrollment_.IsRelay(id, it != registry_.entries().end() && it->second.devices >= 0);
}

// A participant's share of a private round's population: a relay's the
// devices it says it serves (at most --relay-devices), a device's 1.
int64_t Conductor::PopulationOf(const std::string& id) const {
  if (!IsRelay(id)) return 1;
  const auto it = registry_.entries().find(id);
  const int64_t claim = it == registry_.entries().end() ? 0 : it->second.devices;
  return std::clamp<int64_t>(claim, 0, o_.relay_devices);
}

// From the server's secret log key when it has one (unpredictable to anyone
// else, the same after a restart), else from --seed (reproducible, and
// predictable: experiments only).
uint64_t Conductor::SecretSeed(const char* what, uint64_t r) const {
  const std::string label = std::string("fedge dp ") + what + ", round " + std::to_string(r);
  if (wal_key_) {
    HmacSha256 hmac(*wal_key_);
    hmac.Update(label.data(), label.size());
    const Sha256Digest mac = hmac.Finish();
    uint64_t seed = 0;
    for (int i = 0; i < 8; ++i) seed = (seed << 8) | mac[i];
    return seed;
  }
  return (o_.seed * 0xD1B54A32D192ED03ULL + r) ^ Sha256(label)[0];
}

// The update bounds from the examples the devices an update may come from
// registered with: the norm bound, and the weight cap (max_weight_ratio x
// their lower median, at most max_examples); then the step offset.
void Conductor::SetLimits(std::vector<int64_t> registered) {
  RoundLimits& l = open().limits;
  l.norm_bound = o_.max_update_norm > 0
                     ? o_.max_update_norm
                     : o_.update_norm_factor * std::max(model_.reference_norm(), 1.0);
  l.weight_cap = o_.max_examples;
  if (o_.max_weight_ratio > 0 && !registered.empty()) {
    // The lower median: with two devices, the smaller count.
    const size_t mid = (registered.size() - 1) / 2;
    std::nth_element(registered.begin(), registered.begin() + mid, registered.end());
    const double median = static_cast<double>(registered[mid]);
    const double cap = std::max(1.0, std::floor(o_.max_weight_ratio * median));
    if (cap < static_cast<double>(l.weight_cap)) l.weight_cap = static_cast<int64_t>(cap);
  }
  open().m.update_norm_bound = l.norm_bound;
  open().m.weight_cap = l.weight_cap;
  SetStepOffset();
}

// The fixed part of this round's step (momentum), for the range check.
void Conductor::SetStepOffset() {
  RoundLimits& l = open().limits;
  l.step_offset_factor = 0;
  l.step_offset_max_abs = 0;
  l.step_offset = rule().StepOffset(&l.step_offset_factor);
  if (l.step_offset && l.step_offset->size() != model_.kept_count()) {
    l.step_offset = nullptr;  // (invariant)
  }
  if (l.step_offset) {
    for (float v : *l.step_offset) {
      l.step_offset_max_abs =
          std::max(l.step_offset_max_abs, std::fabs(l.step_offset_factor * static_cast<double>(v)));
    }
  }
}

Status Conductor::OpenLog(const WalHeader& header, bool with_staleness) {
  auto w = WalWriter::Create(store_->WalPath(), header, /*durable=*/!o_.out_dir.empty(), wal_key_,
                             with_staleness, !o_.relays_dir.empty());
  if (!w.ok()) return w.status();
  (*w)->set_clock(o_.clock);
  open().log = std::move(w).value();
  return Status::OK();
}

// Takes the round (or step) the log reopened: its bounds, and with
// `selection` its nonce and selection, and the updates it had acknowledged,
// whose devices are not asked again.
Status Conductor::ReopenLog(WalContents c, bool selection) {
  OpenRound& r = open();
  const WalHeader& h = c.header;
  if (selection) {
    r.nonce = h.nonce;
    r.selected.clear();
    for (const auto& [id, n] : h.selected) r.selected.insert(id);
    r.pending = r.selected;
    r.limits.registered = h.selected;
    r.m.selected = static_cast<int>(r.selected.size());
  }
  r.limits.weight_cap = h.weight_cap;
  r.limits.norm_bound = h.norm_bound;
  r.limits.population = h.population;
  SetStepOffset();
  r.m.weight_cap = r.limits.weight_cap;
  r.m.update_norm_bound = r.limits.norm_bound;
  FL_RETURN_IF_ERROR(CheckLoggedPartials(c));
  auto w = WalWriter::Reopen(store_->WalPath(), c, /*durable=*/true, wal_key_);
  if (!w.ok()) return w.status();
  (*w)->set_clock(o_.clock);
  r.log = std::move(w).value();
  for (const auto& e : c.entries) {
    auto rec = r.log->Read(e);
    if (!rec.ok()) return rec.status();
    if (selection && !r.pending.erase(e.sender)) continue;  // not selected, or twice: ignored
    r.KeepLogged(e, *rec);
  }
  const char* torn =
      c.torn_tail ? " (a torn record at its end, never acknowledged, was dropped)" : "";
  if (selection) {
    r.reopened = true;
    spdlog::warn(
        "round {}: reopened from {}: {} acknowledged update(s) kept, {} device(s) still to "
        "answer{}",
        h.round, store_->WalPath(), r.entries.size(), r.pending.size(), torn);
  } else {
    spdlog::warn(
        "step {}: reopened from {}: {} acknowledged update(s) kept in its buffer of {}; tasks "
        "handed out before the restart are void (their devices get new ones){}",
        h.round, store_->WalPath(), r.entries.size(), o_.async.buffer, torn);
  }
  return Status::OK();
}

// Re-reads the enrollment folder; a device removed from it is forgotten at once.
Status Conductor::LoadEnrollment() {
  if (!enrollment_.enrolling()) return Status::OK();
  FL_RETURN_IF_ERROR(enrollment_.Load());
  auto& clients = registry_.entries();
  for (auto it = clients.begin(); it != clients.end();) {
    if (enrollment_.Has(it->first)) {
      ++it;
      continue;
    }
    // Its round or task is over: nothing from it is accepted now.
    if (scheduler_) EndTurn(it->first);
    it = clients.erase(it);
  }
  return Status::OK();
}

// --- sending ------------------------------------------------------------------

Status Conductor::Send(const std::string& peer, wire::MessageType type, uint64_t r,
                       std::string payload, const std::array<uint8_t, wire::kNonceBytes>& nonce) {
  wire::Envelope env;
  env.type = type;
  env.flags = wire::kFlagReadsExtensions;
  env.sender = kServerId;
  env.round = r;
  env.model_version = model_.version();
  env.nonce = nonce;
  const SealedMessage msg = SealMessage(env, std::move(payload), signer_.get());
  Status st = sock_->Send(peer, {msg.envelope, msg.payload});
  if (st.ok()) open().m.download_bytes += msg.envelope.size() + msg.payload.size();
  return st;
}

// DONE to a client, echoing the freshness stamp of its newest HELLO (or of
// `hello`, the HELLO being answered): clients refuse a DONE that answers no
// HELLO of their current connection, so a captured DONE stops nobody.
void Conductor::SendDone(const std::string& peer, const std::string& id,
                         const wire::Envelope* hello) {
  uint64_t stamp = hello ? wire::HelloStampOf(hello->nonce) : 0;
  auto it = registry_.entries().find(id);
  if (it != registry_.entries().end()) stamp = std::max(stamp, it->second.hello_stamp);
  (void)Send(peer, wire::MessageType::kDone, round_, wire::Encode(*done_),
             wire::HelloStampNonce(stamp));
}

Status Conductor::SendReply(const std::string& peer, bool accepted, wire::MessageType about,
                            uint64_t r, const std::string& reason, const std::string& message,
                            const std::array<uint8_t, wire::kNonceBytes>& nonce) {
  wire::Reply reply;
  reply.in_reply_to = static_cast<uint8_t>(about);
  reply.reason = reason;
  reply.message = message;
  return Send(peer, accepted ? wire::MessageType::kAck : wire::MessageType::kReject, r,
              wire::Encode(reply), nonce);
}

// Refuses a message: counter, throttled log line, REJECT to the sender.
void Conductor::RefuseMessage(const std::string& peer, const std::string& who,
                              wire::MessageType about, uint64_t r, const std::string& reason,
                              const std::string& message) {
  const int64_t n = ++open().m.rejected[reason];
  totals_rejected_[reason]++;
  if (n <= kLogPerReason) {
    const bool known = about >= wire::MessageType::kHello && about <= wire::MessageType::kReady;
    spdlog::warn("refused {} from {}: {}: {}{}", known ? wire::MessageTypeName(about) : "message",
                 who, reason, message,
                 n == kLogPerReason ? " (further ones this round are only counted)" : "");
  }
  Reply(peer, false, about, r, reason, message);
}

// Refuses the UPDATE of a selected, pending client and closes its turn.
void Conductor::RefuseAnswer(const std::string& peer, const std::string& who, uint64_t r,
                             const std::string& reason, const std::string& message) {
  EndTurn(who);
  RefuseMessage(peer, who, wire::MessageType::kUpdate, r, reason, message);
}

// A send to the client's connection failed: it is gone until the client
// speaks again (a HELLO on a new connection).
void Conductor::MarkUnreachable(ClientEntry* c) const {
  c->reachable = false;
  c->unreachable_since = Now();
}

// Test hook: `--debug-crash-at POINT:N` kills the process (SIGKILL, as kill -9
// does) at the N-th time it passes POINT.
void Conductor::MaybeCrash(const char* point, uint64_t n) const {
  if (o_.debug_crash_point == point && o_.debug_crash_count == n) {
    spdlog::default_logger()->flush();
    ::raise(SIGKILL);
  }
}

// --- receiving ------------------------------------------------------------------

// The ingest threads' part of a message (any thread): bound, authenticate
// and, for an UPDATE the round waits for, check and decode into `scratch`.
// Reads the server's state and changes none of it; the handler, on the
// server's thread, takes the check only when the bounds it would use are
// the same. An update the handler will refuse (not selected, already
// answered, a replay) costs its hash and signature alone.
void Conductor::Prepare(Inbound* in, std::vector<float>* scratch) const {
  const double t0 = NowSeconds();
  in->verified = Authenticate(in->rx.frame_count, &in->rx.frames, in->rx.peer_key, ingress_,
                              &in->auth_seconds);
  const auto* msg = std::get_if<VerifiedMessage>(&*in->verified);
  if (msg && !done_ && open().collecting && msg->envelope().type == wire::MessageType::kUpdate &&
      open().pending.count(msg->envelope().sender)) {
    const std::string& who = msg->envelope().sender;
    const UpdateBounds b = BoundsFor(who, scheduler_->TaskOf(who));
    in->checked_base = b.base;
    in->checked_registered = b.registered;
    in->checked = CheckUpdate(*msg, b, scratch);
  }
  in->work_seconds += NowSeconds() - t0;
}

// Handles one prepared message; for UPDATEs, adds the server's time on it
// (its receive, preparation and handling) and its digest + signature time
// to the round metrics.
void Conductor::Handle(Inbound* in) {
  const double t0 = NowSeconds();
  const wire::MessageType type = Dispatch(in);
  if (type == wire::MessageType::kHello || type == wire::MessageType::kUpdate ||
      type == wire::MessageType::kReady) {
    GrantTransfers();
  }
  if (type == wire::MessageType::kUpdate) {
    RoundMetrics& m = open().m;
    m.updates_received++;
    m.update_auth_seconds += in->auth_seconds;
    const double handled = in->work_seconds + (NowSeconds() - t0);
    m.update_handle_seconds += handled;
    if (o_.metrics) o_.metrics->ObserveIngest(in->auth_seconds + handled);
  }
}

// The largest payload a message of `type` may have (wire/limits.h): an
// UPDATE exactly what the round's codec makes of the model's kept values,
// or, where relays may answer, their exact partial sums (a device's is
// still held to the round's codec when checked).
size_t Conductor::PayloadLimit(wire::MessageType type) const {
  if (type != wire::MessageType::kUpdate) return wire::kMaxSmallPayloadBytes;
  const wire::TrainConfig& train = plan().train;
  const size_t device = wire::UpdatePayloadLimit(model_.kept_count(), train);
  return o_.relays_dir.empty() ? device
                               : std::max(device, wire::ExactSumPayloadLimit(model_.kept_count()));
}

// Returns the type of the message if its envelope decoded, else kUnknownType.
wire::MessageType Conductor::Dispatch(Inbound* in) {
  const transport::Received& rx = in->rx;
  open().m.upload_bytes += rx.bytes;
  // Bound and authenticate before anything is decoded (crypto/ingress.h):
  // Prepare did.
  const auto& verified = *in->verified;
  if (auto* refusal = std::get_if<Refusal>(&verified)) {
    if (!refusal->envelope) {
      // No usable sender id: a name for the log line.
      RefuseMessage(rx.peer, "peer#" + std::to_string(std::hash<std::string>()(rx.peer) % 100000),
                    kUnknownType, 0, refusal->reason, refusal->message);
      return kUnknownType;
    }
    const wire::Envelope& e = *refusal->envelope;
    RefuseMessage(rx.peer, e.sender, e.type, e.round, refusal->reason, refusal->message);
    return e.type;
  }
  const VerifiedMessage& msg = std::get<VerifiedMessage>(verified);
  const wire::Envelope& env = msg.envelope();
  if (done_) {
    SendDone(rx.peer, env.sender, env.type == wire::MessageType::kHello ? &env : nullptr);
    return env.type;
  }
  switch (env.type) {
    case wire::MessageType::kHello:
    case wire::MessageType::kReady:
      // Both are small and answered at once: one token bucket bounds them.
      if (!registry_.AllowHello(env.sender, Now())) {
        open().m.rejected["rate_limited"]++;
        if (totals_rejected_["rate_limited"]++ % 1000 == 0) {
          spdlog::warn(
              "dropping HELLOs and READYs from {}: more than {:.0f} a second (counted in "
              "rate_limited)",
              env.sender, ClientRegistry::kHelloPerSecond);
        }
        break;
      }
      if (env.type == wire::MessageType::kHello) {
        HandleHello(rx.peer, env, msg);
      } else {
        HandleReady(rx.peer, env, msg);
      }
      break;
    case wire::MessageType::kUpdate:
      HandleUpdate(rx.peer, env, msg, in);
      break;
    default:
      RefuseMessage(rx.peer, env.sender, env.type, env.round, "unexpected_type",
                    std::string("a server does not accept ") + wire::MessageTypeName(env.type));
  }
  return env.type;
}

// Why a decoded HELLO cannot register (`*reason`, and the message), if it cannot.
std::optional<std::string> Conductor::HelloRefusal(const std::string& peer,
                                                   const wire::Envelope& env, const wire::Hello& h,
                                                   bool sent_code, std::string* reason) const {
  const std::string& arch = model_.state().architecture;
  const bool script = arch.rfind("torchscript:", 0) == 0;
  if (!sent_code && (!h.architecture.empty() || script) && h.architecture != arch) {
    *reason = "wrong_architecture";
    return "this federation trains '" + arch + "', the client was started " +
           (h.architecture.empty() ? std::string("without --model")
                                   : "with --model " + Printable(h.architecture)) +
           (script ? "; start it with --model FILE.pt, the same TorchScript file as the "
                     "server's, or with --server-key and --model-cache to receive the file "
                     "signed (the server needs its --key)"
                   : "; start it with --model " + arch + " or without --model");
  }
  if (h.num_examples <= 0) {
    *reason = "bad_payload";
    return "num_examples must be > 0, got " + std::to_string(h.num_examples);
  }
  const Codec* round_codec = FindCodec(plan().train.codec);
  const std::string codec = round_codec ? round_codec->name() : kDefaultCodec;
  if (std::find(h.codecs.begin(), h.codecs.end(), codec) == h.codecs.end()) {
    *reason = "no_common_codec";
    return "server needs codec '" + codec + "'";
  }
  const auto& clients = registry_.entries();
  const auto it = clients.find(env.sender);
  const uint64_t stamp = wire::HelloStampOf(env.nonce);
  if (it != clients.end() && it->second.peer != peer && stamp != 0 &&
      stamp <= it->second.hello_stamp && it->second.reachable &&
      Now() - it->second.last_seen <= o_.client_timeout_seconds) {
    // A HELLO no newer than one already seen, from another connection, while
    // the node's own connection is live: a replay (or a clock that stepped
    // back across a restart, which heals once the old connection times out).
    *reason = "stale_hello";
    return "HELLO is not newer than the last one from this node, which is connected on "
           "another connection";
  }
  return std::nullopt;
}

void Conductor::HandleHello(const std::string& peer, const wire::Envelope& env,
                            const VerifiedMessage& msg) {
  wire::Hello h;
  if (Status st = msg.Decode(&h); !st.ok()) {
    RefuseMessage(peer, env.sender, env.type, env.round, "bad_payload", st.message());
    return;
  }
  // An empty architecture means "whatever the server trains": the client
  // builds its model from the first TASK, from its built-in models only; a
  // TorchScript model needs the file on the device, which a device without
  // it takes from the server, signed, when it pinned the server's key and
  // the server has one to sign with.
  const bool script = model_.state().architecture.rfind("torchscript:", 0) == 0;
  const bool sent_code = script && h.architecture.empty() && h.takes_model_code &&
                         !tasks_->model_code().empty() &&
                         (env.flags & wire::kFlagReadsExtensions) != 0;
  auto& clients = registry_.entries();
  auto it = clients.find(env.sender);
  const bool is_new = it == clients.end();
  std::string reason;
  std::optional<std::string> why = HelloRefusal(peer, env, h, sent_code, &reason);
  if (!why && is_new && !registry_.MakeRoom(Now(), [this](const std::string& id) {
        return open().selected.count(id) > 0 || open().pending.count(id) > 0;
      })) {
    reason = "registry_full";
    why = "the server knows " + std::to_string(clients.size()) +
          " live devices (--max-clients); try again later";
  }
  if (why) {
    RefuseMessage(peer, env.sender, env.type, env.round, reason, *why);
    return;
  }
  ClientEntry& c = clients[env.sender];
  if (is_new) ClientRegistry::StartHelloBucket(&c, Now());
  c.hello_stamp = std::max(c.hello_stamp, wire::HelloStampOf(env.nonce));
  // A HELLO naming the open round says the device has its TASK: the receipt
  // of a TASK just sent, or a device that reconnected with its update for
  // this round in hand.
  const std::optional<TaskRef> task = scheduler_->TaskOf(env.sender);
  const bool has_task = open().collecting && task && task->step == env.round;
  if (has_task) task_sends_->Release(env.sender);
  const bool moved = !is_new && (c.peer != peer || !c.reachable);
  c.peer = peer;
  c.reachable = true;
  c.reads_extensions = (env.flags & wire::kFlagReadsExtensions) != 0;
  c.needs_model_code = sent_code;
  c.num_examples = h.num_examples;
  c.devices = h.devices;
  c.codecs = h.codecs;
  c.last_seen = Now();
  if (is_new && o_.verbose) {
    spdlog::info("client {} registered ({} examples); {} known", env.sender, h.num_examples,
                 clients.size());
  }
  // (A device holding a task of an earlier step is welcomed at that step:
  // the welcome's round is the floor below which it takes TASKs for replays.)
  Reply(peer, true, wire::MessageType::kHello, task ? task->step : open().round, "welcome", "");
  // A selected client that reconnected mid-round lost its TASK: send it again
  // on the new connection, once a round (a client flapping its connection
  // does not get a copy of the model per HELLO).
  if (moved && open().collecting && !has_task && open().pending.count(env.sender) &&
      !open().resent.count(env.sender)) {
    if (o_.verbose) {
      spdlog::info("round {}: {} reconnected; sending its TASK again", open().round, env.sender);
    }
    ResendTask(env.sender);
  }
}

// For a READY or UPDATE: true when its sender is a known device with a turn
// in the open round that it answers (the scheduler's Admit). Otherwise
// refuses it and returns false.
bool Conductor::FromPendingParticipant(const std::string& peer, const wire::Envelope& env) {
  auto it = registry_.entries().find(env.sender);
  if (it == registry_.entries().end()) {
    RefuseMessage(peer, env.sender, env.type, env.round, "unknown_client", "send HELLO first");
    return false;
  }
  // The route stays: only a HELLO moves a client to another connection (in
  // plaintext, a replayed UPDATE passes authentication from any connection).
  it->second.last_seen = Now();
  return scheduler_->Admit(peer, env, env.type == wire::MessageType::kReady ? "READY" : "update");
}

// A participant's update is encoded: it may send it now ("granted"), or once
// the update bytes on their way leave room ("queued", then "granted").
void Conductor::HandleReady(const std::string& peer, const wire::Envelope& env,
                            const VerifiedMessage& msg) {
  if (!FromPendingParticipant(peer, env)) return;
  wire::Ready ready;
  if (Status st = msg.Decode(&ready); !st.ok()) {
    RefuseMessage(peer, env.sender, env.type, env.round, "bad_payload", st.message());
    return;
  }
  const size_t limit = PayloadLimit(wire::MessageType::kUpdate);
  if (ready.update_bytes == 0 || ready.update_bytes > limit) {
    RefuseMessage(peer, env.sender, env.type, env.round, "too_large",
                  "READY announces an update of " + std::to_string(ready.update_bytes) +
                      " bytes; this round's updates are at most " + std::to_string(limit));
    return;
  }
  const bool now = uploads_->Ask(env.sender, ready.update_bytes, Now());
  // (The round of the device's task: in asynchronous mode an earlier step.)
  Reply(peer, true, wire::MessageType::kReady, env.round, now ? "granted" : "queued", "");
}

// Sends "granted" to the devices whose turn it is to upload, and TASKs to
// those whose turn it is to download.
void Conductor::GrantTransfers() {
  if (!open().collecting) return;
  const double now = Now();
  auto& clients = registry_.entries();
  for (const auto& id : uploads_->Pump(now)) {
    auto it = clients.find(id);
    const std::optional<TaskRef> task = scheduler_->TaskOf(id);
    if (it == clients.end() || !task) continue;
    Reply(it->second.peer, true, wire::MessageType::kReady, task->step, "granted", "");
  }
  for (const auto& id : task_sends_->Pump(now)) {
    auto it = clients.find(id);
    if (it != clients.end() && open().pending.count(id)) SendTaskNow(id, &it->second);
  }
}

// The bounds an UPDATE from `who` answering `task` is checked against.
// Changes nothing.
UpdateBounds Conductor::BoundsFor(const std::string& who,
                                  const std::optional<TaskRef>& task) const {
  const RoundLimits& l = open().limits;
  UpdateBounds bounds;
  bounds.base = task ? task->base : model_.version();
  bounds.global = &model_.state();
  bounds.kept_count = model_.kept_count();
  bounds.global_max_abs = model_.max_abs();
  bounds.train = &plan().train;
  if (task) bounds.registered = task->registered;
  bounds.weight_cap = l.weight_cap;
  if (enrollment_.MaySendPartials(who)) {
    bounds.relay_devices = o_.relay_devices;
    bounds.device_cap = o_.max_examples;
    bounds.relay = IsRelay(who);
  }
  bounds.private_partials = plan().private_round();
  bounds.norm_bound = l.norm_bound;
  bounds.norm_bound_source = o_.max_update_norm > 0
                                 ? "--max-update-norm"
                                 : "--update-norm-factor x the starting model's L2 norm";
  // Strategies whose step is not a convex combination of the deltas
  // (momentum, adaptive, private) are held to the range when the round's
  // step is applied.
  bounds.step_scale = rule().convex_step_scale();
  bounds.offset = l.step_offset;
  bounds.offset_factor = l.step_offset_factor;
  bounds.offset_max_abs = l.step_offset_max_abs;
  bounds.value_limit = model_.ValueLimit(o_.max_param_value);
  return bounds;
}

void Conductor::HandleUpdate(const std::string& peer, const wire::Envelope& env,
                             const VerifiedMessage& msg, Inbound* in) {
  OpenRound& r = open();
  if (r.collecting && r.first_update_time == 0) r.first_update_time = Now();
  const std::string who = env.sender;
  if (!FromPendingParticipant(peer, env)) return;
  // Its bytes are here: the next device may start sending (Handle grants).
  uploads_->Release(who);
  task_sends_->Release(who);
  // From here on the sender holds a turn it has not answered: a refusal
  // counts as its answer, so the round does not wait for it.
  const std::optional<TaskRef> task = scheduler_->TaskOf(who);
  const UpdateBounds bounds = BoundsFor(who, task);
  // The ingest threads' check stands when it used these bounds (the round's
  // other bounds do not change while a batch is handled).
  std::variant<AcceptedUpdate, Refusal> checked =
      in->checked && in->checked_base == bounds.base && in->checked_registered == bounds.registered
          ? std::move(*in->checked)
          : CheckUpdate(msg, bounds, &ingest_.delta);
  if (auto* refusal = std::get_if<Refusal>(&checked)) {
    RefuseAnswer(peer, who, env.round, refusal->reason, refusal->message);
    return;
  }
  AcceptedUpdate& u = std::get<AcceptedUpdate>(checked);
  // Logged now, acknowledged once the log is durable (CommitAcks). (Admit
  // checked an asynchronous task against --max-staleness.)
  const uint32_t staleness = task ? static_cast<uint32_t>(r.round - task->step) : 0;
  auto entry =
      r.log->Append(who, u.weight, u.train_loss, u.train_seconds, u.encoded_delta, staleness,
                    static_cast<uint32_t>(std::max<int64_t>(1, u.contributors)), u.within_clip);
  if (!entry.ok()) {
    r.log_error = entry.status();
    return;
  }
  r.entries.push_back(*entry);
  if (u.contributors > 1) enrollment_.SentPartial(who);
  r.pending.erase(who);
  scheduler_->Closed(who);  // (asynchronous: its slot is free, the next tick hands it on)
  r.unsynced_acks.push_back({peer, env.round, entry->offset + entry->length + kSha256DigestBytes});
  RoundMetrics& m = r.m;
  m.participants++;
  m.max_delta_norm = std::max(m.max_delta_norm, u.norm);
  m.delta_bytes += u.encoded_delta.size();
  m.max_train_seconds = std::max(m.max_train_seconds, u.train_seconds);
  r.train_loss_sum += u.train_loss;
  r.last_accept_time = Now();
}

// Acknowledges the logged updates that are durable: an ACKed update
// survives a crash. The log's own thread syncs batch after batch while this
// thread goes on reading (group commit); `wait` waits for all of them.
Status Conductor::CommitAcks(bool wait) {
  OpenRound& r = open();
  if (!r.log_error.ok()) return r.log_error;
  if (r.unsynced_acks.empty() || !r.log) return Status::OK();
  if (wait) {
    FL_RETURN_IF_ERROR(r.log->Sync());
  } else {
    r.log->RequestSync();
    FL_RETURN_IF_ERROR(r.log->error());
  }
  const uint64_t durable = r.log->durable_end();
  while (!r.unsynced_acks.empty() && r.unsynced_acks.front().log_end <= durable) {
    const OpenRound::UnsyncedAck a = std::move(r.unsynced_acks.front());
    r.unsynced_acks.pop_front();
    // From a device's view its update is accepted now, when it is durable.
    r.last_accept_time = Now();
    Reply(a.peer, true, wire::MessageType::kUpdate, a.round, "accepted", "");
    ++acks_sent_;
    MaybeCrash("ack", acks_sent_);
  }
  return Status::OK();
}

Result<ServerSummary> Conductor::Run(const std::atomic<bool>* stop, const RoundCallback& on_round) {
  LogServing();
  ServerSummary sum;
  reporter_->Attach(&on_round, &sum);
  struct Detach {
    RoundReporter& r;
    ~Detach() { r.Attach(nullptr, nullptr); }
  } detach{*reporter_};
  // On an error, rounds already checkpointed still get their rows (best effort).
  auto fail = [this](Status st) {
    Status rs = reporter_->Report(/*wait=*/true);
    if (!rs.ok()) spdlog::error("writing the rows of finished rounds: {}", rs.ToString());
    return st;
  };
  bool abandoned = false;
  if (Status st = scheduler_->Run(stop, &abandoned); !st.ok()) return fail(st);
  sum.interrupted = abandoned;
  open().collecting = false;  // (asynchronous mode: no more tasks)
  // The last evaluations: keep answering while they finish (on a signal, just
  // wait for them: their rows belong in rounds.csv).
  if (!reporter_->empty() && stop && stop->load() && o_.verbose) {
    spdlog::info("waiting for the evaluation of {} finished round(s) for rounds.csv",
                 reporter_->size());
  }
  if (Status st = Pump(std::numeric_limits<double>::infinity(), stop,
                       [this] { return reporter_->empty(); });
      !st.ok()) {
    return fail(st);
  }
  FL_RETURN_IF_ERROR(reporter_->Report(/*wait=*/true));
  sum.rounds_completed = round_;
  if (!sum.interrupted) {
    // Tell everyone, then answer stragglers with DONE for a little while.
    done_.emplace();
    done_->rounds_completed = round_;
    done_->final_accuracy = sum.final_accuracy;
    done_->message = "federation finished after " + std::to_string(round_) + " rounds";
    for (const auto& [id, c] : registry_.entries()) SendDone(c.peer, id, nullptr);
    FL_RETURN_IF_ERROR(Pump(Now() + o_.done_linger_seconds, stop, nullptr));
  }
  sum.rejected = totals_rejected_;
  return sum;
}

// --- Server ---------------------------------------------------------------------

struct Server::Impl {
  std::unique_ptr<Conductor> conductor;
};

Server::Server(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Server::~Server() = default;

Result<std::unique_ptr<Server>> Server::Create(ServerOptions options,
                                               std::shared_ptr<transport::Context> context,
                                               const ModelRuntime& runtime) {
  auto conductor = MakeConductor(std::move(options), std::move(context), runtime);
  if (!conductor.ok()) return conductor.status();
  auto impl = std::make_unique<Impl>();
  impl->conductor = std::move(conductor).value();
  return std::unique_ptr<Server>(new Server(std::move(impl)));
}

std::string Server::endpoint() const { return impl_->conductor->endpoint(); }
uint64_t Server::first_round() const { return impl_->conductor->first_round(); }

Result<ServerSummary> Server::Run(const std::atomic<bool>* stop, const RoundCallback& on_round) {
  return impl_->conductor->Run(stop, on_round);
}

}  // namespace fl
