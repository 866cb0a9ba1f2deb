// Synchronous rounds (server/scheduler.h): the round a root runs
// (SyncRounds) and the one a relay runs for its parent (ParentRounds) are the
// same collection: wait for enough live devices, select, send one TASK to
// every selected device, collect until all answered, the target is met
// (over-selection) or the deadline passed, then commit. Internal to the
// server library.
#ifndef FEDGE_SERVER_SYNC_ROUNDS_H_
#define FEDGE_SERVER_SYNC_ROUNDS_H_

#include <atomic>
#include <memory>
#include <optional>

#include "server/scheduler.h"
#include "server/selector.h"
#include "server/server.h"
#include "server/wal.h"

namespace fl {

class RoundCollector : public Scheduler {
 public:
  RoundCollector(const ServerOptions& o, SchedulerHost* host, RoundPlan base,
                 std::optional<WalContents> resumed);

  std::optional<TaskRef> TaskOf(const std::string& id) const override;
  bool Admit(const std::string& peer, const wire::Envelope& env, const char* what) override;

 protected:
  // Runs round `r` under `plan_`: wait, select (or reopen), send, collect,
  // commit. `*abandoned` when stopped.
  Status RunRound(uint64_t r, const std::atomic<bool>* stop, bool* abandoned);

  const ServerOptions& o_;
  SchedulerHost& host_;
  // What every round's plan starts from (RootPlan).
  const RoundPlan base_;
  std::optional<WalContents> resumed_;

 private:
  Status WaitForEvaluations(const std::atomic<bool>* stop, bool* abandoned);
  Status WaitForLive(uint64_t r, const std::atomic<bool>* stop, bool* abandoned);
  // Selects (or takes the selection of the round the log reopened); the
  // devices to send the TASK to.
  Result<std::vector<std::string>> Select(uint64_t r, int* live);
  // Over-selection: the round has its updates; the devices still training
  // are told their work is not needed.
  void WithdrawTheRest(uint64_t r);
  // Devices a round may select when the rule holds every delta.
  int HeldUpdateCap(int want);
  int64_t LiveForMinimum() const;

  std::unique_ptr<Selector> uniform_;
  std::unique_ptr<Selector> poisson_;
  bool warned_held_cap_{false};
  bool warned_few_participants_{false};
};

// A root's rounds 1..options.rounds.
class SyncRounds final : public RoundCollector {
 public:
  using RoundCollector::RoundCollector;
  Status Run(const std::atomic<bool>* stop, bool* abandoned) override;
};

// The plan of a root's round (or step) `r`: `base` (the run's TASK fields,
// deadline and privacy) with the round's learning rate, seed and privacy clip.
RoundPlan RootPlan(const RoundPlan& base, const ServerOptions& o, uint64_t r, double dp_clip);

}  // namespace fl

#endif  // FEDGE_SERVER_SYNC_ROUNDS_H_
