// Crash safety of a real federation: an fl-server process and 3 devices
// (fl-client's session and trainer, as threads of the test:
// tests/device_threads.h) over tcp://127.0.0.1. The server is killed
// (SIGKILL, as kill -9 does) at 21 points: after each of the 9 ACKs of a
// 3-round run, right after each round's checkpoint, after its round log is
// removed, after its model file is written, and at 3 random moments. It is then started again with
// --resume on the same port while the clients keep running. Every interrupted run must end with the
// bit-identical global model of the uninterrupted run, and no device that had
// its update acknowledged is asked for it again.
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdlib>
#include <functional>
#include <random>
#include <thread>

#include "common/file_util.h"
#include "crypto/model_file.h"
#include "server/privacy.h"
#include "tests/device_threads.h"
#include "tests/federation_util.h"

namespace fl {
namespace {

const std::string kServer = test::BinPath("fl-server");
constexpr int kClients = 3, kRounds = 3;

std::vector<std::string> ServerArgs(const std::string& bind, const std::string& out,
                                    const std::vector<std::string>& extra) {
  std::vector<std::string> args = {"--bind",
                                   bind,
                                   "--model",
                                   "mnist_2nn",
                                   "--rounds",
                                   std::to_string(kRounds),
                                   "--min-clients",
                                   std::to_string(kClients),
                                   "--fraction",
                                   "1",
                                   "--lr",
                                   "0.05",
                                   "--deadline",
                                   "60",
                                   "--client-timeout",
                                   "10",
                                   "--no-eval",
                                   "--out",
                                   out,
                                   "--linger",
                                   "1",
                                   "--seed",
                                   "7",
                                   "--insecure"};
  args.insert(args.end(), extra.begin(), extra.end());
  return args;
}

// How a run ends: the final model file's bytes (empty on failure) and the
// server logs.
struct Outcome {
  std::string model;
  std::string logs;
  int restarts{0};
  std::vector<int> csv_rounds;           // the round of each rounds.csv row
  std::vector<std::string> csv_epsilon;  // its epsilon column (private runs)
  std::vector<int> csv_participants;
};

// Runs the federation; `crash_at` ("" = none) is passed as --debug-crash-at;
// `kill_after` > 0 kills the first server that many seconds after the round
// traffic starts. After a crash the server is started again with --resume.
// A port below the kernel's ephemeral range (32768 and up), so that no
// connection of another test takes it while the server is down between the
// crash and the restart.
std::string Endpoint(int trial) {
  return "tcp://127.0.0.1:" + std::to_string(20000 + (getpid() * 13 + 5000 + trial) % 12000);
}

Outcome RunFederation(const std::string& dir, const std::string& crash_at, double kill_after,
                      int trial, const std::vector<std::string>& extra = {}) {
  Outcome out;
  const std::string out_dir = dir + "/out";
  std::vector<std::string> args = ServerArgs(Endpoint(trial), out_dir, extra);
  if (!crash_at.empty()) {
    args.push_back("--debug-crash-at");
    args.push_back(crash_at);
  }
  auto server = std::make_unique<test::Process>(kServer, args, dir + "/server0.log");
  const std::string ep = test::StartedEndpoint(*server);
  if (ep.empty()) {
    out.logs = server->Log();
    return out;
  }
  test::DeviceThreads devices(ep, 0, kClients, 100);
  if (kill_after > 0) {
    server->WaitForLog("round 1: selected", 60);
    std::this_thread::sleep_for(std::chrono::milliseconds(static_cast<int>(kill_after * 1000)));
    server->Signal(SIGKILL);
  }
  int code = server->Wait(120);
  out.logs = server->Log();
  if (code == 128 + SIGKILL) {
    // Again, on the same port, from what the crashed server left in --out.
    std::vector<std::string> again = ServerArgs(ep, out_dir, extra);
    again.push_back("--resume");
    server = std::make_unique<test::Process>(kServer, again, dir + "/server1.log");
    code = server->Wait(120);
    out.logs += "\n--- restarted ---\n" + server->Log();
    out.restarts = 1;
  }
  devices.WaitDone(30);
  if (Status st = devices.Join(); !st.ok()) out.logs += "\n--- devices ---\n" + st.ToString();
  if (code != 0) return out;
  auto model = ReadFile(out_dir + "/global.flm");
  if (model.ok()) out.model = *model;
  for (const auto& row : test::ReadRoundsCsv(out_dir + "/rounds.csv")) {
    out.csv_rounds.push_back(row.round);
    out.csv_epsilon.push_back(row.epsilon);
    out.csv_participants.push_back(row.participants);
  }
  return out;
}

// Runs `trial(i, folder)` for i in 0..n-1, three at a time, each in a fresh
// folder: every trial has its own server, clients, port and folder, and most
// of one is waiting (for a restart, for reconnects).
std::vector<Outcome> RunTrials(size_t n,
                               const std::function<Outcome(size_t, const std::string&)>& trial) {
  std::vector<Outcome> outcomes(n);
  std::atomic<size_t> next{0};
  auto worker = [&] {
    for (size_t i; (i = next++) < n;) {
      test::TempDir dir;
      outcomes[i] = trial(i, dir.path());
    }
  };
  std::vector<std::thread> pool;
  for (int t = 0; t < 3; ++t) pool.emplace_back(worker);
  for (auto& t : pool) t.join();
  return outcomes;
}

// Runs the federation with `extra` server flags, killed at each of `points`
// and resumed, and expects each to end as `reference` did: the same model and
// the same epsilon column.
void ExpectSameAfterCrashes(const Outcome& reference, const std::vector<std::string>& extra,
                            const std::vector<const char*>& points, int trial) {
  const std::vector<Outcome> outcomes =
      RunTrials(points.size(), [&](size_t i, const std::string& dir) {
        return RunFederation(dir, points[i], 0, trial + static_cast<int>(i), extra);
      });
  for (size_t i = 0; i < points.size(); ++i) {
    SCOPED_TRACE(points[i]);
    const Outcome& o = outcomes[i];
    EXPECT_EQ(o.restarts, 1) << o.logs;
    ASSERT_FALSE(o.model.empty()) << o.logs;
    EXPECT_TRUE(o.model == reference.model) << "the final model differs\n" << o.logs;
    EXPECT_EQ(o.csv_epsilon, reference.csv_epsilon) << o.logs;
  }
}

TEST(CrashTest, KilledAnywhereTheResumedRunEndsWithTheSameModel) {
  test::TempDir base;
  const Outcome reference = RunFederation(base.path(), "", 0, 0);
  ASSERT_FALSE(reference.model.empty()) << reference.logs;

  std::vector<std::string> points;
  for (int k = 1; k <= kClients * kRounds; ++k) points.push_back("ack:" + std::to_string(k));
  for (const char* p : {"checkpoint", "log_removed", "model_file"}) {
    for (int r = 1; r <= kRounds; ++r) points.push_back(std::string(p) + ":" + std::to_string(r));
  }
  std::mt19937 rng(test::RandomSeed());
  // Within the first round or two: the run takes 2-3 s from round 1 on.
  std::uniform_real_distribution<double> when(0.05, 1.2);
  const int kRandom = 3;
  const size_t trials = points.size() + kRandom;
  std::vector<double> kill_after(trials, 0);
  for (size_t i = points.size(); i < trials; ++i) kill_after[i] = when(rng);
  const std::vector<Outcome> outcomes = RunTrials(trials, [&](size_t i, const std::string& dir) {
    return RunFederation(dir, i < points.size() ? points[i] : "", kill_after[i],
                         static_cast<int>(i) + 1);
  });
  int identical = 0, reopened = 0, kept = 0;
  for (size_t i = 0; i < trials; ++i) {
    const bool random = i >= points.size();
    const std::string name =
        random ? "SIGKILL after " + std::to_string(kill_after[i]) + " s" : points[i];
    SCOPED_TRACE(name);
    const Outcome& o = outcomes[i];
    if (!random) {
      EXPECT_EQ(o.restarts, 1) << "the server did not crash at " << name << "\n" << o.logs;
    }
    ASSERT_FALSE(o.model.empty()) << o.logs;
    EXPECT_TRUE(o.model == reference.model) << "the final model differs\n" << o.logs;
    // rounds.csv too comes out whole: one row per round, in order, even when
    // the kill came between a round's checkpoint and its row.
    EXPECT_EQ(o.csv_rounds, (std::vector<int>{1, 2, 3})) << o.logs;
    identical += o.model == reference.model;
    // After a crash at the k-th ACK of a round, the round is reopened with the
    // acknowledged updates and those devices are not asked again.
    const std::string marker = "reopened from ";
    int kept_here = -1;
    if (o.logs.find(marker) != std::string::npos) {
      ++reopened;
      const size_t at = o.logs.find(marker);
      const size_t colon = o.logs.find(": ", at);
      kept_here = std::atoi(o.logs.c_str() + colon + 2);
      kept += kept_here;
    }
    if (!random && points[i].rfind("ack:", 0) == 0) {
      // The k-th ACK is the ((k-1) % 3 + 1)-th of its round: at least that
      // many updates are kept (one logged in the same batch but not yet
      // acknowledged may be too) and only the other devices are asked.
      const int k = std::atoi(points[i].c_str() + 4);
      EXPECT_GE(kept_here, (k - 1) % kClients + 1) << o.logs;
    }
    std::printf("%-26s restarts %d, %s\n", name.c_str(), o.restarts,
                o.model == reference.model ? "identical" : "DIFFERENT");
  }
  std::printf(
      "%d of %zu interrupted runs ended with the reference model; %d reopened their "
      "round from the log, keeping %d acknowledged updates\n",
      identical, trials, reopened, kept);
  EXPECT_GE(reopened, kClients * kRounds);  // at least every ack:k
}

// A strategy with state across rounds (Yogi's moments, here with clipping):
// the state is in the checkpoint, so a run killed after a round's checkpoint,
// or mid-round after some ACKs, and resumed ends with the same model, bit for
// bit, as the uninterrupted run; a resume under another strategy is refused.
TEST(CrashTest, StrategyStateSurvivesACrash) {
  const std::vector<std::string> yogi = {"--strategy", "fedyogi", "--server-lr",
                                         "0.01",       "--clip",  "2"};
  test::TempDir base;
  const Outcome reference = RunFederation(base.path(), "", 0, 100, yogi);
  ASSERT_FALSE(reference.model.empty()) << reference.logs;
  ExpectSameAfterCrashes(reference, yogi, {"checkpoint:1", "model_file:2", "ack:5"}, 101);
  // The same run under FedAvg ends elsewhere: the strategy did make a difference.
  test::TempDir plain;
  const Outcome fedavg = RunFederation(plain.path(), "", 0, 110);
  ASSERT_FALSE(fedavg.model.empty()) << fedavg.logs;
  EXPECT_FALSE(fedavg.model == reference.model);
  // Resuming a fedyogi checkpoint as fedavg is refused, naming the strategy.
  std::vector<std::string> args = ServerArgs(Endpoint(111), base.path() + "/out", {});
  args.push_back("--resume");
  test::Process again(kServer, args, base.path() + "/again.log");
  EXPECT_NE(again.Wait(30), 0);
  EXPECT_NE(again.Log().find("resume it with that strategy"), std::string::npos) << again.Log();
  // So is resuming it as fedyogi with another beta1 or client learning rate:
  // the moments were built under the checkpoint's settings. Each is named.
  args = ServerArgs(Endpoint(112), base.path() + "/out", yogi);
  for (const char* a : {"--resume", "--beta1", "0.8", "--lr-decay", "0.5"}) args.push_back(a);
  test::Process changed(kServer, args, base.path() + "/changed.log");
  EXPECT_NE(changed.Wait(30), 0);
  EXPECT_NE(changed.Log().find("--beta1: 0.9 in the checkpoint, 0.8 in this run"),
            std::string::npos)
      << changed.Log();
  EXPECT_NE(changed.Log().find("--lr-decay: 1 in the checkpoint, 0.5 in this run"),
            std::string::npos)
      << changed.Log();
}

// Central differential privacy across a crash: the noise is seeded per round
// and the accountant and the adaptive clipping norm are in the checkpoint, so
// the resumed run ends with the same model and reports the same epsilon; every
// round's rounds.csv row carries the accountant's epsilon (q = 1 here: all 3
// devices every round).
TEST(CrashTest, PrivacyStateSurvivesACrash) {
  const std::vector<std::string> dp = {"--dp-noise-multiplier", "0.25", "--dp-clip", "0.5",
                                       "--dp-adaptive-clip"};
  test::TempDir base;
  const Outcome reference = RunFederation(base.path(), "", 0, 120, dp);
  ASSERT_FALSE(reference.model.empty()) << reference.logs;
  ASSERT_EQ(reference.csv_epsilon.size(), 3u);
  // Adaptive clipping: the update noise is z_delta, the accountant charged z.
  RdpAccountant accountant;
  for (size_t r = 0; r < reference.csv_epsilon.size(); ++r) {
    accountant.Compose(1.0, 0.25);
    ASSERT_FALSE(reference.csv_epsilon[r].empty());
    // The same accountant code on the same inputs; rounds.csv prints %.6g
    // (run_store.cc), which is within 5e-6 relative.
    EXPECT_NEAR(std::stod(reference.csv_epsilon[r]), accountant.Epsilon(1e-5),
                5e-6 * accountant.Epsilon(1e-5));
  }
  ExpectSameAfterCrashes(reference, dp, {"checkpoint:1", "ack:5"}, 121);
}

// Federated pruning with server momentum: the mask tightens after rounds 1
// and 2 (to 80% of the weights pruned), momentum follows the values that stay,
// every device trains on each new mask, and a crash after the first mask
// change or mid-round resumes to the same model, bit for bit.
TEST(CrashTest, FederatedPruningSurvivesACrash) {
  const std::vector<std::string> prune = {"--strategy", "fedavgm",        "--prune-to",
                                          "0.8",        "--prune-rounds", "2"};
  test::TempDir base;
  const Outcome reference = RunFederation(base.path(), "", 0, 130, prune);
  ASSERT_FALSE(reference.model.empty()) << reference.logs;
  EXPECT_EQ(test::CountOf(reference.logs, "mask tightened"), 2) << reference.logs;
  auto model = ReadModelFile(base.path() + "/out/global.flm");
  ASSERT_FL_OK(model);
  // Global pruning to llround(0.8 * 198,800) = 159,040 values: exactly the
  // double 0.8, unless kept weights are exactly 0 and tie with the pruned
  // ones (nth_element may then take either; each tie adds 5e-6).
  EXPECT_NEAR(PrunableSparsity(*model), 0.8, 0.001);
  // Every device trained on every mask.
  EXPECT_EQ(reference.csv_participants, (std::vector<int>{3, 3, 3})) << reference.logs;
  ExpectSameAfterCrashes(reference, prune, {"checkpoint:1", "ack:5"}, 131);
}

}  // namespace
}  // namespace fl
