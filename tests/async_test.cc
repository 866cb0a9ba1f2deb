// Buffered asynchronous FL (fl-server --mode async, FedBuff): the task
// bookkeeping (server/async_tasks.h), and a real federation of fl-server and
// fl-client processes with a slow device, a device killed mid-task and the
// server killed and resumed.
#include <gtest/gtest.h>

#include <cmath>
#include <csignal>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "server/async_tasks.h"
#include "tests/federation_util.h"

namespace fl {
namespace {

AsyncTasks::Nonce NonceOf(uint8_t fill) {
  AsyncTasks::Nonce n{};
  n.fill(fill);
  return n;
}

TEST(AsyncTasksTest, StalenessWeightIsOneOverOnePlusTauToTheA) {
  EXPECT_EQ(StalenessWeight(0, 0.5), 1.0);  // returned as is
  // 1 / pow(1 + tau, a): libm's pow is not correctly rounded in general (glibc:
  // within 1 ulp), and the division adds half an ulp: within EXPECT_DOUBLE_EQ's
  // 4 ulps. (These powers are exact numbers; the tolerance allows a libm that
  // does not return them exactly.)
  EXPECT_DOUBLE_EQ(StalenessWeight(3, 0.5), 0.5);
  EXPECT_DOUBLE_EQ(StalenessWeight(1, 1.0), 0.5);
  EXPECT_DOUBLE_EQ(StalenessWeight(9, 2.0), 0.01);
  EXPECT_EQ(StalenessWeight(5, 0.0), 1.0);  // a = 0: no discount, returned as is
}

TEST(AsyncTasksTest, AnUpdateMustNameItsOwnTaskAndBeRecentEnough) {
  AsyncOptions o;
  o.concurrency = 2;
  o.max_staleness = 2;
  AsyncTasks tasks(o);
  EXPECT_EQ(tasks.Wanted(), 2u);
  tasks.Issue("a", /*step=*/4, NonceOf(1), {}, 600, /*now=*/10);
  tasks.Issue("b", /*step=*/5, NonceOf(2), {}, 300, /*now=*/11);
  EXPECT_EQ(tasks.Wanted(), 0u);
  uint32_t tau = 99;
  using M = AsyncTasks::Match;
  EXPECT_EQ(tasks.Check("a", 4, NonceOf(1), /*step=*/6, &tau), M::kOk);
  EXPECT_EQ(tau, 2u);
  EXPECT_EQ(tasks.Check("a", 4, NonceOf(1), /*step=*/7, &tau), M::kTooStale);
  EXPECT_EQ(tasks.Check("a", 4, NonceOf(2), 6, &tau), M::kWrongTask);  // b's nonce
  EXPECT_EQ(tasks.Check("a", 5, NonceOf(1), 6, &tau), M::kWrongTask);  // another step
  EXPECT_EQ(tasks.Check("c", 4, NonceOf(1), 6, &tau), M::kNoTask);
  EXPECT_EQ(tasks.Find("b")->registered, 300);
  EXPECT_NE(tasks.Find("a")->serial, tasks.Find("b")->serial);
  // Answered: a replay of the same update finds no task.
  EXPECT_TRUE(tasks.Close("a"));
  EXPECT_EQ(tasks.Check("a", 4, NonceOf(1), 6, &tau), M::kNoTask);
  EXPECT_EQ(tasks.Wanted(), 1u);
}

TEST(AsyncTasksTest, TasksPastTheDeadlineAreGivenUp) {
  AsyncTasks tasks(AsyncOptions{});
  tasks.Issue("old", 1, NonceOf(1), {}, 1, /*now=*/0);
  tasks.Issue("new", 2, NonceOf(2), {}, 1, /*now=*/50);
  EXPECT_TRUE(tasks.Expire(/*now=*/60, /*deadline=*/60, /*step=*/2).empty());
  const auto gone = tasks.Expire(/*now=*/61, /*deadline=*/60, /*step=*/2);
  ASSERT_EQ(gone.size(), 1u);
  EXPECT_EQ(gone[0].id, "old");
  EXPECT_FALSE(gone[0].too_stale);
  EXPECT_EQ(gone[0].task.nonce, NonceOf(1));
  EXPECT_FALSE(tasks.Has("old"));
  EXPECT_TRUE(tasks.Has("new"));
  // Sent later than it was handed out: its deadline runs from the send.
  tasks.Sent("new", /*now=*/100);
  EXPECT_TRUE(tasks.Expire(/*now=*/150, /*deadline=*/60, /*step=*/2).empty());
}

TEST(AsyncTasksTest, TasksTooStaleToCountAreGivenUp) {
  AsyncOptions o;
  o.max_staleness = 2;
  AsyncTasks tasks(o);
  tasks.Issue("a", /*step=*/3, NonceOf(1), {}, 1, /*now=*/0);
  tasks.Issue("b", /*step=*/4, NonceOf(2), {}, 1, /*now=*/0);
  EXPECT_TRUE(tasks.Expire(/*now=*/1, /*deadline=*/60, /*step=*/5).empty());
  const auto gone = tasks.Expire(/*now=*/1, /*deadline=*/60, /*step=*/6);
  ASSERT_EQ(gone.size(), 1u);
  EXPECT_EQ(gone[0].id, "a");
  EXPECT_TRUE(gone[0].too_stale);
  EXPECT_TRUE(tasks.Has("b"));
}

// rounds.csv of an asynchronous run: round, participants, and the columns
// after the seventh (tasks, mean_staleness, max_staleness, expired).
struct StepRow {
  int round{0}, participants{0}, tasks{0};
  double mean_staleness{0};
  int max_staleness{0}, expired{0};
};
std::vector<StepRow> ReadSteps(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  EXPECT_NE(line.find(",tasks,mean_staleness,max_staleness,expired"), std::string::npos) << line;
  std::vector<StepRow> rows;
  while (std::getline(in, line)) {
    std::vector<std::string> f;
    std::stringstream ss(line);
    std::string cell;
    while (std::getline(ss, cell, ',')) f.push_back(cell);
    if (f.size() < 13) continue;
    rows.push_back({std::stoi(f[0]), std::stoi(f[1]), std::stoi(f[9]), std::stod(f[10]),
                    std::stoi(f[11]), std::stoi(f[12])});
  }
  return rows;
}

// Four fl-client processes c0..c3 on 1/100 of MNIST each, against `ep`; c`slow`
// trains `slowdown` times slower (--slowdown). Logs in `dir`/cK.log.
std::vector<std::unique_ptr<test::Process>> StartDevices(const std::string& ep, int slow,
                                                         const std::string& slowdown,
                                                         const std::string& dir) {
  std::vector<std::unique_ptr<test::Process>> clients;
  for (int k = 0; k < 4; ++k) {
    std::vector<std::string> args = test::ClientArgs(ep, k, 100);
    if (k == slow) args.insert(args.end(), {"--slowdown", slowdown});
    clients.push_back(std::make_unique<test::Process>(test::BinPath("fl-client"), args,
                                                      dir + "/c" + std::to_string(k) + ".log"));
  }
  return clients;
}

// Four fl-client processes, one of them 3x slower (--slowdown) and one
// killed while it trains; the server, evaluating every step, kills itself
// after its 5th acknowledged update (in the middle of step 3's buffer) and is
// started again with --resume on the same port while the devices keep
// running; c3 is killed in a task of the restarted server. Every step has its two updates, the
// acknowledged update survives the crash, stale updates are taken (weighted), and the dead device's
// task is given up at the deadline.
TEST(AsyncTest, SlowDevicesAKilledDeviceAndAServerRestart) {
  test::TempDir dir;
  const std::string out = dir.path() + "/out";
  const std::string bind = "tcp://127.0.0.1:" + std::to_string(20000 + (getpid() * 7 + 17) % 12000);
  auto server_args = [&](bool resume) {
    std::vector<std::string> a = {"--bind",
                                  bind,
                                  "--model",
                                  "mnist_2nn",
                                  "--mode",
                                  "async",
                                  "--concurrency",
                                  "3",
                                  "--buffer",
                                  "2",
                                  "--rounds",
                                  "60",
                                  "--min-clients",
                                  "3",
                                  "--lr",
                                  "0.05",
                                  "--deadline",
                                  "3",
                                  "--client-timeout",
                                  "3",
                                  "--data",
                                  test::MnistDir(),
                                  "--out",
                                  out,
                                  "--linger",
                                  "1",
                                  "--seed",
                                  "7",
                                  "--insecure"};
    if (resume) {
      a.push_back("--resume");
    } else {
      a.insert(a.end(), {"--debug-crash-at", "ack:5"});
    }
    return a;
  };
  auto server = std::make_unique<test::Process>(test::BinPath("fl-server"), server_args(false),
                                                dir.path() + "/server0.log");
  const std::string ep = test::StartedEndpoint(*server);
  ASSERT_FALSE(ep.empty()) << server->Log();
  auto clients = StartDevices(ep, /*slow=*/2, "3", dir.path());
  EXPECT_EQ(server->Wait(120), 128 + SIGKILL) << server->Log();
  const std::string first = server->Log();
  const int trained_before = test::CountOf(clients[3]->Log(), "training");
  server = std::make_unique<test::Process>(test::BinPath("fl-server"), server_args(true),
                                           dir.path() + "/server1.log");
  // c3 dies in the middle of a task of the restarted server.
  for (int i = 0; i < 3000 && test::CountOf(clients[3]->Log(), "training") <= trained_before; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  clients[3]->Signal(SIGKILL);
  ASSERT_EQ(server->Wait(180), 0) << server->Log();
  const std::string second = server->Log();
  for (int k = 0; k < 3; ++k) EXPECT_EQ(clients[k]->Wait(30), 0) << clients[k]->Log();

  // The step open at the crash was reopened with its acknowledged update.
  EXPECT_NE(second.find("step 3: reopened from"), std::string::npos) << second;
  // (The 5th ACK's update, and the 6th when both reached the log in one sync.)
  EXPECT_TRUE(second.find("1 acknowledged update(s) kept") != std::string::npos ||
              second.find("2 acknowledged update(s) kept") != std::string::npos)
      << second;
  const auto rows = ReadSteps(out + "/rounds.csv");
  ASSERT_EQ(rows.size(), 60u) << first << second;
  int stale = 0, expired = 0;
  for (size_t i = 0; i < rows.size(); ++i) {
    EXPECT_EQ(rows[i].round, static_cast<int>(i) + 1);
    EXPECT_EQ(rows[i].participants, 2) << "step " << rows[i].round;
    EXPECT_LE(rows[i].max_staleness, 10);
    if (rows[i].max_staleness > 0) stale++;
    expired += rows[i].expired;
  }
  // With 3 tasks out and 2 updates a step, the third is always a step behind.
  EXPECT_GT(stale, 0);
  // c3's task: given up at the 3 s deadline, or before it once it was too
  // stale to count, logged.
  EXPECT_GE(expired, 1) << first << second;
  EXPECT_TRUE(second.find("c3 did not answer within 3 s") != std::string::npos ||
              second.find("c3 is more than --max-staleness 10 steps behind") != std::string::npos)
      << first << second;
  // The slow device took part.
  EXPECT_NE(clients[2]->Log().find("sent then"), std::string::npos) << clients[2]->Log();
  EXPECT_EQ(test::CountOf(clients[2]->Log(), "updates accepted"), 1);
  EXPECT_EQ(clients[2]->Log().find(" 0 updates accepted"), std::string::npos) << clients[2]->Log();
}

// A task whose update could no longer count (more than --max-staleness steps
// old) is given up at once, not at the deadline: its device is told, and its
// slot goes to a device that can still answer in time.
TEST(AsyncTest, ATaskTooStaleToCountIsGivenUpAtOnce) {
  test::TempDir dir;
  const std::string bind = "tcp://127.0.0.1:*";
  test::Process server(test::BinPath("fl-server"),
                       {"--bind",
                        bind,
                        "--model",
                        "mnist_2nn",
                        "--mode",
                        "async",
                        "--concurrency",
                        "4",
                        "--buffer",
                        "1",
                        "--max-staleness",
                        "1",
                        "--rounds",
                        "12",
                        "--min-clients",
                        "4",
                        "--lr",
                        "0.05",
                        "--deadline",
                        "60",
                        "--no-eval",
                        "--linger",
                        "1",
                        "--insecure"},
                       dir.path() + "/server.log");
  const std::string ep = test::StartedEndpoint(server);
  ASSERT_FALSE(ep.empty()) << server.Log();
  // c3 takes far longer than two steps of the others.
  auto clients = StartDevices(ep, /*slow=*/3, "100", dir.path());
  ASSERT_EQ(server.Wait(120), 0) << server.Log();
  EXPECT_NE(server.Log().find("c3 is more than --max-staleness 1 steps behind"), std::string::npos)
      << server.Log();
  EXPECT_EQ(server.Log().find("did not answer within"), std::string::npos) << server.Log();
  for (auto& c : clients) c->Wait(30);
  // Told: its held-back update was never sent.
  EXPECT_NE(clients[3]->Log().find("the update is not sent"), std::string::npos)
      << clients[3]->Log();
}

}  // namespace
}  // namespace fl
