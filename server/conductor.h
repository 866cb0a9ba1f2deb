// The server's conductor (Server::Impl): what every mode shares. It owns the
// socket and the receive path (bound, authenticate, check, log, ACK), the
// client registry and enrollment, the ingest threads, the TASKs, the
// transfer windows, the global model and its rule, the evaluator and the
// run's files; it runs one scheduler (server/scheduler.h), which it offers
// the SchedulerHost verbs. Internal to the server library: server.cc holds
// the receive path and the verbs, server_commit.cc the end of a round,
// server_create.cc the start.
#ifndef FEDGE_SERVER_CONDUCTOR_H_
#define FEDGE_SERVER_CONDUCTOR_H_

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "common/clock.h"
#include "common/data_loader.h"
#include "common/worker_pool.h"
#include "crypto/identity.h"
#include "crypto/ingress.h"
#include "crypto/message.h"
#include "crypto/model_file.h"
#include "crypto/sha256.h"
#include "server/aggregator.h"
#include "server/checkpoint.h"
#include "server/enrollment.h"
#include "server/evaluator.h"
#include "server/global_model.h"
#include "server/private_aggregator.h"
#include "server/registry.h"
#include "server/round_reporter.h"
#include "server/run_store.h"
#include "server/scheduler.h"
#include "server/server.h"
#include "server/task_cache.h"
#include "server/transfer_window.h"
#include "server/update_check.h"
#include "server/wal.h"
#include "transport/transport.h"

namespace fl {

class SigningKey;

// One received message and what the ingest threads made of it: its bound
// and authentication, and for an UPDATE its check, done ahead against the
// bounds of the task it names (`checked_base`, `checked_registered`).
struct Inbound {
  transport::Received rx;
  // Time the server's threads spent on it: its receive, its preparation (on
  // whichever ingest thread) and its handling.
  double work_seconds{0};
  std::optional<std::variant<VerifiedMessage, Refusal>> verified;
  double auth_seconds{0};  // digest + signature
  std::optional<std::variant<AcceptedUpdate, Refusal>> checked;
  Sha256Digest checked_base{};
  int64_t checked_registered{0};
};

// The ingest threads (--ingest-threads), one decoded-delta buffer each, and
// the server thread's own (reused, so that a large update does not cost a
// fresh allocation, and its page faults, every time).
struct IngestPool {
  std::unique_ptr<WorkerPool> pool;
  std::vector<std::vector<float>> scratch;
  std::vector<float> delta;

  void FreeBuffers() {
    std::vector<float>().swap(delta);
    for (auto& s : scratch) std::vector<float>().swap(s);
  }
};

// Connections refused at --max-connections, logged at 1, 2, 4, ... refusals.
struct ConnectionCap {
  int cap{0};  // 0 = none
  int64_t next_log{1};
};

class Conductor final : public SchedulerHost {
 public:
  explicit Conductor(ServerOptions options);

  // --- SchedulerHost ---
  double Now() const override { return o_.clock->Now(); }
  Status Pump(double until, const std::atomic<bool>* stop,
              const std::function<bool()>& done_when) override;
  Status Drain(int max) override;
  void SendTask(const std::string& id) override;
  void Withdraw(const std::string& id, uint64_t step, const OpenRound::Nonce& nonce,
                const std::string& why) override;
  Status Commit(bool may_skip_eval) override;
  Status BeginRound(uint64_t r) override;
  void Refuse(const std::string& peer, const std::string& who, const wire::Envelope& env,
              const std::string& reason, const std::string& message) override {
    RefuseMessage(peer, who, env.type, env.round, reason, message);
  }
  void ResendTask(const std::string& id) override;
  void EndTurn(const std::string& id) override;
  void GiveUpOnVanished() override;
  void MissedDeadline(const std::string& id) override;
  void ResetTransfers() override;
  void CloseTransfers(bool keep) override;
  int Live(std::vector<std::string>* ids) const override;
  int64_t PopulationOf(const std::string& id) const override;
  bool IsRelay(const std::string& id) const override;
  uint64_t SecretSeed(const char* what, uint64_t r) const override;
  Status OpenLog(const WalHeader& header, bool with_staleness) override;
  Status ReopenLog(WalContents contents, bool selection) override;
  void SetLimits(std::vector<int64_t> registered) override;
  GlobalModel& model() override { return model_; }
  Aggregator& rule() override { return plan().rule ? *plan().rule : *aggregator_; }
  const ClientRegistry& registry() const override { return registry_; }
  uint64_t completed() const override { return round_; }
  double dp_clip() const override { return privacy_ ? privacy_->dp_clip() : 0.0; }
  size_t evaluations_outstanding() const override {
    return evaluator_ ? evaluator_->outstanding() : 0;
  }

  // --- server.cc ---
  Result<ServerSummary> Run(const std::atomic<bool>* stop, const RoundCallback& on_round);
  Status LoadEnrollment();
  size_t PayloadLimit(wire::MessageType type) const;

  // --- server_create.cc: Server::Create's steps (MakeConductor) ---
  Status Start(std::shared_ptr<transport::Context> context, const ModelRuntime& runtime,
               std::unique_ptr<Aggregator> aggregator, const PrivateAggregator* privacy,
               std::optional<ModelState> from_file, const ModelFileMeta& meta);

  std::string endpoint() const { return sock_->endpoint(); }
  uint64_t first_round() const { return round_ + 1; }

 private:
  OpenRound& open() { return scheduler_->round(); }
  const OpenRound& open() const { return scheduler_->round(); }
  const RoundPlan& plan() const { return scheduler_->plan(); }
  Aggregator& rule() const { return plan().rule ? *plan().rule : *aggregator_; }

  // Receiving (server.cc).
  void Prepare(Inbound* in, std::vector<float>* scratch) const;
  void Handle(Inbound* in);
  wire::MessageType Dispatch(Inbound* in);
  void HandleHello(const std::string& peer, const wire::Envelope& env, const VerifiedMessage& msg);
  std::optional<std::string> HelloRefusal(const std::string& peer, const wire::Envelope& env,
                                          const wire::Hello& h, bool sent_code,
                                          std::string* reason) const;
  void HandleReady(const std::string& peer, const wire::Envelope& env, const VerifiedMessage& msg);
  void HandleUpdate(const std::string& peer, const wire::Envelope& env, const VerifiedMessage& msg,
                    Inbound* in);
  bool FromPendingParticipant(const std::string& peer, const wire::Envelope& env);
  UpdateBounds BoundsFor(const std::string& who, const std::optional<TaskRef>& task) const;
  void GrantTransfers();
  Status CommitAcks(bool wait);
  void CountRefusedConnections();
  void PublishMetrics();

  // Sending (server.cc).
  Status SendTaskFrames(const std::string& id, const ClientEntry& c);
  void SendTaskNow(const std::string& id, ClientEntry* c);
  Status Send(const std::string& peer, wire::MessageType type, uint64_t r, std::string payload,
              const std::array<uint8_t, wire::kNonceBytes>& nonce = {});
  void SendDone(const std::string& peer, const std::string& id, const wire::Envelope* hello);
  Status SendReply(const std::string& peer, bool accepted, wire::MessageType about, uint64_t r,
                   const std::string& reason, const std::string& message,
                   const std::array<uint8_t, wire::kNonceBytes>& nonce = {});
  void Reply(const std::string& peer, bool accepted, wire::MessageType about, uint64_t r,
             const std::string& reason, const std::string& message,
             const std::array<uint8_t, wire::kNonceBytes>& nonce = {}) {
    // A peer that is gone cannot be told; that is not an error for the server.
    (void)SendReply(peer, accepted, about, r, reason, message, nonce);
  }
  void RefuseMessage(const std::string& peer, const std::string& who, wire::MessageType about,
                     uint64_t r, const std::string& reason, const std::string& message);
  void RefuseAnswer(const std::string& peer, const std::string& who, uint64_t r,
                    const std::string& reason, const std::string& message);
  void MarkUnreachable(ClientEntry* c) const;
  void MaybeCrash(const char* point, uint64_t n) const;

  // The end of a round (server_commit.cc).
  Status AggregateFromLog();
  Status AddLogged(const WalEntry& e, std::string_view encoded, std::vector<float>* delta);
  void CapPartials(std::vector<WalEntry>* entries) const;
  Status ApplyStep(int64_t count);
  Status WriteCheckpoint(uint64_t r);
  bool ShouldEvaluate(uint64_t r, bool may_skip);
  Status CheckLoggedPartials(const WalContents& c) const;
  void RestorePendingRows(const std::vector<Checkpoint::Row>& rows, uint64_t last_row);
  void SetStepOffset();

  // Server::Create's steps (server_create.cc).
  Status LoadIdentity(std::optional<CurveKeyPair>* curve);
  Status LoadEvaluation(const ModelRuntime& runtime, const ModelFileMeta& meta);
  Status LoadTestSet(const ModelRuntime& runtime, const ModelFileMeta& meta,
                     const std::vector<std::string>& classes);
  Status SetPruning(double from);
  Status Resume(uint64_t* last_row, std::vector<Checkpoint::Row>* owed, bool* resumed);
  Status CheckCheckpoint(const Checkpoint& c, const std::string& used) const;
  Status PrepareModel(std::optional<ModelState> from_file, bool resumed);
  Status PruneInitialModel();
  Status OpenTransport(const std::optional<CurveKeyPair>& curve);
  Result<std::optional<WalContents>> FindOpenRound(bool resumed, uint64_t last_row,
                                                   const std::vector<Checkpoint::Row>& owed);
  RoundPlan BasePlan() const;
  void LogServing() const;
  std::string RunSettings() const;

  const ServerOptions o_;
  std::shared_ptr<transport::Context> ctx_;
  std::unique_ptr<transport::Socket> sock_;
  // The devices the server knows (server/registry.h), and who may be one.
  ClientRegistry registry_;
  Enrollment enrollment_;
  // Bound and authenticate (crypto/ingress.h): limits per type, and with an
  // enrollment folder, the enrolled signer and, over CURVE, its transport key.
  IngressPolicy ingress_;
  IngestPool ingest_;
  std::unique_ptr<TaskCache> tasks_;
  // Update bytes on their way (READY granted, UPDATE not yet here), and over
  // CURVE, TASK bytes on their way (sent, receipt not yet here).
  std::unique_ptr<TransferWindow> uploads_;
  std::unique_ptr<TransferWindow> task_sends_;
  // Evaluates global models on the test set off this thread; null without one.
  std::unique_ptr<BackgroundEvaluator> evaluator_;
  // rounds.csv, checkpoints, the round log and global.flm (--out).
  std::unique_ptr<RunStore> store_;
  std::unique_ptr<RoundReporter> reporter_;
  GlobalModel model_;
  PruningSchedule pruning_;
  // Turns each round's accepted updates into the next global model (the
  // strategy; a relay's private rounds use their plan's rule).
  std::unique_ptr<Aggregator> aggregator_;
  // With central privacy, `aggregator_` is this decorator: epsilon, the clip.
  const PrivateAggregator* privacy_{nullptr};
  // The input normalisation and class names of the federation, in every TASK.
  Normalization normalization_;
  std::vector<std::string> class_names_;
  std::unique_ptr<SigningKey> signer_;
  // Authenticates the round log (from `signer_`; none without a key).
  WalKey wal_key_;
  std::unique_ptr<Scheduler> scheduler_;
  uint64_t round_{0};  // last completed round
  std::map<std::string, int64_t> totals_rejected_;
  // Set once the federation is over: every message gets it.
  std::optional<wire::Done> done_;
  ConnectionCap connections_;
  double metrics_published_{-1e18};
  // Test hook (--debug-crash-at): kill the process at a named point.
  uint64_t acks_sent_{0};
  bool warned_eval_skipped_{false};
};

// Server::Create: the options checked, the model file read (it may name the
// architecture), then the conductor started.
Result<std::unique_ptr<Conductor>> MakeConductor(ServerOptions options,
                                                 std::shared_ptr<transport::Context> context,
                                                 const ModelRuntime& runtime);

}  // namespace fl

#endif  // FEDGE_SERVER_CONDUCTOR_H_
