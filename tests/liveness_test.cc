// Liveness of a real federation: fl-server and fl-client as separate processes
// over tcp://127.0.0.1, with evaluation every round, a server whose
// evaluation outlasts the clients' server timeout, and a device whose training
// outlasts both the server's client timeout and its own server timeout. Every
// round must have every participant.
#include <gtest/gtest.h>

#include "tests/federation_util.h"

namespace fl {
namespace {

const std::string kServer = test::BinPath("fl-server");
const std::string kClient = test::BinPath("fl-client");

// 600 IID samples per client (100 shards).
std::vector<std::string> ClientArgs(const std::string& ep, int index) {
  return test::ClientArgs(ep, index, 100);
}

TEST(LivenessTest, EveryRoundHasEveryClientDespiteSlowEvaluationAndASlowDevice) {
  test::TempDir dir;
  const int kClients = 5, kRounds = 3;
  // Evaluation takes >= 3 s (hook), longer than the clients' 2 s server
  // timeout; the slow device trains >= 5 s, longer than the server's 3 s
  // client timeout and its own 2 s server timeout.
  test::Process server(kServer,
                       {"--bind",
                        "tcp://127.0.0.1:*",
                        "--model",
                        "mnist_2nn",
                        "--rounds",
                        std::to_string(kRounds),
                        "--min-clients",
                        std::to_string(kClients),
                        "--fraction",
                        "1",
                        "--epochs",
                        "1",
                        "--lr",
                        "0.05",
                        "--deadline",
                        "60",
                        "--client-timeout",
                        "3",
                        "--data",
                        test::MnistDir(),
                        "--eval-every",
                        "1",
                        "--debug-eval-delay",
                        "3",
                        "--out",
                        dir.path() + "/out",
                        "--linger",
                        "2",
                        "--insecure"},
                       dir.path() + "/server.log");
  const std::string ep = test::StartedEndpoint(server);
  ASSERT_FALSE(ep.empty()) << server.Log();
  std::vector<std::unique_ptr<test::Process>> clients;
  for (int k = 0; k < kClients; ++k) {
    auto args = ClientArgs(ep, k);
    if (k == 0) args.insert(args.end(), {"--debug-train-delay", "5"});
    clients.push_back(std::make_unique<test::Process>(
        kClient, args, dir.path() + "/c" + std::to_string(k) + ".log"));
  }
  ASSERT_EQ(server.Wait(240), 0) << server.Log();
  for (auto& c : clients) EXPECT_EQ(c->Wait(30), 0) << c->Log();

  const auto rows = test::ReadRoundsCsv(dir.path() + "/out/rounds.csv");
  ASSERT_EQ(rows.size(), static_cast<size_t>(kRounds)) << server.Log();
  for (int i = 0; i < kRounds; ++i) {
    EXPECT_EQ(rows[i].round, i + 1);
    EXPECT_EQ(rows[i].participants, kClients) << "round " << i + 1 << "\n" << server.Log();
    EXPECT_FALSE(rows[i].accuracy.empty()) << "round " << i + 1 << " was not evaluated";
    EXPECT_GE(rows[i].eval_seconds, 3.0) << "the evaluation hook did not apply";
  }
  EXPECT_GT(std::stod(rows.back().accuracy), 0.8);
  const std::string slog = server.Log();
  EXPECT_EQ(test::CountOf(slog, "could not send TASK"), 0) << slog;
  EXPECT_EQ(test::CountOf(slog, "missed the"), 0) << slog;
  for (int k = 0; k < kClients; ++k) {
    const std::string log = clients[k]->Log();
    // Nobody gave up on the server, nobody was refused, everyone trained
    // every round with the architecture the server sent.
    EXPECT_EQ(test::CountOf(log, "no answer from"), 0) << log;
    EXPECT_EQ(test::CountOf(log, "server rejected"), 0) << log;
    EXPECT_NE(log.find(std::to_string(kRounds) + " rounds trained, " + std::to_string(kRounds) +
                       " updates accepted, 0 rejected, 0 reconnects"),
              std::string::npos)
        << log;
  }
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
  auto args = ClientArgs(ep, 0);
  args.insert(args.end(), {"--model", "mnist_cnn"});
  test::Process client(kClient, args, dir.path() + "/client.log");
  EXPECT_EQ(client.Wait(30), 3) << client.Log();
  EXPECT_NE(client.Log().find("wrong_architecture"), std::string::npos) << client.Log();
  EXPECT_NE(client.Log().find("--model mnist_2nn or without --model"), std::string::npos)
      << client.Log();
}

}  // namespace
}  // namespace fl
