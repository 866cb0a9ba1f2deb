// --reproducible (common/reproducible.h) as users run it, fl-sim and
// fl-server + fl-client as separate processes:
//   - a 2-round fl-sim CNN run ends with the same global.flm under two ISA
//     settings of the environment (what an AVX2 machine's libraries pick, and
//     what an older ISA's would), from the flag and from a config file's
//     `reproducible = true`, and writes its seed and kernels into summary.json;
//   - without --reproducible the same two settings end with other models: the
//     settings do change the kernels, so the equality above is the pinning's;
//   - fl-server and fl-client with --reproducible (flags or --config key)
//     log the pinned kernels and train.
// Skipped on an x86-64 CPU without AVX2 and FMA (--reproducible refuses it).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "common/file_util.h"
#include "crypto/sha256.h"
#include "tests/federation_util.h"

namespace fl {
namespace {

const std::string kSim = test::BinPath("fl-sim");

bool CpuHasAvx2AndFma() {
#if defined(__x86_64__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return true;
#endif
}

// What an AVX2 machine's libraries pick on their own, and what an older
// ISA's would: the two machines the pinning must make alike.
const std::vector<std::string> kIsaA = {"ATEN_CPU_CAPABILITY=avx2", "OPENBLAS_CORETYPE=Zen",
                                        "ONEDNN_MAX_CPU_ISA=AVX2"};
const std::vector<std::string> kIsaB = {"ATEN_CPU_CAPABILITY=default", "OPENBLAS_CORETYPE=Prescott",
                                        "ONEDNN_MAX_CPU_ISA=SSE41"};

// A folder with the first `n` images of MNIST's test split (IDX files of
// the same names): each round's evaluation stays short, whatever the kernels.
void WriteSmallTestSplit(const std::string& dir, uint32_t n) {
  const auto copy = [&](const char* name, size_t header, size_t record) {
    std::ifstream in(test::MnistDir() + "/" + name, std::ios::binary);
    std::string head(header, '\0');
    in.read(head.data(), static_cast<std::streamsize>(header));
    // The count, big-endian, after the 4-byte magic.
    for (int i = 0; i < 4; ++i) head[4 + i] = static_cast<char>((n >> (24 - 8 * i)) & 0xff);
    std::string body(static_cast<size_t>(n) * record, '\0');
    in.read(body.data(), static_cast<std::streamsize>(body.size()));
    ASSERT_TRUE(in) << name;
    std::ofstream out(dir + "/" + name, std::ios::binary);
    out << head << body;
  };
  copy("t10k-images-idx3-ubyte", 16, 28 * 28);
  copy("t10k-labels-idx1-ubyte", 8, 1);
}

struct SimRun {
  std::string flm;      // global.flm's bytes ("" when the run failed)
  std::string summary;  // summary.json
  std::string log;
};

// fl-sim: mnist_cnn, 48 clients of 250 examples (the 12,000-image subset),
// 2 a round, 2 rounds, seed 7, evaluated on DIR/test (WriteSmallTestSplit),
// under the environment `isa`, into DIR/NAME.
SimRun RunSim(const std::string& dir, const std::string& name, const std::vector<std::string>& isa,
              const std::vector<std::string>& extra) {
  std::vector<std::string> args = isa;
  args.insert(args.end(), {kSim,
                           "--model",
                           "mnist_cnn",
                           "--clients",
                           "48",
                           "--fraction",
                           "0.042",
                           "--rounds",
                           "2",
                           "--epochs",
                           "1",
                           "--seed",
                           "7",
                           "--data",
                           test::SmallMnistDir(),
                           "--test-data",
                           dir + "/test",
                           "--out",
                           dir + "/" + name,
                           "--quiet"});
  args.insert(args.end(), extra.begin(), extra.end());
  test::Process sim("/usr/bin/env", args, dir + "/" + name + ".log");
  SimRun r;
  EXPECT_EQ(sim.Wait(300), 0) << sim.Log();
  r.log = sim.Log();
  auto flm = ReadFile(dir + "/" + name + "/global.flm");
  auto summary = ReadFile(dir + "/" + name + "/summary.json");
  if (flm.ok()) r.flm = *flm;
  if (summary.ok()) r.summary = *summary;
  return r;
}

std::string Digest(const std::string& bytes) { return ToHex(Sha256(bytes)).substr(0, 16); }

// The flag under one ISA setting, the config key under the other: the same
// model; without either, two models.
TEST(ReproducibleTest, TheSameSeedGivesTheSameCnnUnderEitherIsa) {
  if (!CpuHasAvx2AndFma()) GTEST_SKIP() << "this CPU has no AVX2 or FMA";
  test::TempDir dir;
  ASSERT_TRUE(std::filesystem::create_directories(dir.path() + "/test"));
  WriteSmallTestSplit(dir.path() + "/test", 500);
  const std::string config = dir.path() + "/repro.toml";
  {
    std::ofstream out(config);
    out << "reproducible = true\n";
  }
  const SimRun a = RunSim(dir.path(), "repro-a", kIsaA, {"--reproducible"});
  const SimRun b = RunSim(dir.path(), "repro-b", kIsaB, {"--config", config});
  ASSERT_FALSE(a.flm.empty()) << a.log;
  ASSERT_FALSE(b.flm.empty()) << b.log;
  EXPECT_TRUE(a.flm == b.flm) << "--reproducible: " << Digest(a.flm) << " under ISA A, "
                              << Digest(b.flm) << " under ISA B";
  // The seed and the settings are in summary.json, from the flag and from
  // the key alike.
  for (const SimRun* r : {&a, &b}) {
    EXPECT_NE(r->summary.find("\"seed\": 7"), std::string::npos) << r->summary;
    EXPECT_NE(r->summary.find("\"reproducible\": true"), std::string::npos) << r->summary;
    EXPECT_NE(r->summary.find("ATen avx2, OpenBLAS Haswell, oneDNN off"), std::string::npos)
        << r->summary;
    EXPECT_NE(r->summary.find("\"rounds_completed\": 2"), std::string::npos) << r->summary;
  }
  // ... and in the effective config, which reruns it.
  auto effective = ReadFile(dir.path() + "/repro-a/config.toml");
  ASSERT_FL_OK(effective);
  EXPECT_NE(effective->find("reproducible = true"), std::string::npos) << *effective;
  // The control: the same two settings without --reproducible pick other
  // kernels, and so end with other models.
  const SimRun c = RunSim(dir.path(), "free-a", kIsaA, {});
  const SimRun d = RunSim(dir.path(), "free-b", kIsaB, {});
  ASSERT_FALSE(c.flm.empty()) << c.log;
  ASSERT_FALSE(d.flm.empty()) << d.log;
  EXPECT_FALSE(c.flm == d.flm) << "the ISA settings did not change the model: the test above "
                                  "proves nothing";
  EXPECT_NE(c.summary.find("\"reproducible\": false"), std::string::npos) << c.summary;
  std::printf("global.flm: reproducible %s / %s; free %s / %s\n", Digest(a.flm).c_str(),
              Digest(b.flm).c_str(), Digest(c.flm).c_str(), Digest(d.flm).c_str());
}

// fl-server and fl-client as processes: both take --reproducible (the client
// from its --config file's key), log the pinned kernels, and train a round.
TEST(ReproducibleTest, ServerAndClientTakeTheFlagAsProcesses) {
  if (!CpuHasAvx2AndFma()) GTEST_SKIP() << "this CPU has no AVX2 or FMA";
  test::TempDir dir;
  test::Process server(test::BinPath("fl-server"),
                       {"--bind", "tcp://127.0.0.1:*", "--model", "mnist_2nn", "--rounds", "1",
                        "--min-clients", "1", "--fraction", "1", "--no-eval", "--out",
                        dir.path() + "/out", "--linger", "1", "--insecure", "--reproducible"},
                       dir.path() + "/server.log");
  const std::string endpoint = test::StartedEndpoint(server);
  ASSERT_FALSE(endpoint.empty()) << server.Log();
  const std::string config = dir.path() + "/client.toml";
  {
    std::ofstream out(config);
    out << "reproducible = true\n";
  }
  std::vector<std::string> args = test::ClientArgs(endpoint, 0, 10);
  args.insert(args.end(), {"--config", config});
  test::Process client(test::BinPath("fl-client"), args, dir.path() + "/client.log");
  EXPECT_EQ(server.Wait(120), 0) << server.Log();
  EXPECT_NE(server.Log().find("reproducible: kernels pinned"), std::string::npos) << server.Log();
  EXPECT_TRUE(client.WaitForLog("reproducible: kernels pinned", 30)) << client.Log();
  EXPECT_NE(client.Log().find("round 1: trained"), std::string::npos) << client.Log();
}

}  // namespace
}  // namespace fl
