// The schedulers in simulated time: a SchedulerHost whose clock is the
// test's own and whose devices answer after scripted delays. Deadlines,
// over-selection, the wait for live devices, asynchronous tasks given up at
// their deadline and a relay's rounds within its parent's deadline run in
// the server's time, to the exact second, with no sockets and no sleeps.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "server/aggregator.h"
#include "server/buffered_async.h"
#include "server/global_model.h"
#include "server/parent_rounds.h"
#include "server/registry.h"
#include "server/relay_link.h"
#include "server/server.h"
#include "server/sync_rounds.h"

namespace fl {
namespace {

constexpr double kNever = std::numeric_limits<double>::infinity();
// The conductor looks at its socket, its deadlines and the scheduler's tick
// at least this often (Conductor::Pump's longest wait).
constexpr double kLookSeconds = 0.2;

// A device of the simulated fleet: live from `joins`, answering a TASK
// `answers_after` seconds after it was sent (kNever: never).
struct SimDevice {
  double joins{0};
  double answers_after{kNever};
};

// What the scheduler committed, and when.
struct Committed {
  uint64_t round{0};
  double at{0};
  int selected{0};
  int participants{0};
  int withdrawn{0};
  double collect_seconds{0};
  uint32_t max_staleness{0};
  int expired{0};
};

// The server side of a scheduler, in simulated time. Pump moves the clock as
// the conductor's loop does (a look at least every 0.2 s, the scheduler's
// Tick before each), jumping to a device's answer when one is due first; an
// answer goes through the scheduler's Admit and is taken as the conductor
// takes an accepted update.
class SimulatedHost final : public SchedulerHost {
 public:
  explicit SimulatedHost(std::map<std::string, SimDevice> fleet) : fleet_(std::move(fleet)) {
    auto rule = MakeAggregator(StrategyOptions{});
    EXPECT_TRUE(rule.ok());
    rule_ = std::move(rule).value();
  }
  void set_scheduler(Scheduler* s) { scheduler_ = s; }
  // Events also come from another thread (a relay's parent): a wait with no
  // end and no answer due waits for it in real time, the clock standing still.
  void set_outside_thread() { outside_thread_ = true; }

  double Now() const override { return now_; }

  Status Pump(double until, const std::atomic<bool>* stop,
              const std::function<bool()>& done_when) override {
    pumps_++;
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (!(stop && stop->load()) && !(done_when && done_when())) {
      if (until - now_ <= 0) break;
      if (until == kNever && due_.empty() && outside_thread_) {
        // Waiting for something outside the fleet (a relay's parent, on
        // its own thread): the server's time stands still meanwhile.
        if (std::chrono::steady_clock::now() > give_up) {
          return Status::Unavailable("nothing happened for 60 s of real time");
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
        continue;
      }
      if (scheduler_->round().collecting) scheduler_->Tick();
      // The next answer due among the devices holding a task.
      std::string next;
      double due_at = kNever;
      for (const auto& [id, due] : due_) {
        if (due < due_at) due_at = due, next = id;
      }
      const double look = std::min(until, now_ + kLookSeconds);
      if (due_at > look) {
        now_ = look;
        continue;
      }
      now_ = std::max(now_, due_at);
      due_.erase(next);
      Answer(next);
    }
    return Status::OK();
  }
  Status Drain(int) override { return Status::OK(); }
  void SendTask(const std::string& id) override {
    scheduler_->Refresh(id);
    sent_[id].push_back(now_);
    const double after = fleet_.at(id).answers_after;
    if (after != kNever) due_[id] = now_ + after;
    scheduler_->Sent(id);
  }
  void Withdraw(const std::string& id, uint64_t, const OpenRound::Nonce&,
                const std::string&) override {
    withdrawn_.push_back(id);
    withdrawn_at_.push_back(now_);
    due_.erase(id);
  }
  Status Commit(bool) override {
    const RoundMetrics& m = scheduler_->round().m;
    commits_.push_back({m.round, now_, m.selected, m.participants, m.withdrawn,
                        m.collect_seconds, m.max_staleness, m.expired});
    completed_++;
    return Status::OK();
  }
  Status BeginRound(uint64_t r) override {
    scheduler_->round().Reset(r);
    return Status::OK();
  }
  void Refuse(const std::string&, const std::string& who, const wire::Envelope&,
              const std::string& reason, const std::string&) override {
    refused_.push_back(who + ":" + reason);
  }
  void ResendTask(const std::string&) override {}
  void EndTurn(const std::string&) override {}
  void GiveUpOnVanished() override {}
  void MissedDeadline(const std::string& id) override {
    missed_.push_back(id);
    unheard_.insert(id);  // as the conductor: not selected until heard from
    due_.erase(id);
  }
  void ResetTransfers() override {}
  void CloseTransfers(bool) override {}
  int Live(std::vector<std::string>* ids) const override {
    int n = 0;
    for (const auto& [id, d] : fleet_) {  // sorted by id
      if (d.joins > now_ || unheard_.count(id)) continue;
      n++;
      if (ids) ids->push_back(id);
    }
    return n;
  }
  int64_t PopulationOf(const std::string&) const override { return 1; }
  bool IsRelay(const std::string&) const override { return false; }
  uint64_t SecretSeed(const char*, uint64_t r) const override { return 77 + r; }
  Status OpenLog(const WalHeader&, bool) override { return Status::OK(); }
  Status ReopenLog(WalContents, bool) override { return Status::OK(); }
  void SetLimits(std::vector<int64_t>) override {}
  GlobalModel& model() override { return model_; }
  Aggregator& rule() override { return *rule_; }
  const ClientRegistry& registry() const override { return registry_; }
  uint64_t completed() const override { return completed_; }
  double dp_clip() const override { return 0; }
  size_t evaluations_outstanding() const override { return 0; }

  const std::vector<Committed>& commits() const { return commits_; }
  const std::vector<std::string>& missed() const { return missed_; }
  const std::vector<std::string>& withdrawn() const { return withdrawn_; }
  const std::vector<double>& withdrawn_at() const { return withdrawn_at_; }
  const std::vector<std::string>& refused() const { return refused_; }
  // When `id` got each of its TASKs.
  std::vector<double> sent(const std::string& id) const {
    const auto it = sent_.find(id);
    return it == sent_.end() ? std::vector<double>{} : it->second;
  }
  int pumps() const { return pumps_; }

 private:
  // `id`'s UPDATE of the open round: admitted by the scheduler, then kept.
  void Answer(const std::string& id) {
    OpenRound& r = scheduler_->round();
    const std::optional<TaskRef> task = scheduler_->TaskOf(id);
    wire::Envelope env;
    env.sender = id;
    env.round = task ? task->step : r.round;
    env.nonce = task ? task->nonce : r.nonce;
    if (!scheduler_->Admit("peer-" + id, env, "UPDATE")) return;
    WalEntry e;
    e.sender = id;
    e.staleness = static_cast<uint32_t>(r.round - env.round);
    r.pending.erase(id);
    r.entries.push_back(e);
    r.m.participants++;
    if (r.first_update_time == 0) r.first_update_time = now_;
    r.last_accept_time = now_;
    scheduler_->Closed(id);
  }

  std::map<std::string, SimDevice> fleet_;
  Scheduler* scheduler_{nullptr};
  bool outside_thread_{false};
  double now_{1000};  // any origin: only differences matter
  std::map<std::string, double> due_;
  std::map<std::string, std::vector<double>> sent_;
  std::set<std::string> unheard_;
  std::vector<Committed> commits_;
  std::vector<std::string> missed_, withdrawn_, refused_;
  std::vector<double> withdrawn_at_;
  uint64_t completed_{0};
  int pumps_{0};
  GlobalModel model_;
  std::unique_ptr<Aggregator> rule_;
  ClientRegistry registry_;
};

ServerOptions SyncOptions(int rounds, int min_clients, double deadline) {
  ServerOptions o;
  o.rounds = rounds;
  o.min_clients = min_clients;
  o.fraction = 1;
  o.round_deadline_seconds = deadline;
  o.verbose = false;
  return o;
}

RoundPlan PlanOf(const ServerOptions& o) {
  RoundPlan plan;
  plan.deadline_seconds = o.round_deadline_seconds;
  return plan;
}

// Runs `o`'s rounds on `host`, in its time.
void RunSync(const ServerOptions& o, SimulatedHost* host) {
  SyncRounds rounds(o, host, PlanOf(o), std::nullopt);
  host->set_scheduler(&rounds);
  std::atomic<bool> stop{false};
  bool abandoned = false;
  ASSERT_TRUE(rounds.Run(&stop, &abandoned).ok());
  EXPECT_FALSE(abandoned);
}

TEST(SchedulerTest, ADeviceThatNeverAnswersIsLeftAtTheDeadlineToTheSecond) {
  SimulatedHost host({{"a", {0, 5}}, {"b", {0, 10}}, {"c", {0, 20}}, {"d", {0, kNever}}});
  RunSync(SyncOptions(/*rounds=*/2, /*min_clients=*/3, /*deadline=*/60), &host);
  ASSERT_EQ(host.commits().size(), 2u);
  // Round 1 waits for d until its deadline, 60 s after the TASKs left.
  const Committed& r1 = host.commits()[0];
  EXPECT_EQ(r1.round, 1u);
  EXPECT_EQ(r1.at, 1000 + 60);
  EXPECT_EQ(r1.selected, 4);
  EXPECT_EQ(r1.participants, 3);
  EXPECT_EQ(r1.collect_seconds, 60);
  EXPECT_EQ(host.missed(), std::vector<std::string>{"d"});
  // Round 2 does not ask d (not heard from since) and ends with its slowest
  // device, 20 s in, not at the deadline.
  const Committed& r2 = host.commits()[1];
  EXPECT_EQ(r2.selected, 3);
  EXPECT_EQ(r2.participants, 3);
  EXPECT_EQ(r2.at, 1060 + 20);
  EXPECT_EQ(r2.collect_seconds, 20);
  EXPECT_EQ(host.sent("d"), std::vector<double>{1000});
  EXPECT_EQ(host.sent("a"), (std::vector<double>{1000, 1060}));
  EXPECT_TRUE(host.refused().empty());
}

TEST(SchedulerTest, OverSelectionClosesAtTheTargetAndWithdrawsTheSlowest) {
  // Ten devices; device k answers 10 + k seconds after its TASK.
  std::map<std::string, SimDevice> fleet;
  for (int k = 0; k < 10; ++k) fleet["dev" + std::to_string(k)] = {0, 10.0 + k};
  SimulatedHost host(fleet);
  ServerOptions o = SyncOptions(/*rounds=*/1, /*min_clients=*/10, /*deadline=*/300);
  o.fraction = 0.4;        // 4 updates close a round
  o.over_selection = 1.5;  // 6 are asked
  RunSync(o, &host);
  ASSERT_EQ(host.commits().size(), 1u);
  const Committed& c = host.commits()[0];
  EXPECT_EQ(c.selected, 6);
  EXPECT_EQ(c.participants, 4);
  EXPECT_EQ(c.withdrawn, 2);
  // The round ends at the fourth answer among the six asked: the two slowest
  // asked are withdrawn, no device misses a deadline.
  std::vector<std::pair<double, std::string>> asked;
  for (const auto& [id, d] : fleet) {
    if (!host.sent(id).empty()) asked.push_back({d.answers_after, id});
  }
  ASSERT_EQ(asked.size(), 6u);
  std::sort(asked.begin(), asked.end());
  EXPECT_EQ(c.at, 1000 + asked[3].first);
  std::vector<std::string> slowest = {asked[4].second, asked[5].second};
  std::vector<std::string> withdrawn = host.withdrawn();
  std::sort(withdrawn.begin(), withdrawn.end());
  std::sort(slowest.begin(), slowest.end());
  EXPECT_EQ(withdrawn, slowest);
  EXPECT_TRUE(host.missed().empty());
}

TEST(SchedulerTest, ARoundWaitsForMinClientsLiveThenStarts) {
  // c comes online 45 s into the run; --min-clients 3 holds the round until then.
  SimulatedHost host({{"a", {0, 1}}, {"b", {0, 2}}, {"c", {1045, 3}}});
  RunSync(SyncOptions(/*rounds=*/1, /*min_clients=*/3, /*deadline=*/60), &host);
  ASSERT_EQ(host.commits().size(), 1u);
  ASSERT_EQ(host.sent("a").size(), 1u);
  // The wait looks again every half second of server time.
  const double started = host.sent("a")[0];
  EXPECT_GE(started, 1045);
  EXPECT_LE(started, 1045.5);
  EXPECT_EQ(host.sent("c"), host.sent("a"));
  EXPECT_EQ(host.commits()[0].at, started + 3);
  EXPECT_EQ(host.commits()[0].participants, 3);
  // About 90 looks of half a second each: the wait polls, it does not spin.
  EXPECT_GE(host.pumps(), 90);
  EXPECT_LE(host.pumps(), 100);
}

TEST(SchedulerTest, AnUpdateAfterItsRoundClosedIsRefusedAsStale) {
  // b answers after the deadline: its UPDATE finds the round closed.
  SimulatedHost host({{"a", {0, 5}}, {"b", {0, 90}}});
  ServerOptions o = SyncOptions(/*rounds=*/1, /*min_clients=*/2, /*deadline=*/60);
  SyncRounds rounds(o, &host, PlanOf(o), std::nullopt);
  host.set_scheduler(&rounds);
  std::atomic<bool> stop{false};
  bool abandoned = false;
  ASSERT_TRUE(rounds.Run(&stop, &abandoned).ok());
  ASSERT_EQ(host.commits().size(), 1u);
  EXPECT_EQ(host.commits()[0].participants, 1);
  EXPECT_EQ(host.missed(), std::vector<std::string>{"b"});
  // A late UPDATE of round 1, as the conductor would hand it to the scheduler.
  wire::Envelope late;
  late.sender = "b";
  late.round = 1;
  late.nonce = rounds.round().nonce;
  EXPECT_FALSE(rounds.Admit("peer-b", late, "UPDATE"));
  EXPECT_EQ(host.refused(), std::vector<std::string>{"b:stale_round"});
}

TEST(SchedulerTest, AsyncTasksPastTheDeadlineAreGivenUpAndHandedOnInServerTime) {
  // FedBuff with a step per update and a task on each of three devices: b
  // answers in 10 s, c in 25 s, a never (its task is given up 30 s in).
  SimulatedHost host({{"a", {0, kNever}}, {"b", {0, 10}}, {"c", {0, 25}}});
  ServerOptions o = SyncOptions(/*rounds=*/5, /*min_clients=*/1, /*deadline=*/30);
  o.mode = "async";
  o.async.concurrency = 3;
  o.async.buffer = 1;
  auto steps = MakeBufferedAsync(o, &host, PlanOf(o), std::nullopt);
  host.set_scheduler(steps.get());
  std::atomic<bool> stop{false};
  bool abandoned = false;
  ASSERT_TRUE(steps->Run(&stop, &abandoned).ok());
  // Steps end with b (each of its tasks 10 s), then c's task of step 1
  // (two steps stale), then b's again.
  const std::vector<double> at = {1010, 1020, 1025, 1030, 1040};
  const std::vector<uint32_t> staleness = {0, 0, 2, 1, 0};
  ASSERT_EQ(host.commits().size(), at.size());
  for (size_t i = 0; i < at.size(); ++i) {
    SCOPED_TRACE("step " + std::to_string(i + 1));
    EXPECT_EQ(host.commits()[i].at, at[i]);
    EXPECT_EQ(host.commits()[i].participants, 1);
    EXPECT_EQ(host.commits()[i].max_staleness, staleness[i]);
  }
  // a's task (out since 1000) is given up at the first look past 30 s, in
  // step 5; the look after, a is idle and gets a task again.
  EXPECT_EQ(host.withdrawn(), std::vector<std::string>{"a"});
  ASSERT_EQ(host.withdrawn_at().size(), 1u);
  EXPECT_GT(host.withdrawn_at()[0], 1030);
  EXPECT_LE(host.withdrawn_at()[0], 1030 + kLookSeconds + 1e-9);
  EXPECT_EQ(host.commits()[4].expired, 1);
  const std::vector<double> a_sent = host.sent("a");
  ASSERT_EQ(a_sent.size(), 2u);
  EXPECT_EQ(a_sent[0], 1000);
  EXPECT_GT(a_sent[1], host.withdrawn_at()[0]);
  EXPECT_EQ(host.sent("c"), (std::vector<double>{1000, 1025}));
  EXPECT_TRUE(host.refused().empty());
}

// A relay's rounds come from its parent (a thread here, as the relay's
// session to its parent is): each runs within 80% of the parent's deadline,
// counted from the parent's task, and waits for --min-clients live devices
// at most half of that. Parent's deadline 50 s: the relay's rounds end 40 s
// after each task at the latest, and start by 20 s.
TEST(SchedulerTest, ARelaysRoundsEndWithinItsParentsDeadline) {
  // c never answers; d comes online 30 s into the run. --min-clients 4 is
  // never met: each round starts with who is live halfway.
  SimulatedHost host(
      {{"a", {0, 5}}, {"b", {0, 12}}, {"c", {0, kNever}}, {"d", {1030, 3}}});
  RelayLink link;
  ServerOptions o = SyncOptions(/*rounds=*/0, /*min_clients=*/4, /*deadline=*/600);
  o.parent = &link;
  auto relay = MakeParentRounds(o, &host, PlanOf(o));
  host.set_scheduler(relay.get());
  host.set_outside_thread();
  std::vector<Result<RelayResult>> results;
  std::thread parent([&] {
    for (uint64_t r = 1; r <= 2; ++r) {
      RelayTask task;
      task.round = r;
      task.parameters.architecture = "test";
      task.parameters.tensors.push_back({"w", {4}, {0.5f, -0.25f, 1, 2}, {}});
      task.config.deadline_seconds = 50;
      results.push_back(link.Run(std::move(task), /*timeout_seconds=*/600));
    }
    link.Finish("the federation is over", /*parent_done=*/true);
  });
  std::atomic<bool> stop{false};
  bool abandoned = false;
  const Status st = relay->Run(&stop, &abandoned);
  parent.join();
  ASSERT_TRUE(st.ok()) << st.message();
  EXPECT_FALSE(abandoned);
  ASSERT_EQ(host.commits().size(), 2u);
  ASSERT_EQ(results.size(), 2u);
  // Round 1, the task at 1000: a, b and c live, the round starts at 1020
  // without a fourth; a and b answer, c does not: the round ends at 1040,
  // 40 s after the task (not 40 s after the TASKs left).
  EXPECT_EQ(host.sent("a"), (std::vector<double>{1020, 1040 + 20}));
  EXPECT_EQ(host.sent("c"), std::vector<double>{1020});
  EXPECT_EQ(host.commits()[0].selected, 3);
  EXPECT_EQ(host.commits()[0].participants, 2);
  EXPECT_EQ(host.commits()[0].at, 1040);
  EXPECT_EQ(host.missed(), std::vector<std::string>{"c"});
  ASSERT_TRUE(results[0].ok()) << results[0].status().message();
  EXPECT_EQ(results[0]->round, 1u);
  EXPECT_EQ(results[0]->contributors, 2);
  // Round 2, the task at 1040: a, b and d (c not heard from), from 1060;
  // everyone answers by 1072, and the round ends then.
  EXPECT_EQ(host.sent("d"), std::vector<double>{1060});
  EXPECT_EQ(host.commits()[1].selected, 3);
  EXPECT_EQ(host.commits()[1].participants, 3);
  EXPECT_EQ(host.commits()[1].at, 1072);
  ASSERT_TRUE(results[1].ok()) << results[1].status().message();
  EXPECT_EQ(results[1]->round, 2u);
  EXPECT_EQ(results[1]->contributors, 3);
  EXPECT_TRUE(host.refused().empty());
}

}  // namespace
}  // namespace fl
