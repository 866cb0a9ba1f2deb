// fl-server and fl-client as separate processes over tcp://127.0.0.1.
#include <gtest/gtest.h>
#include <stb/stb_image_write.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common/file_util.h"
#include "crypto/identity.h"
#include "crypto/model_code.h"
#include "crypto/model_file.h"
#include "server/checkpoint.h"
#include "server/privacy.h"
#include "tests/federation_util.h"

namespace fl {
namespace {

const std::string kServer = test::BinPath("fl-server");
const std::string kClient = test::BinPath("fl-client");
const std::string kKeygen = test::BinPath("fl-keygen");
const std::string kSim = test::BinPath("fl-sim");

// A port per test from the gtest seed and pid, to keep parallel ctest runs apart.
std::string Endpoint(int offset) {
  // Below the kernel's ephemeral range (32768 and up), where ports picked for
  // "127.0.0.1:*" binds and outgoing connections could take it first.
  const int port = 20000 + (getpid() * 7 + offset) % 12000;
  return "tcp://127.0.0.1:" + std::to_string(port);
}

// Rows of rounds.csv with the accuracy as a number (NaN when not evaluated).
struct Row {
  int round, participants;
  double accuracy;
  double seconds;
};

std::vector<Row> ReadRounds(const std::string& path) {
  std::vector<Row> rows;
  for (const auto& r : test::ReadRoundsCsv(path)) {
    rows.push_back({r.round, r.participants,
                    r.accuracy.empty() ? std::nan("") : std::stod(r.accuracy), r.seconds});
  }
  return rows;
}

std::vector<std::string> ServerArgs(const std::string& endpoint, const std::string& out, int rounds,
                                    int min_clients, double deadline) {
  return {"--bind",
          endpoint,
          "--model",
          "mnist_2nn",
          "--rounds",
          std::to_string(rounds),
          "--min-clients",
          std::to_string(min_clients),
          "--fraction",
          "1",
          "--epochs",
          "1",
          "--lr",
          "0.05",
          "--deadline",
          std::to_string(deadline),
          "--client-timeout",
          "3",
          "--data",
          test::MnistDir(),
          "--out",
          out,
          "--linger",
          "0.5",
          "--insecure"};
}

// The shared client flags, pinned to the 2NN these tests' servers train.
std::vector<std::string> ClientArgs(const std::string& endpoint, int index, int partitions) {
  auto args = test::ClientArgs(endpoint, index, partitions);
  args.insert(args.end(), {"--model", "mnist_2nn"});
  return args;
}

// Drops "--insecure" from an argument list (for the encrypted deployment).
std::vector<std::string> Secure(std::vector<std::string> args) {
  args.erase(std::remove(args.begin(), args.end(), "--insecure"), args.end());
  return args;
}

TEST(IntegrationTest, ThreeClientsTwoRoundsAccuracyRises) {
  test::TempDir dir;
  const std::string ep = Endpoint(1);
  test::Process server(kServer, ServerArgs(ep, dir.path() + "/out", 2, 3, 60),
                       dir.path() + "/server.log");
  std::vector<std::unique_ptr<test::Process>> clients;
  for (int k = 0; k < 3; ++k) {
    // 60 partitions: 1,000 samples each, a small MNIST subset.
    clients.push_back(std::make_unique<test::Process>(
        kClient, ClientArgs(ep, k, 60), dir.path() + "/c" + std::to_string(k) + ".log"));
  }
  ASSERT_EQ(server.Wait(120), 0) << server.Log();
  for (auto& c : clients) EXPECT_EQ(c->Wait(30), 0) << c->Log();
  auto rows = ReadRounds(dir.path() + "/out/rounds.csv");
  ASSERT_EQ(rows.size(), 2u) << server.Log();
  EXPECT_EQ(rows[0].participants, 3);
  EXPECT_EQ(rows[1].participants, 3);
  EXPECT_GT(rows[0].accuracy, 0.5);  // chance is 0.1
  EXPECT_GT(rows[1].accuracy, rows[0].accuracy);
  EXPECT_NE(clients[0]->Log().find("2 rounds trained, 2 updates accepted"), std::string::npos)
      << clients[0]->Log();
}

// The codec room as users run it: --codec sign on the server, and clients
// that were told nothing: the TASK names the codec, each client sends 1-bit
// signs with error feedback (the 2NN's 199,210 values in 24 + 4 x 779 scales +
// 24,902 bytes of signs, 28,042 bytes against 796,864 at 32 bits), every
// update is accepted, and the model learns.
TEST(IntegrationTest, SignCodecAsProcesses) {
  test::TempDir dir;
  auto args = ServerArgs("tcp://127.0.0.1:*", dir.path() + "/out", 3, 3, 60);
  args.insert(args.end(), {"--codec", "sign"});
  test::Process server(kServer, args, dir.path() + "/server.log");
  const std::string ep = test::StartedEndpoint(server);
  ASSERT_FALSE(ep.empty()) << server.Log();
  std::vector<std::unique_ptr<test::Process>> clients;
  for (int k = 0; k < 3; ++k) {
    clients.push_back(std::make_unique<test::Process>(
        kClient, ClientArgs(ep, k, 20), dir.path() + "/c" + std::to_string(k) + ".log"));
  }
  ASSERT_EQ(server.Wait(180), 0) << server.Log();
  for (auto& c : clients) EXPECT_EQ(c->Wait(30), 0) << c->Log();
  auto rows = ReadRounds(dir.path() + "/out/rounds.csv");
  ASSERT_EQ(rows.size(), 3u) << server.Log();
  for (const auto& r : rows) EXPECT_EQ(r.participants, 3) << server.Log();
  EXPECT_GT(rows[0].accuracy, 0.3);  // chance is 0.1
  EXPECT_GT(rows[2].accuracy, rows[0].accuracy);
  const std::string log = clients[0]->Log();
  const std::string marker = "sending update (";
  const size_t at = log.find(marker);
  ASSERT_NE(at, std::string::npos) << log;
  const long bytes = std::stol(log.substr(at + marker.size()));
  EXPECT_GE(bytes, 28042);
  EXPECT_LT(bytes, 28042 + 100) << log;
  EXPECT_NE(log.find("3 rounds trained, 3 updates accepted"), std::string::npos) << log;
}

TEST(IntegrationTest, KilledClientDoesNotBlockTheRound) {
  test::TempDir dir;
  const std::string ep = Endpoint(2);
  const double deadline = 6;
  test::Process server(kServer, ServerArgs(ep, dir.path() + "/out", 2, 3, deadline),
                       dir.path() + "/server.log");
  std::vector<std::unique_ptr<test::Process>> clients;
  // c0, c1 hold 1,000 samples; c2 holds 30,000, so it is still training when killed.
  for (int k = 0; k < 2; ++k) {
    clients.push_back(std::make_unique<test::Process>(
        kClient, ClientArgs(ep, k, 60), dir.path() + "/c" + std::to_string(k) + ".log"));
  }
  auto big = ClientArgs(ep, 1, 2);
  big[3] = "c2";
  test::Process victim(kClient, big, dir.path() + "/c2.log");
  ASSERT_TRUE(victim.WaitForLog("round 1: training", 60)) << server.Log() << victim.Log();
  victim.Signal(SIGKILL);
  EXPECT_EQ(victim.Wait(5), 128 + SIGKILL);
  // The server needs 3 active clients to start round 2: a new device joins.
  clients.push_back(
      std::make_unique<test::Process>(kClient, ClientArgs(ep, 3, 60), dir.path() + "/c3.log"));

  ASSERT_EQ(server.Wait(120), 0) << server.Log();
  for (auto& c : clients) EXPECT_EQ(c->Wait(30), 0) << c->Log();
  auto rows = ReadRounds(dir.path() + "/out/rounds.csv");
  ASSERT_EQ(rows.size(), 2u) << server.Log();
  // Round 1 closed at its deadline with the two survivors; round 2 went on
  // without c2 (not selected again: it missed a deadline and went silent).
  EXPECT_EQ(rows[0].participants, 2);
  EXPECT_GE(rows[0].seconds, deadline - 0.5);
  EXPECT_EQ(rows[1].participants, 3);
  EXPECT_NE(server.Log().find("c2 missed the"), std::string::npos) << server.Log();
}

TEST(IntegrationTest, ServerRestartWithResume) {
  test::TempDir dir;
  const std::string ep = Endpoint(3);
  const std::string out = dir.path() + "/out";
  std::vector<std::unique_ptr<test::Process>> clients;
  {
    test::Process server(kServer, ServerArgs(ep, out, 4, 2, 60), dir.path() + "/server1.log");
    for (int k = 0; k < 2; ++k) {
      clients.push_back(std::make_unique<test::Process>(
          kClient, ClientArgs(ep, k, 60), dir.path() + "/c" + std::to_string(k) + ".log"));
    }
    ASSERT_TRUE(server.WaitForLog("round 2: 2/2 updates", 60)) << server.Log();
    server.Signal(SIGTERM);
    ASSERT_EQ(server.Wait(30), 0) << server.Log();
  }
  auto saved = ReadCheckpoint(out + "/checkpoint.fl");
  ASSERT_FL_OK(saved);
  const uint64_t saved_round = saved->round;
  EXPECT_GE(saved_round, 2u);
  // Clients stay up and reconnect to the restarted server.
  for (auto& c : clients) EXPECT_TRUE(c->running());
  auto args = ServerArgs(ep, out, 4, 2, 60);
  args.push_back("--resume");
  test::Process server2(kServer, args, dir.path() + "/server2.log");
  ASSERT_EQ(server2.Wait(120), 0) << server2.Log();
  EXPECT_NE(server2.Log().find("resuming after round " + std::to_string(saved_round)),
            std::string::npos)
      << server2.Log();
  for (auto& c : clients) EXPECT_EQ(c->Wait(30), 0) << c->Log();
  auto rows = ReadRounds(out + "/rounds.csv");
  ASSERT_EQ(rows.size(), 4u);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(rows[i].round, i + 1);
  EXPECT_GE(rows[3].accuracy, rows[0].accuracy);
  auto final_ckpt = ReadCheckpoint(out + "/checkpoint.fl");
  ASSERT_FL_OK(final_ckpt);
  EXPECT_EQ(final_ckpt->round, 4u);
}

// Identities from fl-keygen in `keys` for `names`, and the public keys of
// `enroll` copied into `enrolled`.
void MakeIdentities(const std::string& dir, const std::string& keys, const std::string& enrolled,
                    const std::vector<std::string>& names, const std::vector<std::string>& enroll) {
  for (const auto& name : names) {
    test::Process kg(kKeygen, {"--out", keys, "--name", name}, dir + "/kg.log");
    ASSERT_EQ(kg.Wait(30), 0) << kg.Log();
  }
  ASSERT_FL_OK(CreateDirectories(enrolled));
  for (const auto& name : enroll) {
    auto pub = ReadFile(keys + "/" + name + ".pub");
    ASSERT_FL_OK(pub);
    ASSERT_FL_OK(WriteFileAtomic(enrolled + "/" + name + ".pub", *pub));
  }
}

TEST(IntegrationTest, EnrolledSignedFederation) {
  test::TempDir dir;
  const std::string keys = dir.path() + "/keys", enrolled = dir.path() + "/enrolled";
  ASSERT_NO_FATAL_FAILURE(
      MakeIdentities(dir.path(), keys, enrolled, {"server", "c0", "c1", "rogue"}, {"c0", "c1"}));
  const std::string ep = Endpoint(4);
  // Without --insecure, a server or client lacking keys refuses to start and says why.
  {
    test::Process bare(kServer, Secure(ServerArgs(ep, dir.path() + "/bare", 2, 2, 30)),
                       dir.path() + "/bare.log");
    EXPECT_NE(bare.Wait(30), 0);
    EXPECT_NE(bare.Log().find("--insecure"), std::string::npos) << bare.Log();
    test::Process bare_client(kClient, Secure(ClientArgs(ep, 0, 60)),
                              dir.path() + "/bare_client.log");
    EXPECT_EQ(bare_client.Wait(30), 2);
    EXPECT_NE(bare_client.Log().find("--server-key"), std::string::npos) << bare_client.Log();
  }
  auto args = Secure(ServerArgs(ep, dir.path() + "/out", 2, 2, 30));
  args.insert(args.end(), {"--key", keys + "/server.key", "--clients", enrolled});
  test::Process server(kServer, args, dir.path() + "/server.log");
  auto client_args = [&](const std::string& name, const std::string& server_pub) {
    auto a = Secure(ClientArgs(ep, 0, 60));
    a.insert(a.end(), {"--key", keys + "/" + name + ".key", "--server-key", server_pub});
    return a;
  };
  test::Process c0(kClient, client_args("c0", keys + "/server.pub"), dir.path() + "/c0.log");
  test::Process c1(kClient, client_args("c1", keys + "/server.pub"), dir.path() + "/c1.log");
  // Not enrolled: its CURVE handshake is refused; it never reaches the server.
  test::Process rogue(kClient, client_args("rogue", keys + "/server.pub"),
                      dir.path() + "/rogue.log");
  // Pins the wrong server key: the handshake fails, nothing is exchanged.
  test::Process pinned(kClient, client_args("c1", keys + "/rogue.pub"), dir.path() + "/pinned.log");
  ASSERT_EQ(server.Wait(120), 0) << server.Log();
  EXPECT_EQ(c0.Wait(30), 0) << c0.Log();
  EXPECT_EQ(c1.Wait(30), 0) << c1.Log();
  auto rows = ReadRounds(dir.path() + "/out/rounds.csv");
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0].participants, 2);
  EXPECT_EQ(rows[1].participants, 2);
  EXPECT_NE(server.Log().find("transport: CURVE"), std::string::npos) << server.Log();
  EXPECT_NE(server.Log().find("refused a CURVE handshake"), std::string::npos) << server.Log();
  EXPECT_NE(server.Log().find("transport_denied="), std::string::npos) << server.Log();
  EXPECT_EQ(server.Log().find("INSECURE"), std::string::npos) << server.Log();
  EXPECT_NE(c0.Log().find(": training E="), std::string::npos) << c0.Log();
  EXPECT_EQ(rogue.Log().find(": training E="), std::string::npos) << rogue.Log();
  EXPECT_NE(rogue.Log().find("refused this device's CURVE key"), std::string::npos) << rogue.Log();
  EXPECT_EQ(pinned.Log().find(": training E="), std::string::npos) << pinned.Log();
  EXPECT_NE(pinned.Log().find("handshake failed"), std::string::npos) << pinned.Log();
  // The model that leaves the server is signed by it.
  auto server_id = LoadPublicIdentity(keys + "/server.pub");
  auto rogue_id = LoadPublicIdentity(keys + "/rogue.pub");
  ASSERT_FL_OK(server_id);
  ASSERT_FL_OK(rogue_id);
  EXPECT_FL_OK(ReadModelFile(dir.path() + "/out/global.flm", &server_id->signing));
  EXPECT_TRUE(ReadModelFile(dir.path() + "/out/global.flm", &rogue_id->signing)
                  .status()
                  .IsUnauthenticated());
}

// The transfer windows over CURVE, as separate processes: with a window of one
// byte, each TASK goes out only once the one before it was received (and each
// update only once the one before it arrived: whether uploads collide depends
// on timing here; ServerTest.UploadAdmissionGrantsInTurnAndOlderClientsStillUpload
// makes them); every round still has every participant.
TEST(IntegrationTest, TransferWindowsPaceTasksAndUploadsUnderCurve) {
  test::TempDir dir;
  const std::string keys = dir.path() + "/keys", enrolled = dir.path() + "/enrolled";
  const std::vector<std::string> devices = {"c0", "c1", "c2", "c3"};
  std::vector<std::string> names = devices;
  names.push_back("server");
  ASSERT_NO_FATAL_FAILURE(MakeIdentities(dir.path(), keys, enrolled, names, devices));
  const std::string ep = Endpoint(5);
  auto args = Secure(ServerArgs(ep, dir.path() + "/out", 2, 4, 60));
  args.insert(args.end(), {"--key", keys + "/server.key", "--clients", enrolled,
                           "--transfer-window-mb", "0.000001"});
  test::Process server(kServer, args, dir.path() + "/server.log");
  std::vector<std::unique_ptr<test::Process>> clients;
  for (size_t k = 0; k < devices.size(); ++k) {
    auto a = Secure(ClientArgs(ep, static_cast<int>(k), 60));
    a.insert(a.end(),
             {"--key", keys + "/" + devices[k] + ".key", "--server-key", keys + "/server.pub"});
    clients.push_back(
        std::make_unique<test::Process>(kClient, a, dir.path() + "/" + devices[k] + ".log"));
  }
  ASSERT_EQ(server.Wait(180), 0) << server.Log();
  for (auto& c : clients) EXPECT_EQ(c->Wait(30), 0) << c->Log();
  auto rows = ReadRounds(dir.path() + "/out/rounds.csv");
  ASSERT_EQ(rows.size(), 2u);
  for (const auto& r : rows) EXPECT_EQ(r.participants, 4) << "round " << r.round;
  // Three of four TASKs wait each round (the first is sent at once).
  EXPECT_EQ(test::CountOf(server.Log(), "; 3 TASK(s) and "), 2) << server.Log();
}

// fl-sim as deployed: an identity per virtual client, CURVE, signatures; with
// more clients than ZeroMQ's default socket limit (each CURVE client also
// holds a handshake monitor). Two runs with the same seed give the same model.
TEST(IntegrationTest, SecureSimulationWithManyClientsIsReproducible) {
  test::TempDir dir;
  auto run = [&](const std::string& out) {
    test::Process sim(
        kSim,
        {"--model", "mnist_2nn", "--clients", "600", "--fraction", "0.01", "--rounds", "2",
         "--epochs", "1", "--data", test::SmallMnistDir(), "--secure", "--out", out, "--quiet"},
        dir.path() + "/sim.log");
    EXPECT_EQ(sim.Wait(120), 0) << sim.Log();
    return sim.Log();
  };
  const std::string log = run(dir.path() + "/a");
  EXPECT_NE(log.find("final test accuracy"), std::string::npos) << log;
  EXPECT_EQ(log.find("INSECURE"), std::string::npos) << log;
  run(dir.path() + "/b");
  auto summary = ReadFile(dir.path() + "/a/summary.json");
  ASSERT_FL_OK(summary);
  EXPECT_NE(summary->find("\"secure\": true"), std::string::npos);
  EXPECT_NE(summary->find("\"rounds_completed\": 2"), std::string::npos) << *summary;
  auto a = ReadFile(dir.path() + "/a/global.flm");
  auto b = ReadFile(dir.path() + "/b/global.flm");
  ASSERT_FL_OK(a);
  ASSERT_FL_OK(b);
  EXPECT_TRUE(*a == *b) << "same seed, different final model";
  auto server = LoadPublicIdentity(dir.path() + "/a/keys/server.pub");
  ASSERT_FL_OK(server);
  EXPECT_FL_OK(ReadModelFile(dir.path() + "/a/global.flm", &server->signing));
}

// mpirun -np 3 fl-sim spreads the virtual clients over 3 processes (rank 0
// also runs the server; the others reach it over ZeroMQ, CURVE and signed
// messages as deployed devices do) and ends with the model, byte for byte,
// of the same simulation in one process, both with --reproducible. Skipped
// where Open MPI's mpirun is not installed (scripts/setup.sh installs it).
TEST(IntegrationTest, MpiRunEndsWithTheSingleProcessModel) {
  std::string mpirun;
  if (FILE* p = popen("command -v mpirun", "r")) {
    char path[512] = {};
    if (std::fgets(path, sizeof(path), p)) mpirun = path;
    pclose(p);
  }
  while (!mpirun.empty() && std::isspace(static_cast<unsigned char>(mpirun.back()))) {
    mpirun.pop_back();
  }
  if (mpirun.empty()) GTEST_SKIP() << "no mpirun";
  // Open MPI refuses root unless told (CI runs as root).
  setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);
  setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
  test::TempDir dir;
  test::Process help(kSim, {"--help"}, dir.path() + "/help.log");
  ASSERT_EQ(help.Wait(30), 0);
  if (help.Log().find("built without MPI") != std::string::npos) {
    GTEST_SKIP() << "fl-sim was built without MPI";
  }
  test::Process version(mpirun, {"--version"}, dir.path() + "/version.log");
  ASSERT_EQ(version.Wait(30), 0);
  if (version.Log().find("Open MPI") == std::string::npos) {
    GTEST_SKIP() << "not Open MPI's mpirun (the test uses --oversubscribe)";
  }
  std::vector<std::string> args = {
      "--model", "mnist_2nn", "--clients", "30",     "--fraction",          "0.5",     "--rounds",
      "2",       "--epochs",  "1",         "--data", test::SmallMnistDir(), "--secure"};
  // --reproducible too, where the CPU takes it (AVX2 and FMA): each rank
  // runs itself again with the pinned kernels before MPI starts.
#if defined(__x86_64__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    args.push_back("--reproducible");
  }
#endif
  auto one = args;
  one.insert(one.end(), {"--out", dir.path() + "/one"});
  test::Process single(kSim, one, dir.path() + "/one.log");
  ASSERT_EQ(single.Wait(180), 0) << single.Log();
  std::vector<std::string> three = {"--oversubscribe", "-np", "3", kSim};
  three.insert(three.end(), args.begin(), args.end());
  three.insert(three.end(), {"--out", dir.path() + "/three"});
  test::Process mpi(mpirun, three, dir.path() + "/three.log");
  ASSERT_EQ(mpi.Wait(180), 0) << mpi.Log();
  EXPECT_NE(mpi.Log().find("MPI: 3 ranks"), std::string::npos) << mpi.Log();
  const auto rows = test::ReadRoundsCsv(dir.path() + "/three/rounds.csv");
  ASSERT_EQ(rows.size(), 2u) << mpi.Log();
  EXPECT_EQ(rows[1].participants, 15);
  auto a = ReadFile(dir.path() + "/one/global.flm");
  auto b = ReadFile(dir.path() + "/three/global.flm");
  ASSERT_FL_OK(a);
  ASSERT_FL_OK(b);
  EXPECT_TRUE(*a == *b) << "3 ranks ended with another model than 1 process";
}

// Runs fl-sim on 10 virtual clients of mnist_2nn for 3 rounds with `extra`
// flags into DIR/NAME; returns its summary.json ("" when it failed).
std::string RunSmallSim(const std::string& dir, const std::string& name,
                        const std::vector<std::string>& extra) {
  std::vector<std::string> args = {
      "--model", "mnist_2nn",      "--clients", "10",     "--rounds",
      "3",       "--epochs",       "1",         "--data", test::SmallMnistDir(),
      "--out",   dir + "/" + name, "--quiet"};
  args.insert(args.end(), extra.begin(), extra.end());
  test::Process sim(kSim, args, dir + "/" + name + ".log");
  EXPECT_EQ(sim.Wait(180), 0) << sim.Log();
  auto summary = ReadFile(dir + "/" + name + "/summary.json");
  return summary.ok() ? *summary : std::string();
}

// The final test accuracy a summary.json reports (-1 when it has none).
double FinalAccuracy(const std::string& summary) {
  const auto j = nlohmann::json::parse(summary, nullptr, /*allow_exceptions=*/false);
  return j.is_object() && j["final_accuracy"].is_number() ? j["final_accuracy"].get<double>()
                                                          : -1.0;
}

// fl-sim with attackers and a robust rule, and with central DP, as a user
// runs them: 20% of 10 virtual clients flip and scale their deltas by 10 each
// round. Plain FedAvg is wrecked; the coordinate-wise median is not. A private
// run reports the accountant's epsilon in summary.json and rounds.csv, and
// through two relays the same epsilon.
TEST(IntegrationTest, SimulatedAttackersRobustRulesAndPrivacy) {
  test::TempDir dir;
  auto run = [&](const std::string& name, const std::vector<std::string>& extra) {
    return RunSmallSim(dir.path(), name, extra);
  };
  const auto accuracy = FinalAccuracy;
  const std::vector<std::string> attack = {
      "--fraction", "1", "--adversary-fraction", "0.2", "--adversary-kind", "sign_flip"};
  std::vector<std::string> median = attack;
  median.insert(median.end(), {"--strategy", "median"});
  const std::string attacked = run("fedavg", attack);
  const std::string defended = run("median", median);
  EXPECT_NE(defended.find("\"strategy\": \"median\""), std::string::npos) << defended;
  const auto adversaries = nlohmann::json::parse(defended)["adversaries"];
  EXPECT_EQ(adversaries["count"], 2) << defended;
  EXPECT_EQ(adversaries["kind"], "sign_flip") << defended;
  EXPECT_LT(accuracy(attacked), 0.5) << attacked;
  EXPECT_GT(accuracy(defended), 0.85) << defended;

  const std::string priv = run("private", {"--dp-noise-multiplier", "0.3", "--fraction", "0.5"});
  // Poisson-sampled at q = 0.5 with z = 0.3 over 3 rounds (no adaptive clip).
  RdpAccountant accountant;
  accountant.Compose(0.5, 0.3, 3);
  const size_t at = priv.find("\"epsilon\": ");
  ASSERT_NE(at, std::string::npos) << priv;
  // summary.json holds the double (17 digits); the server composes round by
  // round, the reference all at once (a few ulps apart).
  EXPECT_NEAR(std::atof(priv.c_str() + at + 11), accountant.Epsilon(1e-5),
              1e-9 * accountant.Epsilon(1e-5));
  const auto rows = test::ReadRoundsCsv(dir.path() + "/private/rounds.csv");
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_FALSE(rows[2].epsilon.empty());

  // The same privacy through two relays: the relays sample at the server's
  // q and clip, the server noises the two partials' sum; the same epsilon
  // after every round, at most one partial per relay (a relay none of whose
  // five clients was sampled sends none).
  const std::string relayed =
      run("private_relays", {"--dp-noise-multiplier", "0.3", "--fraction", "0.5", "--relays", "2"});
  EXPECT_EQ(nlohmann::json::parse(relayed)["topology"]["relays"], 2) << relayed;
  const auto relayed_rows = test::ReadRoundsCsv(dir.path() + "/private_relays/rounds.csv");
  ASSERT_EQ(relayed_rows.size(), 3u);
  for (size_t r = 0; r < 3; ++r) {
    EXPECT_EQ(relayed_rows[r].epsilon, rows[r].epsilon);
    EXPECT_GE(relayed_rows[r].participants, 1);
    EXPECT_LE(relayed_rows[r].participants, 2);
  }
}

// fl-sim with --relays: two relay aggregators, five virtual clients
// each, two of the ten poisoning (sign flip x 10). Relays that average hand
// the poison up and the model is wrecked; relays that take the median of
// their clients' deltas hand up clean partials (robust rules run where the
// individual updates are, docs/relays.md). The server sees two partials a
// round. The median run is secure: relays have identities of their own.
TEST(IntegrationTest, SimulatedRelaysApplyRobustRulesToTheirClients) {
  test::TempDir dir;
  auto run = [&](const std::string& name, const std::string& relay_rule, bool secure) {
    std::vector<std::string> extra = {
        "--fraction", "1", "--adversary-fraction", "0.2",     "--adversary-kind", "sign_flip",
        "--relays",   "2", "--relay-strategy",     relay_rule};
    if (secure) extra.push_back("--secure");
    return RunSmallSim(dir.path(), name, extra);
  };
  const auto accuracy = FinalAccuracy;
  const std::string attacked = run("fedavg", "fedavg", false);
  // As deployed: each relay with its own identity, enrolled at the server,
  // its clients pinning its key over CURVE.
  const std::string defended = run("median", "median", true);
  EXPECT_NE(defended.find("\"secure\": true"), std::string::npos) << defended;
  const auto topology = nlohmann::json::parse(defended)["topology"];
  EXPECT_EQ(topology["relays"], 2) << defended;
  EXPECT_EQ(topology["relay_strategy"], "median") << defended;
  // Observed: 9.8% and 95.7% (docs/relays.md; AMD EPYC, 2026-11-29).
  EXPECT_LT(accuracy(attacked), 0.5) << attacked;
  EXPECT_GT(accuracy(defended), 0.85) << defended;
  const auto rows = test::ReadRoundsCsv(dir.path() + "/median/rounds.csv");
  ASSERT_EQ(rows.size(), 3u);
  for (const auto& row : rows) EXPECT_EQ(row.participants, 2);  // one partial per relay
}

// A long experiment stopped part-way continues with fl-sim --resume: the
// server resumes from its checkpoint, the virtual clients re-register, and the
// run ends with the model of an uninterrupted one (32-bit uplink: the clients
// hold no state between rounds). A changed config is refused.
TEST(IntegrationTest, SimulationResumesWhereItStopped) {
  test::TempDir dir;
  auto run = [&](const std::string& out, const std::string& rounds,
                 std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {"--model",    "mnist_2nn", "--clients", "6",
                                     "--fraction", "0.5",       "--rounds",  rounds,
                                     "--epochs",   "1",         "--data",    test::SmallMnistDir(),
                                     "--out",      out,         "--quiet"};
    args.insert(args.end(), extra.begin(), extra.end());
    test::Process sim(kSim, args, out + ".log");
    const int rc = sim.Wait(180);
    return std::pair{rc, sim.Log()};
  };
  const std::string whole = dir.path() + "/whole", parts = dir.path() + "/parts";
  ASSERT_EQ(run(whole, "3").first, 0);
  ASSERT_EQ(run(parts, "2").first, 0);
  auto refused = run(parts, "3", {"--resume", "--lr", "0.2"});
  EXPECT_NE(refused.first, 0);
  EXPECT_NE(refused.second.find("lr = 0.2"), std::string::npos) << refused.second;
  auto resumed = run(parts, "3", {"--resume"});
  ASSERT_EQ(resumed.first, 0) << resumed.second;
  const auto rows = test::ReadRoundsCsv(parts + "/rounds.csv");
  ASSERT_EQ(rows.size(), 3u);
  for (int r = 0; r < 3; ++r) EXPECT_EQ(rows[r].round, r + 1);
  auto summary = ReadFile(parts + "/summary.json");
  ASSERT_FL_OK(summary);
  EXPECT_NE(summary->find("\"rounds_completed\": 3"), std::string::npos) << *summary;
  EXPECT_NE(summary->find("\"resumed_after_round\": 2"), std::string::npos) << *summary;
  auto a = ReadFile(whole + "/global.flm");
  auto b = ReadFile(parts + "/global.flm");
  ASSERT_FL_OK(a);
  ASSERT_FL_OK(b);
  EXPECT_TRUE(*a == *b) << "the resumed run ends with another model";
  // A run an older fl-sim made (its config.toml in tables) is held to the run
  // settings its checkpoint records.
  ASSERT_FL_OK(WriteFileAtomic(parts + "/config.toml", "seed = 1\n[client]\nlr = 0.05\n"));
  auto older = run(parts, "4", {"--resume", "--lr", "0.2"});
  EXPECT_NE(older.first, 0);
  EXPECT_NE(older.second.find("--lr: 0.05 in the checkpoint, 0.2 in this run"), std::string::npos)
      << older.second;
  auto continued = run(parts, "4", {"--resume"});
  EXPECT_EQ(continued.first, 0) << continued.second;
  EXPECT_NE(continued.second.find("an older fl-sim's"), std::string::npos) << continued.second;
  EXPECT_EQ(test::ReadRoundsCsv(parts + "/rounds.csv").size(), 4u);
}

// --stop-at-target: a rounds-to-accuracy sweep ends the run after the first
// round at the highest target, exit code 0, checkpointed so that --resume can
// take it further.
TEST(IntegrationTest, SimulationStopsAtItsTarget) {
  test::TempDir dir;
  const std::string config = dir.path() + "/stop.toml", out = dir.path() + "/run";
  ASSERT_FL_OK(
      WriteFileAtomic(config, "rounds = 4\ntargets = [0.2, 0.3]\nstop-at-target = true\n"));
  test::Process sim(
      kSim,
      {"--config", config, "--model", "mnist_2nn", "--clients", "4", "--fraction", "0.5",
       "--epochs", "1", "--data", test::SmallMnistDir(), "--out", out, "--quiet"},
      out + ".log");
  ASSERT_EQ(sim.Wait(120), 0) << sim.Log();
  const auto rows = test::ReadRoundsCsv(out + "/rounds.csv");
  ASSERT_EQ(rows.size(), 1u) << sim.Log();
  EXPECT_GE(std::stod(rows[0].accuracy), 0.3);
  auto summary = ReadFile(out + "/summary.json");
  ASSERT_FL_OK(summary);
  EXPECT_NE(summary->find("\"stopped_at_target\": true"), std::string::npos) << *summary;
  EXPECT_NE(summary->find("\"interrupted\": false"), std::string::npos) << *summary;
  EXPECT_NE(sim.Log().find("stopped at the target"), std::string::npos) << sim.Log();
  // Taken further without the stop: rounds 2 and 3 follow round 1.
  test::Process more(kSim,
                     {"--config", out + "/config.toml", "--rounds", "3", "--out", out, "--resume",
                      "--stop-at-target=false", "--quiet"},
                     out + ".more.log");
  ASSERT_EQ(more.Wait(120), 0) << more.Log();
  EXPECT_EQ(test::ReadRoundsCsv(out + "/rounds.csv").size(), 3u) << more.Log();
}

// fl-sim in asynchronous mode (FedBuff) with stragglers, with plain FedBuff
// and with server momentum (the latter as deployed: CURVE, signatures,
// enrollment): every step has its buffer of updates, the stale ones among
// them, and rounds.csv says so.
TEST(IntegrationTest, SimulationInAsyncMode) {
  for (const std::string strategy : {"fedavg", "fedavgm"}) {
    test::TempDir dir;
    const std::string config = dir.path() + "/async.toml", out = dir.path() + "/run";
    ASSERT_FL_OK(WriteFileAtomic(
        config, "rounds = 6\nmode = \"async\"\nconcurrency = 3\nbuffer = 2\nstrategy = \"" +
                    strategy + "\"\nstraggler-fraction = 0.34\nstraggler_slowdown = 3.0\n" +
                    // The second run as deployed: CURVE, enrolled signed devices, the
                    // TASK window (every task's envelope signed for it).
                    (strategy == "fedavgm" ? "secure = true\n" : "")));
    // (The whole of MNIST: on 12,000 examples FedAvgM's stale steps can
    // overshoot, and which updates are stale depends on the timing.)
    test::Process sim(kSim,
                      {"--config", config, "--model", "mnist_2nn", "--clients", "6", "--epochs",
                       "1", "--data", test::MnistDir(), "--out", out, "--quiet"},
                      out + ".log");
    ASSERT_EQ(sim.Wait(180), 0) << sim.Log();
    auto csv = ReadFile(out + "/rounds.csv");
    ASSERT_FL_OK(csv);
    EXPECT_NE(csv->find(",tasks,mean_staleness,max_staleness,expired\n"), std::string::npos)
        << *csv;
    const auto rows = test::ReadRoundsCsv(out + "/rounds.csv");
    ASSERT_EQ(rows.size(), 6u) << sim.Log();
    for (const auto& r : rows) EXPECT_EQ(r.participants, 2) << *csv;
    // 3 tasks out and 2 updates a step: some update is a step behind.
    double staleness = 0;
    std::istringstream lines(*csv);
    std::string line;
    std::getline(lines, line);
    while (std::getline(lines, line)) {
      const size_t cut = line.rfind(',', line.rfind(',', line.rfind(',') - 1) - 1);
      staleness += std::stod(line.substr(cut + 1));
    }
    EXPECT_GT(staleness, 0) << *csv;
    EXPECT_GT(std::stod(rows.back().accuracy), 0.5) << strategy << "\n" << *csv;
    auto effective = ReadFile(out + "/config.toml");
    ASSERT_FL_OK(effective);
    EXPECT_NE(effective->find("mode = \"async\""), std::string::npos) << *effective;
    EXPECT_EQ(effective->find("secure = true") != std::string::npos, strategy == "fedavgm")
        << *effective;
  }
}

// Writes a TorchScript MLP (fl-make-model --mlp WIDTHS) to `path`.
void MakeMlp(const std::string& path, const std::string& widths) {
  test::Process make(test::BinPath("fl-make-model"), {"--mlp", widths, "--out", path},
                     path + ".log");
  ASSERT_EQ(make.Wait(60), 0) << make.Log();
}

// Sensor rows for the CSV tests: 4 features near 100 (spread 2, classes 4
// apart), a user column (4 users) and a text label (3 species); 720 rows in
// `dir`/train.csv and 180 in `dir`/test.csv (no user column).
void WriteSpeciesCsv(const std::string& dir_path) {
  struct Dir {
    std::string path() const { return p; }
    std::string p;
  } dir{dir_path};
  std::ostringstream train, test;
  train << "f0,f1,f2,f3,user,species\n";
  test << "f0,f1,f2,f3,species\n";
  uint64_t s = 12345;
  auto uniform = [&] {  // xorshift, in (0, 1)
    s ^= s << 13, s ^= s >> 7, s ^= s << 17;
    return (static_cast<double>(s >> 11) + 0.5) / 9007199254740992.0;
  };
  const char* species[] = {"clover", "fern", "moss"};
  for (int i = 0; i < 900; ++i) {
    const int k = i % 3;
    std::ostringstream row;
    for (int f = 0; f < 4; ++f) {
      const double gauss = std::sqrt(-2 * std::log(uniform())) * std::cos(6.2831853 * uniform());
      row << 100 + 4.0 * ((f + k) % 3) + 2.0 * gauss << ",";
    }
    if (i < 720) {
      train << row.str() << "user" << (i * 7) % 4 << "," << species[k] << "\n";
    } else {
      test << row.str() << species[k] << "\n";
    }
  }
  EXPECT_FL_OK(WriteFileAtomic(dir.path() + "/train.csv", train.str()));
  EXPECT_FL_OK(WriteFileAtomic(dir.path() + "/test.csv", test.str()));
}

// fl-server on WriteSpeciesCsv's test file, with `model`, two devices a round.
std::vector<std::string> SpeciesServerArgs(const std::string& dir, const std::string& model,
                                           int rounds) {
  return {"--bind",         "tcp://127.0.0.1:*",
          "--model",        model,
          "--rounds",       std::to_string(rounds),
          "--min-clients",  "2",
          "--fraction",     "1",
          "--epochs",       "2",
          "--lr",           "0.1",
          "--test-data",    dir + "/test.csv",
          "--label-column", "species",
          "--out",          dir + "/out",
          "--linger",       "0.5"};
}

// Someone else's model on someone else's data, as separate processes: a
// TorchScript MLP (written by fl-make-model) on a CSV of sensor rows with text
// labels, split by its user column into one folder per device (fl-partition
// --scheme column), the server evaluating on a separate CSV. Raw features sit
// near 100 with spread 5: the clients train on the server's normalisation,
// which reaches them in the TASK. A model with too few outputs for the
// device's classes is refused by name.
TEST(IntegrationTest, TorchScriptModelOnCsvDataAsProcesses) {
  test::TempDir dir;
  WriteSpeciesCsv(dir.path());
  const std::string model = dir.path() + "/mlp.pt", small = dir.path() + "/two.pt";
  ASSERT_NO_FATAL_FAILURE(MakeMlp(model, "4,32,3"));
  ASSERT_NO_FATAL_FAILURE(MakeMlp(small, "4,32,2"));
  test::Process part(
      test::BinPath("fl-partition"),
      {"--data", dir.path() + "/train.csv", "--label-column", "species", "--scheme", "column",
       "--group-column", "user", "--clients", "2", "--out", dir.path() + "/devices"},
      dir.path() + "/partition.log");
  ASSERT_EQ(part.Wait(60), 0) << part.Log();
  EXPECT_NE(part.Log().find("c0: 360 training samples (user0, user2)"), std::string::npos)
      << part.Log();

  auto server_args = SpeciesServerArgs(dir.path(), model, 4);
  server_args.push_back("--insecure");
  test::Process server(kServer, server_args, dir.path() + "/server.log");
  const std::string ep = test::StartedEndpoint(server);
  ASSERT_FALSE(ep.empty()) << server.Log();
  EXPECT_NE(server.Log().find("180 test samples of 4 floats, 3 classes (clover, fern, moss)"),
            std::string::npos)
      << server.Log();
  auto client_args = [&](int k, const std::string& m) {
    auto args = test::ClientArgs(ep, k, 1);
    args[5] = dir.path() + "/devices/c" + std::to_string(k);  // --data
    args[7] = "none";                                         // --partition
    args.insert(args.end(), {"--model", m});
    return args;
  };
  test::Process refused(kClient, client_args(1, small), dir.path() + "/refused.log");
  EXPECT_NE(refused.Wait(60), 0);
  EXPECT_NE(refused.Log().find(small + ": maps a batch [2, 4] to 2x2; this device's data has 3 "
                                       "classes"),
            std::string::npos)
      << refused.Log();
  std::vector<std::unique_ptr<test::Process>> clients;
  for (int k = 0; k < 2; ++k) {
    clients.push_back(std::make_unique<test::Process>(
        kClient, client_args(k, model), dir.path() + "/c" + std::to_string(k) + ".log"));
  }
  ASSERT_EQ(server.Wait(180), 0) << server.Log();
  for (auto& c : clients) EXPECT_EQ(c->Wait(30), 0) << c->Log();
  auto rows = ReadRounds(dir.path() + "/out/rounds.csv");
  ASSERT_EQ(rows.size(), 4u) << server.Log();
  EXPECT_EQ(rows[3].participants, 2);
  EXPECT_GT(rows[3].accuracy, 0.9) << server.Log();  // chance is 1/3
  // The server's normalisation (from its test CSV) replaced the device's own.
  const std::string log = server.Log(), marker = "normalised ";
  const size_t at = log.find(marker);
  ASSERT_NE(at, std::string::npos) << log;
  // The log shows the first pairs, then "...".
  std::string norm =
      log.substr(at + marker.size(), log.find(' ', at + marker.size()) - at - marker.size());
  if (norm.size() > 3 && norm.compare(norm.size() - 3, 3, "...") == 0) norm.resize(norm.size() - 3);
  EXPECT_NE(clients[0]->Log().find("as the federation does: " + norm), std::string::npos)
      << norm << "\n"
      << clients[0]->Log();
}

// WriteSpeciesCsv's training rows as one device's CSV (no user column),
// keeping the rows `keep` accepts (its argument: the species) and ending with
// `extra` rows.
void WriteDeviceCsv(const std::string& dir, const std::string& out,
                    const std::function<bool(const std::string&)>& keep,
                    const std::string& extra = "") {
  std::ifstream in(dir + "/train.csv");
  std::ostringstream csv;
  std::string line;
  std::getline(in, line);
  csv << "f0,f1,f2,f3,species\n";
  while (std::getline(in, line)) {
    const size_t user = line.rfind(',', line.rfind(',') - 1);
    const std::string species = line.substr(line.rfind(',') + 1);
    if (keep(species)) csv << line.substr(0, user) << "," << species << "\n";
  }
  csv << extra;
  EXPECT_FL_OK(WriteFileAtomic(out, csv.str()));
}

// A real fleet's non-IID data: each device has its own CSV with text labels,
// and one has no "clover" rows. Numbered on its own, its "fern" and "moss"
// would be classes 0 and 1 (the federation's "clover" and "fern"); the TASK
// carries the server's class names and the device numbers its classes by
// them (fern 1, moss 2), so the federation learns all three. A device with a
// class the federation does not have stops, naming it.
TEST(IntegrationTest, DevicesLackingAClassNumberTheirClassesAsTheFederation) {
  test::TempDir dir;
  WriteSpeciesCsv(dir.path());
  const std::string model = dir.path() + "/mlp.pt";
  ASSERT_NO_FATAL_FAILURE(MakeMlp(model, "4,32,3"));
  const std::string all = dir.path() + "/all.csv", no_clover = dir.path() + "/no_clover.csv",
                    weeds = dir.path() + "/weeds.csv";
  WriteDeviceCsv(dir.path(), all, [](const std::string&) { return true; });
  WriteDeviceCsv(dir.path(), no_clover, [](const std::string& s) { return s != "clover"; });
  WriteDeviceCsv(
      dir.path(), weeds, [](const std::string& s) { return s != "clover"; },
      "100,100,100,100,weed\n");
  auto client_args = [&](const std::string& ep, int k, const std::string& data) {
    auto args = test::ClientArgs(ep, k, 1);
    args[5] = data;    // --data
    args[7] = "none";  // --partition
    args.insert(args.end(), {"--label-column", "species", "--model", model});
    return args;
  };
  auto server_args = SpeciesServerArgs(dir.path(), model, 3);
  server_args.push_back("--insecure");
  test::Process server(kServer, server_args, dir.path() + "/server.log");
  const std::string ep = test::StartedEndpoint(server);
  ASSERT_FALSE(ep.empty()) << server.Log();
  test::Process c0(kClient, client_args(ep, 0, all), dir.path() + "/c0.log");
  test::Process c1(kClient, client_args(ep, 1, no_clover), dir.path() + "/c1.log");
  ASSERT_EQ(server.Wait(180), 0) << server.Log();
  EXPECT_EQ(c0.Wait(30), 0) << c0.Log();
  EXPECT_EQ(c1.Wait(30), 0) << c1.Log();
  EXPECT_NE(server.Log().find("classes: clover, fern, moss (sent to devices"), std::string::npos)
      << server.Log();
  EXPECT_NE(c1.Log().find("numbering this device's classes as the federation does (3 classes): "
                          "fern 1, moss 2"),
            std::string::npos)
      << c1.Log();
  EXPECT_EQ(c0.Log().find("numbering this device's classes"), std::string::npos) << c0.Log();
  auto rows = ReadRounds(dir.path() + "/out/rounds.csv");
  ASSERT_EQ(rows.size(), 3u) << server.Log();
  EXPECT_EQ(rows[2].participants, 2);
  EXPECT_GT(rows[2].accuracy, 0.9) << server.Log();  // chance is 1/3
  // The run's model file records the classes and the normalisation, so the
  // export for devices needs neither the data nor --normalize.
  test::Process inspect(test::BinPath("fl-compress"), {"inspect", dir.path() + "/out/global.flm"},
                        dir.path() + "/inspect.log");
  ASSERT_EQ(inspect.Wait(60), 0) << inspect.Log();
  // (The JSON document, without log lines around it.)
  const std::string out = inspect.Log();
  const size_t open = out.find('{'), close = out.rfind('}');
  ASSERT_TRUE(open != std::string::npos && close != std::string::npos) << out;
  const auto inspected = nlohmann::json::parse(out.substr(open, close + 1 - open), nullptr,
                                               /*allow_exceptions=*/false);
  ASSERT_FALSE(inspected.is_discarded()) << inspect.Log();
  EXPECT_EQ(inspected["classes"], (std::vector<std::string>{"clover", "fern", "moss"}))
      << inspect.Log();
  EXPECT_FALSE(inspected["normalize"].is_null()) << inspect.Log();
  const std::string onnx = dir.path() + "/species.onnx";
  test::Process exported(test::BinPath("fl-compress"),
                         {"export", dir.path() + "/out/global.flm", "--script", model,
                          "--input-shape", "4", "--float-input", "--out", onnx},
                         dir.path() + "/export.log");
  ASSERT_EQ(exported.Wait(60), 0) << exported.Log();
  EXPECT_NE(exported.Log().find("(recorded in the model file)"), std::string::npos)
      << exported.Log();
  auto onnx_bytes = ReadFile(onnx);
  ASSERT_FL_OK(onnx_bytes);
  EXPECT_NE(onnx_bytes->find("clover,fern,moss"), std::string::npos);

  // A device whose data has a class the federation does not: it stops with
  // the reason (the server's round goes on without it).
  auto one_round = SpeciesServerArgs(dir.path(), model, 1);
  *(std::find(one_round.begin(), one_round.end(), "--min-clients") + 1) = "1";
  *(std::find(one_round.begin(), one_round.end(), "--out") + 1) = dir.path() + "/out2";
  for (const char* a : {"--insecure", "--deadline", "5"}) one_round.push_back(a);
  test::Process server2(kServer, one_round, dir.path() + "/server2.log");
  const std::string ep2 = test::StartedEndpoint(server2);
  ASSERT_FALSE(ep2.empty()) << server2.Log();
  test::Process weed(kClient, client_args(ep2, 2, weeds), dir.path() + "/weed.log");
  EXPECT_NE(weed.Wait(60), 0) << weed.Log();
  EXPECT_NE(weed.Log().find("this device's data: has class 'weed', which is not one of the "
                            "federation's (clover, fern, moss)"),
            std::string::npos)
      << weed.Log();
  EXPECT_EQ(server2.Wait(60), 0) << server2.Log();

  // --classes may name a class the test data lacks ("weed"; spaces around
  // names are dropped): the same device then trains, and the test data is
  // numbered by the list.
  const std::string model4 = dir.path() + "/mlp4.pt";
  ASSERT_NO_FATAL_FAILURE(MakeMlp(model4, "4,32,4"));
  auto with_weed = SpeciesServerArgs(dir.path(), model4, 1);
  *(std::find(with_weed.begin(), with_weed.end(), "--min-clients") + 1) = "1";
  *(std::find(with_weed.begin(), with_weed.end(), "--out") + 1) = dir.path() + "/out3";
  for (const char* a : {"--insecure", "--classes", "clover, fern, moss, weed"}) {
    with_weed.push_back(a);
  }
  test::Process server3(kServer, with_weed, dir.path() + "/server3.log");
  const std::string ep3 = test::StartedEndpoint(server3);
  ASSERT_FALSE(ep3.empty()) << server3.Log();
  auto weed_args = client_args(ep3, 2, weeds);
  *(std::find(weed_args.begin(), weed_args.end(), "--model") + 1) = model4;
  test::Process weed2(kClient, weed_args, dir.path() + "/weed2.log");
  ASSERT_EQ(server3.Wait(60), 0) << server3.Log();
  EXPECT_EQ(weed2.Wait(30), 0) << weed2.Log();
  EXPECT_NE(server3.Log().find("classes: clover, fern, moss, weed (sent to devices"),
            std::string::npos)
      << server3.Log();
  auto rows3 = ReadRounds(dir.path() + "/out3/rounds.csv");
  ASSERT_EQ(rows3.size(), 1u) << server3.Log();
  EXPECT_EQ(rows3[0].participants, 1);
}

// The architecture travels with the federation: devices started without
// --model take the server's TorchScript file from their TASK, signed by the
// server's key, check the signature and the file's id before loading it,
// keep it in --model-cache, and train. A device that does not ask for the
// file is refused with the fix.
TEST(IntegrationTest, ServerSendsItsSignedModelFileToDevicesWithoutIt) {
  test::TempDir dir;
  WriteSpeciesCsv(dir.path());
  const std::string keys = dir.path() + "/keys", enrolled = dir.path() + "/enrolled";
  ASSERT_NO_FATAL_FAILURE(
      MakeIdentities(dir.path(), keys, enrolled, {"server", "c0", "c1", "c2"}, {"c0", "c1", "c2"}));
  const std::string model = dir.path() + "/mlp.pt";
  ASSERT_NO_FATAL_FAILURE(MakeMlp(model, "4,32,3"));
  test::Process part(
      test::BinPath("fl-partition"),
      {"--data", dir.path() + "/train.csv", "--label-column", "species", "--scheme", "column",
       "--group-column", "user", "--clients", "2", "--out", dir.path() + "/devices"},
      dir.path() + "/partition.log");
  ASSERT_EQ(part.Wait(60), 0) << part.Log();
  auto server_args = SpeciesServerArgs(dir.path(), model, 2);
  server_args.insert(server_args.end(), {"--key", keys + "/server.key", "--clients", enrolled});
  test::Process server(kServer, server_args, dir.path() + "/server.log");
  const std::string ep = test::StartedEndpoint(server);
  ASSERT_FALSE(ep.empty()) << server.Log();
  auto device = [&](const std::string& name, int k, bool cache) {
    std::vector<std::string> a = {"--server",
                                  ep,
                                  "--id",
                                  name,
                                  "--data",
                                  dir.path() + "/devices/c" + std::to_string(k),
                                  "--partition",
                                  "none",
                                  "--heartbeat",
                                  "0.3",
                                  "--server-timeout",
                                  "2",
                                  "--key",
                                  keys + "/" + name + ".key",
                                  "--server-key",
                                  keys + "/server.pub"};
    if (cache) a.insert(a.end(), {"--model-cache", dir.path() + "/cache_" + name});
    return std::make_unique<test::Process>(kClient, a, dir.path() + "/" + name + ".log");
  };
  auto without = device("c2", 0, /*cache=*/false);
  EXPECT_EQ(without->Wait(60), 3) << without->Log();
  EXPECT_NE(without->Log().find("--model-cache"), std::string::npos) << without->Log();
  auto c0 = device("c0", 0, true);
  auto c1 = device("c1", 1, true);
  ASSERT_EQ(server.Wait(180), 0) << server.Log();
  EXPECT_EQ(c0->Wait(30), 0) << c0->Log();
  EXPECT_EQ(c1->Wait(30), 0) << c1->Log();
  auto rows = ReadRounds(dir.path() + "/out/rounds.csv");
  ASSERT_EQ(rows.size(), 2u) << server.Log();
  EXPECT_EQ(rows[1].participants, 2);
  EXPECT_NE(c0->Log().find("(the server's file, signature checked)"), std::string::npos)
      << c0->Log();
  auto sent = ReadFile(model);
  ASSERT_FL_OK(sent);
  const std::string id = ModelCodeId(*sent);
  auto kept = ReadFile(dir.path() + "/cache_c0/" + id.substr(id.find(':') + 1) + ".pt");
  ASSERT_FL_OK(kept);
  EXPECT_TRUE(*kept == *sent);
}

// The same data in fl-sim: one virtual client per user (partition "column"),
// the test split carved from the training file (test_fraction).
TEST(IntegrationTest, SimulationOnCsvWithItsNaturalSplit) {
  test::TempDir dir;
  WriteSpeciesCsv(dir.path());
  const std::string model = dir.path() + "/mlp.pt";
  ASSERT_NO_FATAL_FAILURE(MakeMlp(model, "4,32,3"));
  ASSERT_FL_OK(WriteFileAtomic(dir.path() + "/sim.toml",
                               "rounds = 3\npartition = \"column\"\n"
                               "group-column = \"user\"\nlabel-column = \"species\"\n"
                               "test-fraction = 0.25\nepochs = 2\nlr = 0.1\n"));
  auto run = [&](const std::string& clients, const std::string& out) {
    test::Process sim(kSim,
                      {"--config", dir.path() + "/sim.toml", "--data", dir.path() + "/train.csv",
                       "--model", model, "--clients", clients, "--fraction", "1", "--out",
                       dir.path() + "/" + out, "--quiet"},
                      dir.path() + "/" + out + ".log");
    const int rc = sim.Wait(120);
    return std::pair{rc, sim.Log()};
  };
  auto refused = run("5", "five");
  EXPECT_NE(refused.first, 0);
  EXPECT_NE(refused.second.find("names 4 devices, fewer than the 5"), std::string::npos)
      << refused.second;
  // Ranked globally at initialisation, 90% sparsity would take every weight
  // of the classifier (its initial weights are the smaller): refused by name.
  test::Process pruned(
      kSim,
      {"--config", dir.path() + "/sim.toml", "--data", dir.path() + "/train.csv", "--model", model,
       "--clients", "4", "--sparsity", "0.9", "--out", dir.path() + "/pruned", "--quiet"},
      dir.path() + "/pruned.log");
  EXPECT_NE(pruned.Wait(60), 0);
  EXPECT_NE(pruned.Log().find("keeps no weight of 'fc2.weight'"), std::string::npos)
      << pruned.Log();
  auto ok = run("4", "four");
  ASSERT_EQ(ok.first, 0) << ok.second;
  EXPECT_NE(ok.second.find("540 train / 0 test samples of 4 floats, 3 classes"), std::string::npos)
      << ok.second;
  const auto rows = test::ReadRoundsCsv(dir.path() + "/four/rounds.csv");
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[2].participants, 4);
  EXPECT_GT(std::stod(rows[2].accuracy), 0.9) << ok.second;
}

// On-device transfer learning (--trainable): only the classifier trains. The
// frozen tensors leave every round exactly as they started, the classifier
// moves, and each update carries the classifier's values only (2,010 of the
// 2NN's 199,210). A pattern that matches nothing is refused with the names.
TEST(IntegrationTest, TrainableSubsetFreezesTheRestAndShrinksTheUplink) {
  test::TempDir dir;
  auto run = [&](const std::string& out, const std::string& rounds, const std::string& trainable) {
    test::Process sim(kSim,
                      {"--model", "mnist_2nn", "--clients", "4", "--fraction", "0.5", "--rounds",
                       rounds, "--epochs", "1", "--uplink-bits", "32", "--trainable", trainable,
                       "--data", test::SmallMnistDir(), "--out", dir.path() + "/" + out, "--quiet"},
                      dir.path() + "/" + out + ".log");
    const int rc = sim.Wait(180);
    return std::pair{rc, sim.Log()};
  };
  auto bad = run("bad", "1", "head.*");
  EXPECT_NE(bad.first, 0);
  EXPECT_NE(bad.second.find("--trainable 'head.*': matches no tensor of the model (fc1.weight, "
                            "fc1.bias, fc2.weight"),
            std::string::npos)
      << bad.second;
  ASSERT_EQ(run("one", "1", "fc3.*").first, 0);
  auto two = run("two", "2", "fc3.*");
  ASSERT_EQ(two.first, 0) << two.second;
  auto a = ReadModelFile(dir.path() + "/one/global.flm");
  auto b = ReadModelFile(dir.path() + "/two/global.flm");
  ASSERT_FL_OK(a);
  ASSERT_FL_OK(b);
  for (size_t i = 0; i < a->tensors.size(); ++i) {
    const bool classifier = a->tensors[i].name.rfind("fc3.", 0) == 0;
    EXPECT_EQ(a->tensors[i].values == b->tensors[i].values, !classifier) << a->tensors[i].name;
  }
  auto summary = ReadFile(dir.path() + "/two/summary.json");
  ASSERT_FL_OK(summary);
  const size_t at = summary->find("\"delta_bytes_per_update\": ");
  ASSERT_NE(at, std::string::npos);
  const double per_update = std::stod(summary->substr(at + 26));
  EXPECT_GE(per_update, 4 * 2010);
  EXPECT_LT(per_update, 4 * 2010 + 200) << *summary;
  // A strategy with state (server momentum) over the trainable values only,
  // saved in the checkpoint and taken up by --resume.
  auto run_momentum = [&](const std::string& rounds, bool resume) {
    std::vector<std::string> args = {"--model",     "mnist_2nn",
                                     "--clients",   "4",
                                     "--fraction",  "0.5",
                                     "--rounds",    rounds,
                                     "--epochs",    "1",
                                     "--trainable", "fc3.*",
                                     "--strategy",  "fedavgm",
                                     "--data",      test::SmallMnistDir(),
                                     "--out",       dir.path() + "/momentum",
                                     "--quiet"};
    if (resume) args.push_back("--resume");
    test::Process sim(kSim, args, dir.path() + "/momentum" + rounds + ".log");
    const int rc = sim.Wait(180);
    return std::pair{rc, sim.Log()};
  };
  ASSERT_EQ(run_momentum("1", false).first, 0);
  auto resumed = run_momentum("2", true);
  EXPECT_EQ(resumed.first, 0) << resumed.second;
}

// --trainable as deployed: fl-server and two fl-client processes. Runs of 1
// and 2 rounds from the same seed: the frozen tensors of both global models
// are the starting model's, bit for bit, the classifier differs, and each
// device's update carries the classifier's 2,010 values (8 KB at 32 bits,
// where the whole 2NN's would be 797 KB).
TEST(IntegrationTest, TrainableSubsetAsProcesses) {
  test::TempDir dir;
  auto federate = [&](int rounds) {
    const std::string name = "r" + std::to_string(rounds);
    auto args = ServerArgs("tcp://127.0.0.1:*", dir.path() + "/" + name, rounds, 2, 60);
    args.insert(args.end(), {"--trainable", "fc3.*"});
    test::Process server(kServer, args, dir.path() + "/" + name + ".log");
    const std::string ep = test::StartedEndpoint(server);
    EXPECT_FALSE(ep.empty()) << server.Log();
    std::vector<std::unique_ptr<test::Process>> clients;
    for (int k = 0; k < 2; ++k) {
      clients.push_back(std::make_unique<test::Process>(
          kClient, ClientArgs(ep, k, 60), dir.path() + "/" + name + "c" + std::to_string(k)));
    }
    EXPECT_EQ(server.Wait(180), 0) << server.Log();
    for (auto& c : clients) EXPECT_EQ(c->Wait(30), 0) << c->Log();
    return clients[0]->Log();
  };
  federate(1);
  const std::string client_log = federate(2);
  auto a = ReadModelFile(dir.path() + "/r1/global.flm");
  auto b = ReadModelFile(dir.path() + "/r2/global.flm");
  ASSERT_FL_OK(a);
  ASSERT_FL_OK(b);
  for (size_t i = 0; i < a->tensors.size(); ++i) {
    const bool classifier = a->tensors[i].name.rfind("fc3.", 0) == 0;
    EXPECT_EQ(a->tensors[i].values == b->tensors[i].values, !classifier) << a->tensors[i].name;
  }
  const std::string marker = "sending update (";
  const size_t at = client_log.find(marker);
  ASSERT_NE(at, std::string::npos) << client_log;
  const long bytes = std::stol(client_log.substr(at + marker.size()));
  EXPECT_GE(bytes, 4 * 2010);
  EXPECT_LT(bytes, 4 * 2010 + 400) << client_log;
}

// Slow and flaky devices as real processes: --slowdown 5 holds the update
// back until a device 5x slower would have finished (the round lasts at
// least 4x the training the client reports), and --dropout 0.99 trains but
// never answers (the round closes at its deadline without it). The same in
// simulated time, with the deadline's exact timing:
// LivenessTest.ASlowDeviceHoldsTheRoundAndADroppedOneMissesItsDeadline.
TEST(IntegrationTest, ClientSlowdownAndDropoutAsProcesses) {
  test::TempDir dir;
  auto federate = [&](const std::string& name, const std::vector<std::string>& flags,
                      double deadline) {
    auto args = ServerArgs("tcp://127.0.0.1:*", dir.path() + "/" + name, 1, 1, deadline);
    test::Process server(kServer, args, dir.path() + "/" + name + ".log");
    const std::string ep = test::StartedEndpoint(server);
    EXPECT_FALSE(ep.empty()) << server.Log();
    auto client_args = ClientArgs(ep, 0, 10);  // 6,000 samples: a training of ~0.2 s
    client_args.insert(client_args.end(), flags.begin(), flags.end());
    test::Process client(kClient, client_args, dir.path() + "/" + name + ".client.log");
    EXPECT_EQ(server.Wait(60), 0) << server.Log();
    EXPECT_EQ(client.Wait(30), 0) << client.Log();
    return std::pair{client.Log(), ReadRounds(dir.path() + "/" + name + "/rounds.csv")};
  };
  auto [slow_log, slow_rows] = federate("slow", {"--slowdown", "5"}, 120);
  ASSERT_EQ(slow_rows.size(), 1u) << slow_log;
  EXPECT_EQ(slow_rows[0].participants, 1);
  const std::string marker = "trained in ";
  const size_t at = slow_log.find(marker);
  ASSERT_NE(at, std::string::npos) << slow_log;
  const double compute = std::stod(slow_log.substr(at + marker.size()));
  EXPECT_NE(slow_log.find("as a device 5x slower; sent then"), std::string::npos) << slow_log;
  // The log rounds to 10 ms.
  EXPECT_GE(slow_rows[0].seconds, 4 * (compute - 0.005)) << slow_log;

  auto [flaky_log, flaky_rows] = federate("flaky", {"--dropout", "0.99"}, 2);
  ASSERT_EQ(flaky_rows.size(), 1u) << flaky_log;
  EXPECT_EQ(flaky_rows[0].participants, 0);
  EXPECT_NE(flaky_log.find("dropping out of this task"), std::string::npos) << flaky_log;
  EXPECT_NE(flaky_log.find("1 tasks dropped out of"), std::string::npos) << flaky_log;
}

// Over-selection as processes: 3 live devices, C = 0.5 (2 updates a round),
// --over-selection 1.5 selects all 3; one is a device 200x slower. Each
// round closes when the 2 fast ones are in, and the slow one, told its work
// is not needed, never uploads its held-back update.
TEST(IntegrationTest, OverSelectionLeavesTheStragglerOutAsProcesses) {
  test::TempDir dir;
  auto args = ServerArgs("tcp://127.0.0.1:*", dir.path() + "/out", 2, 3, 60);
  *(std::find(args.begin(), args.end(), "--fraction") + 1) = "0.5";
  args.insert(args.end(), {"--over-selection", "1.5"});
  test::Process server(kServer, args, dir.path() + "/server.log");
  const std::string ep = test::StartedEndpoint(server);
  ASSERT_FALSE(ep.empty()) << server.Log();
  std::vector<std::unique_ptr<test::Process>> clients;
  for (int k = 0; k < 3; ++k) {
    auto a = ClientArgs(ep, k, 60);
    if (k == 2) a.insert(a.end(), {"--slowdown", "200"});
    clients.push_back(
        std::make_unique<test::Process>(kClient, a, dir.path() + "/c" + std::to_string(k)));
  }
  ASSERT_EQ(server.Wait(120), 0) << server.Log();
  for (auto& c : clients) EXPECT_EQ(c->Wait(30), 0) << c->Log();
  const auto rows = ReadRounds(dir.path() + "/out/rounds.csv");
  ASSERT_EQ(rows.size(), 2u) << server.Log();
  for (const auto& row : rows) EXPECT_EQ(row.participants, 2);
  EXPECT_NE(server.Log().find("selected devices told their work is not needed"), std::string::npos)
      << server.Log();
  const std::string slow = clients[2]->Log();
  EXPECT_NE(slow.find("the server closed the round without this task; the update is not sent"),
            std::string::npos)
      << slow;
  EXPECT_NE(slow.find(", 0 updates accepted"), std::string::npos) << slow;
}

// A fleet's data as it is: one MNIST-format folder per device (here written by
// fl-partition), one virtual client each (data.partition = "folders"), the
// server evaluating on a separate test folder. A device count other than
// --clients is refused, naming the folder.
TEST(IntegrationTest, SimulationTakesOneFolderPerDevice) {
  test::TempDir dir;
  test::Process part(test::BinPath("fl-partition"),
                     {"--data", test::MnistDir(), "--scheme", "shards", "--clients", "100",
                      "--only", "4", "--out", dir.path() + "/devices"},
                     dir.path() + "/partition.log");
  ASSERT_EQ(part.Wait(60), 0) << part.Log();
  auto run = [&](const std::string& clients, const std::string& out) {
    test::Process sim(
        kSim,
        {"--model", "mnist_2nn", "--partition", "folders", "--data", dir.path() + "/devices",
         "--test-data", test::MnistDir(), "--clients", clients, "--fraction", "1", "--rounds", "1",
         "--epochs", "1", "--out", dir.path() + "/" + out, "--quiet"},
        dir.path() + "/" + out + ".log");
    const int rc = sim.Wait(120);
    return std::pair{rc, sim.Log()};
  };
  auto refused = run("3", "three");
  EXPECT_NE(refused.first, 0);
  EXPECT_NE(refused.second.find("holds 4 device folders"), std::string::npos) << refused.second;
  auto ok = run("4", "four");
  ASSERT_EQ(ok.first, 0) << ok.second;
  const auto rows = test::ReadRoundsCsv(dir.path() + "/four/rounds.csv");
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].participants, 4);
  EXPECT_FALSE(rows[0].accuracy.empty());
}

// Class folders per device, as a fleet of cameras would have them, where the
// first device has no "dark" images: fl-sim numbers the devices' classes by their
// union, the server's TASK by its test data's, and the federation tells the
// three shades apart (chance is 1/3).
TEST(IntegrationTest, SimulationTakesDevicesLackingAClass) {
  test::TempDir dir;
  uint64_t s = 99;
  auto image = [&](const std::string& path, int shade) {
    ASSERT_FL_OK(CreateDirectories(path.substr(0, path.rfind('/'))));
    std::vector<uint8_t> px(16);
    for (auto& p : px) {
      s ^= s << 13, s ^= s >> 7, s ^= s << 17;
      p = static_cast<uint8_t>(std::clamp(shade + static_cast<int>(s % 41) - 20, 0, 255));
    }
    ASSERT_NE(stbi_write_png(path.c_str(), 4, 4, 1, px.data(), 4), 0);
  };
  const std::pair<const char*, int> shades[] = {{"dark", 30}, {"light", 220}, {"mid", 128}};
  for (int i = 0; i < 60; ++i) {
    for (const auto& [name, shade] : shades) {
      const std::string file = "/" + std::string(name) + "/" + std::to_string(i) + ".png";
      // The first device lacks "dark": the devices read before another are
      // renumbered too.
      ASSERT_NO_FATAL_FAILURE(image(dir.path() + "/devices/c1" + file, shade));
      if (std::string(name) != "dark") {
        ASSERT_NO_FATAL_FAILURE(image(dir.path() + "/devices/c0" + file, shade));
      }
      if (i < 20) {
        ASSERT_NO_FATAL_FAILURE(image(dir.path() + "/test" + file, shade));
      }
    }
  }
  const std::string model = dir.path() + "/mlp.pt";
  ASSERT_NO_FATAL_FAILURE(MakeMlp(model, "16,16,3"));
  test::Process sim(kSim, {"--model",     model,
                           "--partition", "folders",
                           "--data",      dir.path() + "/devices",
                           "--test-data", dir.path() + "/test",
                           "--clients",   "2",
                           "--fraction",  "1",
                           "--rounds",    "3",
                           "--epochs",    "2",
                           "--lr",        "0.1",
                           "--out",       dir.path() + "/out",
                           "--quiet"},
                    dir.path() + "/sim.log");
  ASSERT_EQ(sim.Wait(120), 0) << sim.Log();
  const auto rows = test::ReadRoundsCsv(dir.path() + "/out/rounds.csv");
  ASSERT_EQ(rows.size(), 3u) << sim.Log();
  EXPECT_EQ(rows[2].participants, 2);
  EXPECT_GT(std::stod(rows[2].accuracy), 0.9) << sim.Log();
}

}  // namespace
}  // namespace fl
