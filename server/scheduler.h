// How rounds happen. The server (the conductor: socket, registry,
// enrollment, ingest, TASKs, evaluation, the run's files and the global
// model) runs one scheduler, which decides when a round opens, who is asked,
// and when it closes:
//   SyncRounds      rounds: select, send, collect until everyone answered,
//                   the target is met or the deadline passed (FedAvg's rounds)
//   BufferedAsync   FedBuff: tasks out on devices at all times, a step every
//                   `buffer` accepted updates, each weighted by its staleness
//   ParentRounds    a relay: each round is its parent's, run for its devices,
//                   and its exact sum goes back up
// A scheduler reaches the server through the narrow SchedulerHost below:
// pump (receive and handle messages until a condition), send a task,
// withdraw one, commit a round. No scheduler knows another; MakeScheduler
// owns the rules on which modes combine.
#ifndef FEDGE_SERVER_SCHEDULER_H_
#define FEDGE_SERVER_SCHEDULER_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "server/open_round.h"
#include "server/round_plan.h"
#include "server/task_cache.h"
#include "server/wal.h"

namespace fl {

class Aggregator;
class ClientRegistry;
class GlobalModel;
struct ServerOptions;

// What the server offers its scheduler.
class SchedulerHost {
 public:
  virtual ~SchedulerHost() = default;

  // The server's clock, in seconds: ServerOptions::clock on a running server; a
  // test's own (simulated) time in tests/scheduler_test.cc. Every time a
  // scheduler reads or passes on (deadlines, Pump's `until`) is on it.
  virtual double Now() const = 0;

  // --- the verbs ---
  // Receives and handles messages until Now() reaches `until`,
  // `*stop` is set or `done_when` (may be empty) returns true.
  virtual Status Pump(double until, const std::atomic<bool>* stop,
                      const std::function<bool()>& done_when) = 0;
  // Handles up to `max` messages already waiting, without waiting for more
  // (a client that reconnected is then known by its new connection).
  virtual Status Drain(int max) = 0;
  // Sends the open round's TASK to `id` now, or once the TASK bytes on their
  // way leave room (transfer windows).
  virtual void SendTask(const std::string& id) = 0;
  // Tells `id` its task of `step` (carrying `nonce`) is withdrawn: REJECT
  // "not_needed" about its TASK, so it does not upload.
  virtual void Withdraw(const std::string& id, uint64_t step, const OpenRound::Nonce& nonce,
                        const std::string& why) = 0;
  // The end of the open round: its logged updates become the next global
  // model (or a relay's sum), the checkpoint commits it, the evaluator gets
  // it. `may_skip_eval`: a step whose evaluation would queue behind others
  // goes without.
  virtual Status Commit(bool may_skip_eval) = 0;

  // --- around them ---
  // Starts round `r`: re-reads the enrollment, resets the round's metrics.
  virtual Status BeginRound(uint64_t r) = 0;
  // The refusal of a message: counter, throttled log line, REJECT.
  virtual void Refuse(const std::string& peer, const std::string& who, const wire::Envelope& env,
                      const std::string& reason, const std::string& message) = 0;
  // Sends `id` its TASK again at once (it reconnected, or set it aside),
  // once a round.
  virtual void ResendTask(const std::string& id) = 0;
  // Closes `id`'s turn and its transfers.
  virtual void EndTurn(const std::string& id) = 0;
  // Stops waiting for pending devices whose connection is gone and that have
  // not come back within the client timeout; probes pending relays.
  virtual void GiveUpOnVanished() = 0;
  // A pending device missed the round's deadline: it is not selected again
  // until it is heard from.
  virtual void MissedDeadline(const std::string& id) = 0;
  // Transfers: a new round's start (the windows empty), and the end of
  // collecting (their statistics into the round's metrics, the TASKs built
  // for it dropped, and the windows emptied unless `keep`: asynchronous tasks
  // stay out across steps).
  virtual void ResetTransfers() = 0;
  virtual void CloseTransfers(bool keep) = 0;
  // The live devices, sorted by id (the count when `ids` is null).
  virtual int Live(std::vector<std::string>* ids) const = 0;
  // A participant's share of a private round's population (a relay: the
  // devices it says it serves).
  virtual int64_t PopulationOf(const std::string& id) const = 0;
  virtual bool IsRelay(const std::string& id) const = 0;
  // A seed only the server can predict (from its key; else from --seed).
  virtual uint64_t SecretSeed(const char* what, uint64_t r) const = 0;
  // Opens the round's log (`header`), or reopens the one --resume found
  // (`reopen`): bounds, nonce and selection from it, its acknowledged
  // updates kept (with `selection`, only those of selected devices still to
  // answer, which are then not asked again).
  virtual Status OpenLog(const WalHeader& header, bool with_staleness) = 0;
  virtual Status ReopenLog(WalContents contents, bool selection) = 0;
  // The round's update bounds from what the devices an update may come
  // from registered with.
  virtual void SetLimits(std::vector<int64_t> registered) = 0;
  // The round's model and its rule; the number of rounds completed.
  virtual GlobalModel& model() = 0;
  virtual Aggregator& rule() = 0;
  virtual const ClientRegistry& registry() const = 0;
  virtual uint64_t completed() const = 0;
  // With central privacy: the clipping norm this round uses (0 without).
  virtual double dp_clip() const = 0;
  // Evaluations still queued or running.
  virtual size_t evaluations_outstanding() const = 0;
};

class Scheduler {
 public:
  virtual ~Scheduler() = default;

  // Runs rounds until the last one (or, for a relay, the parent's DONE), or
  // until `*stop`: then `*abandoned` and the open round is given up.
  virtual Status Run(const std::atomic<bool>* stop, bool* abandoned) = 0;

  // --- what the receive path asks ---
  // The round being collected and what it asks of participants.
  OpenRound& round() { return round_; }
  const OpenRound& round() const { return round_; }
  const RoundPlan& plan() const { return plan_; }
  // The task `id` holds in the open round, if any.
  virtual std::optional<TaskRef> TaskOf(const std::string& id) const = 0;
  // For a READY or UPDATE from a pending participant (`what` names it):
  // true when it answers the task the sender holds; otherwise refused
  // (through the host) and false.
  virtual bool Admit(const std::string& peer, const wire::Envelope& env, const char* what) = 0;
  // `id`'s task is about to be sent: an asynchronous task of an earlier step
  // goes out on the newest model, as a task of this step.
  virtual void Refresh(const std::string& /*id*/) {}
  // `id`'s TASK left now (its deadline runs from here).
  virtual void Sent(const std::string& /*id*/) {}
  // `id`'s turn is over (answered, refused, given up).
  virtual void Closed(const std::string& /*id*/) {}
  // Called while collecting, before each wait for messages.
  virtual void Tick() {}
  // Updates the open round can still take now (the rest wait in the socket).
  virtual size_t Room() const { return SIZE_MAX; }

 protected:
  OpenRound round_;
  RoundPlan plan_;
};

class RelayLink;

// The scheduler `options` ask for (sync, async, or a relay's when
// options.parent is set), after CheckModes. `base`: what every round's plan
// starts from (the run's TASK fields, deadline and privacy). `resumed`: the
// round log --resume found open, which the scheduler reopens.
std::unique_ptr<Scheduler> MakeScheduler(const ServerOptions& options, SchedulerHost* host,
                                         RoundPlan base, std::optional<WalContents> resumed);

// InvalidArgument when `options` combine modes that do not go together
// (a relay with root-only settings, asynchronous rounds with privacy, ...).
Status CheckModes(const ServerOptions& options);

// InvalidArgument when the rule cannot hold what the mode needs of it in
// --max-aggregation-mb, with `per_update` bytes held per update (0: the
// rule streams): a robust rule's minimum, an asynchronous step's buffer.
Status CheckAggregationFits(const ServerOptions& options, size_t per_update);

}  // namespace fl

#endif  // FEDGE_SERVER_SCHEDULER_H_
