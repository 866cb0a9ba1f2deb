// Liveness: a server whose evaluation outlasts the devices' server timeout
// and a device whose training outlasts both the server's client timeout and
// its own server timeout, in simulated time; and a device that can never
// succeed, as processes.
#include <gtest/gtest.h>

#include <cstdio>
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
  ServerOptions so;
  so.bind = "tcp://127.0.0.1:*";
  so.model = "mnist_2nn";
  so.rounds = kRounds;
  so.min_clients = kClients;
  so.fraction = 1;
  so.train.epochs = 1;
  so.train.lr = 0.05;
  so.round_deadline_seconds = 60;
  so.client_timeout_seconds = 3;
  so.data.path = test::MnistDir();
  so.eval_every = 1;
  so.debug_eval_delay_seconds = 3;
  so.out_dir = dir.path() + "/out";
  so.done_linger_seconds = 2;
  so.insecure = true;
  so.verbose = false;
  so.clock = net.get();
  auto server = Server::Create(so, net, TorchRuntime());
  ASSERT_FL_OK(server);
  const double t0 = net->Now();
  // The server's thread takes part from before anything starts, so the clock
  // cannot move while this thread sets up the devices.
  net->Join();
  // 600 IID samples per device (100 shards), as fl-client --partition iid
  // --num-partitions 100 --partition-index k would hold.
  test::DeviceThreads devices((*server)->endpoint(), 0, kClients, 100, net,
                              [](int k, ClientOptions* co) {
                                if (k == 0) co->debug_train_delay_seconds = 5;
                              });
  Result<ServerSummary> summary = Status::Internal("not run");
  std::thread server_thread([&] {
    summary = (*server)->Run(nullptr, nullptr);
    net->Leave();
  });
  server_thread.join();
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
