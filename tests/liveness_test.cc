// Liveness: a server whose evaluation outlasts the devices' server timeout
// and a device whose training outlasts both the server's client timeout and
// its own server timeout, in simulated time; and a device that can never
// succeed, as processes.
#include <gtest/gtest.h>

#include <cstdio>
#include <functional>
#include <memory>
#include <thread>

#include "server/server.h"
#include "server/torch_runtime.h"
#include "tests/device_threads.h"
#include "tests/federation_util.h"
#include "transport/simulated_network.h"

namespace fl {
namespace {

const std::string kServer = test::BinPath("fl-server");
const std::string kClient = test::BinPath("fl-client");

// Liveness in simulated time (transport/simulated_network.h): the server and
// five devices as threads of this process over an in-memory transport, in the
// server's own time. Evaluation every round takes 3 s, longer than the
// devices' 2 s server timeout; one device trains 5 s, longer than the
// server's 3 s client timeout and its own 2 s server timeout. Every round
// must have every device, and nobody may give up on anybody. The machine's
// load changes nothing: the times are the clock's, not the scheduler's.
TEST(LivenessTest, EveryRoundHasEveryClientDespiteSlowEvaluationAndASlowDevice) {
  test::TempDir dir;
  const int kClients = 5, kRounds = 3;
  auto net = std::make_shared<transport::SimulatedNetwork>();
  ServerOptions so = test::SimulatedServerOptions(net.get(), "mnist_2nn", kRounds, kClients);
  so.train.epochs = 1;
  so.train.lr = 0.05;
  so.round_deadline_seconds = 60;
  so.client_timeout_seconds = 3;
  so.data.path = test::MnistDir();
  so.eval_every = 1;
  so.debug_eval_delay_seconds = 3;
  so.out_dir = dir.path() + "/out";
  so.done_linger_seconds = 2;
  auto server = Server::Create(so, net, TorchRuntime());
  ASSERT_FL_OK(server);
  const double t0 = net->Now();
  // This thread takes part while it sets up, so the clock cannot move before
  // the devices and the server run.
  net->Join();
  // 600 IID samples per device (100 shards), as fl-client --partition iid
  // --num-partitions 100 --partition-index k would hold.
  test::DeviceThreads devices((*server)->endpoint(), 0, kClients, 100, net,
                              [](int k, ClientOptions* co) {
                                if (k == 0) co->debug_train_delay_seconds = 5;
                              });
  test::ServerThread run(server->get(), net.get());
  net->Leave();
  const Result<ServerSummary> summary = run.Join();
  ASSERT_FL_OK(summary);
  ASSERT_FL_OK(devices.Join());
  const double elapsed = net->Now() - t0;

  EXPECT_EQ(summary->rounds_completed, static_cast<uint64_t>(kRounds));
  EXPECT_TRUE(summary->rejected.empty()) << "the server refused a message";
  const auto rows = test::ReadRoundsCsv(dir.path() + "/out/rounds.csv");
  ASSERT_EQ(rows.size(), static_cast<size_t>(kRounds));
  for (int i = 0; i < kRounds; ++i) {
    EXPECT_EQ(rows[i].round, i + 1);
    EXPECT_EQ(rows[i].participants, kClients) << "round " << i + 1;
    EXPECT_FALSE(rows[i].accuracy.empty()) << "round " << i + 1 << " was not evaluated";
    EXPECT_GE(rows[i].eval_seconds, 3.0) << "the evaluation hook did not apply";
  }
  EXPECT_GT(std::stod(rows.back().accuracy), 0.8);
  // Each round waited for the slow device: at least 5 s of the server's time.
  EXPECT_GE(elapsed, kRounds * 5.0);
  for (int k = 0; k < kClients; ++k) {
    // Nobody gave up on the server (a reconnect), nobody was refused,
    // everyone trained every round.
    const ClientStats& st = devices.stats(k);
    EXPECT_EQ(st.rounds_trained, kRounds) << "c" << k;
    EXPECT_EQ(st.updates_accepted, kRounds) << "c" << k;
    EXPECT_EQ(st.updates_rejected, 0) << "c" << k;
    EXPECT_EQ(st.reconnects, 0) << "c" << k;
  }
  std::printf("%d rounds in %.1f s of simulated time; %lld messages delivered, %lld dropped\n",
              kRounds, elapsed, static_cast<long long>(net->delivered()),
              static_cast<long long>(net->dropped()));
}

// Slow and flaky devices in simulated time: --slowdown 20 holds the update
// back until a device 20x slower would have finished, so the round lasts at
// least 19x the training itself; --dropout 0.99 trains but never answers, so
// the round closes at its 3 s deadline without it.
TEST(LivenessTest, ASlowDeviceHoldsTheRoundAndADroppedOneMissesItsDeadline) {
  test::TempDir dir;
  auto net = std::make_shared<transport::SimulatedNetwork>();
  auto federate = [&](const std::string& name, double deadline,
                      const std::function<void(int, ClientOptions*)>& tweak, ClientStats* stats) {
    ServerOptions so = test::SimulatedServerOptions(net.get(), "mnist_2nn", 1, 1);
    so.round_deadline_seconds = deadline;
    so.out_dir = dir.path() + "/" + name;
    so.done_linger_seconds = 0.5;
    auto server = Server::Create(so, net, TorchRuntime());
    EXPECT_FL_OK(server);
    if (!server.ok()) return std::vector<test::RoundRow>();
    net->Join();  // (as above)
    // 6,000 samples (an IID tenth of MNIST), as fl-client --num-partitions 10.
    test::DeviceThreads device((*server)->endpoint(), 0, 1, 10, net, tweak);
    test::ServerThread run(server->get(), net.get());
    net->Leave();
    const Result<ServerSummary> summary = run.Join();
    EXPECT_FL_OK(summary);
    EXPECT_FL_OK(device.Join());
    *stats = device.stats(0);
    return test::ReadRoundsCsv(so.out_dir + "/rounds.csv");
  };
  ClientStats slow, flaky;
  const auto slow_rows = federate(
      "slow", 120, [](int, ClientOptions* co) { co->slowdown = 20; }, &slow);
  ASSERT_EQ(slow_rows.size(), 1u);
  EXPECT_EQ(slow_rows[0].participants, 1);
  EXPECT_EQ(slow.updates_accepted, 1);
  // train_seconds counts the slowdown: 20x the training; the round waited for
  // the other 19x (rounds.csv rounds to 1 ms).
  EXPECT_GT(slow.train_seconds, 0);
  EXPECT_GE(slow_rows[0].seconds, 19.0 / 20.0 * slow.train_seconds - 0.001);

  const auto flaky_rows = federate(
      "flaky", 3, [](int, ClientOptions* co) { co->dropout = 0.99; }, &flaky);
  ASSERT_EQ(flaky_rows.size(), 1u);
  EXPECT_EQ(flaky_rows[0].participants, 0);
  EXPECT_EQ(flaky.dropped_out, 1);
  EXPECT_EQ(flaky.rounds_trained, 1);
  EXPECT_GE(flaky_rows[0].seconds, 3.0);
  EXPECT_LT(flaky_rows[0].seconds, 3.5);
}

// A client that can never succeed ends at once with exit code 3 and says what
// to change, instead of retrying forever.
TEST(LivenessTest, ClientForTheWrongArchitectureExitsWithTheFix) {
  test::TempDir dir;
  test::Process server(kServer,
                       {"--bind", "tcp://127.0.0.1:*", "--model", "mnist_2nn", "--rounds", "1",
                        "--min-clients", "1", "--no-eval", "--deadline", "30", "--insecure"},
                       dir.path() + "/server.log");
  const std::string ep = test::StartedEndpoint(server);
  ASSERT_FALSE(ep.empty()) << server.Log();
  auto args = test::ClientArgs(ep, 0, 100);
  args.insert(args.end(), {"--model", "mnist_cnn"});
  test::Process client(kClient, args, dir.path() + "/client.log");
  EXPECT_EQ(client.Wait(30), 3) << client.Log();
  EXPECT_NE(client.Log().find("wrong_architecture"), std::string::npos) << client.Log();
  EXPECT_NE(client.Log().find("--model mnist_2nn or without --model"), std::string::npos)
      << client.Log();
}

}  // namespace
}  // namespace fl
