// Buffered asynchronous rounds (FedBuff; server/async_tasks.h): tasks are
// handed to idle live devices until `concurrency` are out, each on the model
// of the step it was handed out in; every `buffer` accepted updates (each
// scaled by its staleness weight) the model steps. A task not answered within
// the deadline, or too stale to count, is given up and handed on.
#include "server/buffered_async.h"

#include <spdlog/spdlog.h>

#include <limits>
#include <set>

#include "common/random.h"
#include "crypto/message.h"
#include "server/async_tasks.h"
#include "server/global_model.h"
#include "server/registry.h"
#include "server/server.h"
#include "server/sync_rounds.h"
#include "server/wal.h"

namespace fl {

namespace {

// Log at most this many given-up tasks per step; the rest are counted.
const int kLogPerStep = 5;

class BufferedAsync final : public Scheduler {
 public:
  BufferedAsync(const ServerOptions& o, SchedulerHost* host, RoundPlan base,
                std::optional<WalContents> resumed)
      : o_(o),
        host_(*host),
        base_(std::move(base)),
        resumed_(std::move(resumed)),
        tasks_(o.async),
        rng_(o.seed * 0x9E3779B97F4A7C15ULL + 0xA5) {
    plan_ = base_;
  }

  Status Run(const std::atomic<bool>* stop, bool* abandoned) override {
    for (uint64_t r = host_.completed() + 1; r <= static_cast<uint64_t>(o_.rounds); ++r) {
      plan_ = RootPlan(base_, o_, r, host_.dp_clip());
      FL_RETURN_IF_ERROR(RunStep(r, stop, abandoned));
      if (*abandoned) break;
    }
    round_.collecting = false;  // no more tasks
    return Status::OK();
  }

  std::optional<TaskRef> TaskOf(const std::string& id) const override {
    const AsyncTasks::Task* t = tasks_.Find(id);
    if (!t) return std::nullopt;
    return TaskRef{t->step, t->nonce, t->base, t->registered};
  }

  // The sender holds a task, the message names its step and carries its
  // nonce, and it is not too stale.
  bool Admit(const std::string& peer, const wire::Envelope& env, const char* what) override;

  void Refresh(const std::string& id) override {
    const AsyncTasks::Task* t = tasks_.Find(id);
    if (t && t->step != round_.round) {
      tasks_.Issue(id, round_.round, RandomNonce(), host_.model().version(), t->registered,
                   host_.Now());
    }
  }
  void Sent(const std::string& id) override { tasks_.Sent(id, host_.Now()); }
  void Closed(const std::string& id) override { tasks_.Close(id); }
  void Tick() override;
  // A step's buffer takes exactly --buffer updates: the next ones wait in the
  // socket for the next step (a message adds at most one).
  size_t Room() const override {
    const size_t buffer = static_cast<size_t>(o_.async.buffer);
    return round_.entries.size() >= buffer ? 0 : buffer - round_.entries.size();
  }

 private:
  Status RunStep(uint64_t r, const std::atomic<bool>* stop, bool* abandoned);
  Status OpenStep(uint64_t r);
  void GiveUpExpired(double now, std::set<std::string>* given_up);
  // The live devices and those training a task (silent, not gone).
  std::vector<std::string> PresentDevices(const std::vector<std::string>& live) const {
    std::set<std::string> all(live.begin(), live.end());
    for (const auto& id : tasks_.Ids()) all.insert(id);
    return {all.begin(), all.end()};
  }
  bool StepFull() const { return Room() == 0; }

  const ServerOptions& o_;
  SchedulerHost& host_;
  const RoundPlan base_;
  std::optional<WalContents> resumed_;
  AsyncTasks tasks_;
  // Chooses the idle devices that get the freed tasks (seeded by --seed).
  Random rng_;
};

bool BufferedAsync::Admit(const std::string& peer, const wire::Envelope& env, const char* what) {
  const std::string& who = env.sender;
  if (!round_.collecting) {
    host_.Refuse(peer, who, env, "stale_round",
                 std::string(what) + " for step " + std::to_string(env.round) +
                     "; the run's last step is done");
    return false;
  }
  uint32_t tau = 0;
  switch (tasks_.Check(who, env.round, env.nonce, round_.round, &tau)) {
    case AsyncTasks::Match::kOk:
      return true;
    case AsyncTasks::Match::kNoTask:
      host_.Refuse(peer, who, env, "stale_round",
                   std::string(what) + " for step " + std::to_string(env.round) +
                       ", but this device holds no task (answered already, given up at the "
                       "deadline, or handed out before the server restarted)");
      return false;
    case AsyncTasks::Match::kWrongTask:
      host_.Refuse(peer, who, env, "bad_nonce",
                   std::string(what) + " does not carry the step and nonce of this device's task");
      // A device answering another task of its (a restart voided it) may
      // have set ours aside as a copy of that one: send it again, once.
      host_.ResendTask(who);
      return false;
    case AsyncTasks::Match::kTooStale:
      host_.EndTurn(who);
      host_.Refuse(peer, who, env, "too_stale",
                   std::string(what) + " from step " + std::to_string(env.round) +
                       " is more than --max-staleness " + std::to_string(o_.async.max_staleness) +
                       " steps behind the model (step " + std::to_string(round_.round) + ")");
      return false;
  }
  return false;
}

// Devices that vanished with a task (as in a round), then tasks past the
// deadline or too stale to count.
void BufferedAsync::GiveUpExpired(double now, std::set<std::string>* given_up) {
  RoundMetrics& m = round_.m;
  const size_t before = tasks_.outstanding();
  host_.GiveUpOnVanished();
  m.expired += static_cast<int>(before - tasks_.outstanding());
  for (const auto& x : tasks_.Expire(now, plan_.deadline_seconds, round_.round)) {
    host_.EndTurn(x.id);
    given_up->insert(x.id);
    m.expired++;
    if (m.expired <= kLogPerStep) {
      spdlog::warn("step {}: {} {} its task of step {}; handing the task to another device",
                   round_.round, x.id,
                   x.too_stale
                       ? fmt::format("is more than --max-staleness {} steps behind with",
                                     o_.async.max_staleness)
                       : fmt::format("did not answer within {:.0f} s", plan_.deadline_seconds),
                   x.task.step);
    }
    // So that it does not upload late (a held-back update is dropped);
    // carrying the task's nonce, so a copy cannot withdraw another task.
    host_.Withdraw(x.id, x.task.step, x.task.nonce,
                   x.too_stale ? "the task is too stale to count"
                               : "the task was given up at the deadline");
  }
}

// Gives up on tasks past the deadline, and hands tasks to idle live devices
// until `concurrency` are out.
void BufferedAsync::Tick() {
  const double now = host_.Now();
  std::set<std::string> given_up;
  GiveUpExpired(now, &given_up);
  if (tasks_.Wanted() == 0) return;
  std::vector<std::string> live;
  host_.Live(&live);
  // Devices training are silent, not gone: they count toward --min-clients.
  if (PresentDevices(live).size() < static_cast<size_t>(o_.min_clients)) return;
  // A device answers once a step: one that is in this step's buffer gets
  // its next task in the next step, so no device can fill a buffer alone.
  std::set<std::string> in_buffer;
  for (const auto& e : round_.entries) in_buffer.insert(e.sender);
  std::vector<std::string> idle;
  for (const auto& id : live) {
    // (A device just given up on is not handed the next task at once.)
    if (!tasks_.Has(id) && !given_up.count(id) && !in_buffer.count(id)) idle.push_back(id);
  }
  if (idle.empty()) return;
  rng_.Shuffle(&idle);
  const size_t n = std::min(idle.size(), tasks_.Wanted());
  const auto& clients = host_.registry().entries();
  for (size_t i = 0; i < n; ++i) {
    const std::string& id = idle[i];
    const auto it = clients.find(id);
    tasks_.Issue(id, round_.round, RandomNonce(), host_.model().version(),
                 it == clients.end() ? 0 : it->second.num_examples, now);
    round_.pending.insert(id);
    round_.m.selected++;
    host_.SendTask(id);
  }
}

// Opens step `r`'s log: the step the log reopened (its bounds and the
// updates it had acknowledged: the buffer so far), or a new one whose bounds
// come from what the present devices registered with.
Status BufferedAsync::OpenStep(uint64_t r) {
  if (resumed_ && resumed_->header.round == r) {
    WalContents c = std::move(*resumed_);
    resumed_.reset();
    return host_.ReopenLog(std::move(c), /*selection=*/false);
  }
  std::vector<std::string> live;
  host_.Live(&live);
  const std::vector<std::string> present = PresentDevices(live);
  round_.limits.population = static_cast<uint32_t>(present.size());
  std::vector<int64_t> registered;
  const auto& clients = host_.registry().entries();
  for (const auto& id : present) {
    const auto it = clients.find(id);
    registered.push_back(it == clients.end() ? 0 : it->second.num_examples);
  }
  host_.SetLimits(std::move(registered));
  WalHeader h{r,
              {},
              host_.model().version(),
              round_.limits.weight_cap,
              round_.limits.norm_bound,
              {},
              round_.limits.population};
  return host_.OpenLog(h, /*with_staleness=*/true);
}

// Server step `r`: collect `buffer` updates from the devices training (tasks
// are handed out as devices free up, across steps), then commit.
Status BufferedAsync::RunStep(uint64_t r, const std::atomic<bool>* stop, bool* abandoned) {
  FL_RETURN_IF_ERROR(host_.BeginRound(r));
  const double t0 = host_.Now();
  FL_RETURN_IF_ERROR(OpenStep(r));
  // The step is open from here: updates that arrive while the server waits
  // for its evaluations join it.
  round_.round = r;
  round_.collecting = true;
  round_.started = round_.last_accept_time = t0;
  round_.first_update_time = 0;
  double next_log = host_.Now() + 10;
  FL_RETURN_IF_ERROR(host_.Pump(std::numeric_limits<double>::infinity(), stop, [&] {
    if (host_.Now() >= next_log) {
      spdlog::info("step {}: {} of {} updates in; {} task(s) out, {} device(s) live", r,
                   round_.entries.size(), o_.async.buffer, tasks_.outstanding(),
                   host_.Live(nullptr));
      next_log = host_.Now() + 10;
    }
    return StepFull();
  }));
  host_.CloseTransfers(/*keep=*/true);
  if (stop && stop->load()) {
    round_.collecting = false;
    spdlog::warn("step {} abandoned on signal; the checkpoint of step {} stays", r,
                 host_.completed());
    *abandoned = true;
    return Status::OK();
  }
  RoundMetrics& m = round_.m;
  m.collect_seconds = round_.last_accept_time - t0;
  if (m.participants >= 2) m.ingest_seconds = round_.last_accept_time - round_.first_update_time;
  double staleness_sum = 0;
  for (const auto& e : round_.entries) {
    staleness_sum += e.staleness;
    m.max_staleness = std::max(m.max_staleness, e.staleness);
  }
  if (!round_.entries.empty()) {
    m.mean_staleness = staleness_sum / static_cast<double>(round_.entries.size());
  }
  // Tasks stay out across the step; the next step's TASKs carry the new model.
  return host_.Commit(/*may_skip_eval=*/r != static_cast<uint64_t>(o_.rounds));
}

}  // namespace

std::unique_ptr<Scheduler> MakeBufferedAsync(const ServerOptions& o, SchedulerHost* host,
                                             RoundPlan base, std::optional<WalContents> resumed) {
  return std::make_unique<BufferedAsync>(o, host, std::move(base), std::move(resumed));
}

}  // namespace fl
