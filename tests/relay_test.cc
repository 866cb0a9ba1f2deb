// Relay aggregators as separate processes over tcp://127.0.0.1: one root
// fl-server, two relays (fl-server --parent) and eight devices: fl-client
// processes, or where the devices are not what a test is about (the exact
// sums) fl-client's session and trainer as threads of the test
// (tests/device_threads.h).
//   - The root's model after 2 rounds is the flat run's (the same eight
//     devices straight at one server, same seed), bit for bit: relays hand
//     up exact sums (common/fixed_point.h).
//   - A relay killed mid-round loses its devices' updates for that round only;
//     its devices, pointed at both relays, fail over and train under the other.
//   - A relay that claims ten times its devices' weight is refused
//     (relay_weight) every round, and the root carries on with the honest one.
#include "relay/relay.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <sstream>

#include "crypto/message.h"
#include "crypto/model_file.h"
#include "server/checkpoint.h"
#include "server/server.h"
#include "server/torch_runtime.h"
#include "tests/device_threads.h"
#include "tests/federation_util.h"
#include "transport/simulated_network.h"

namespace fl {
namespace {

const std::string kServer = test::BinPath("fl-server");
const std::string kClient = test::BinPath("fl-client");
constexpr int kDevices = 8;
// Each device holds one of kShards iid shards of MNIST (938 examples): what
// these tests check, exact sums and who takes part, does not need more.
constexpr int kShards = 64;
// PyTorch's default initialisation draws the 2NN's weights within
// 1/sqrt(fan_in), at most 1/sqrt(200) = 0.0707: a model with a larger value
// has moved, so was trained.
constexpr double kLargestInitial = 0.0708;

std::vector<std::string> Join(std::vector<std::string> a, const std::vector<std::string>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// `args` with the flag/value pairs of `pairs`: a flag already there gets the
// new value, others are added ("--flag=value" stands alone).
std::vector<std::string> With(std::vector<std::string> args,
                              const std::vector<std::string>& pairs) {
  for (size_t i = 0; i < pairs.size(); i += 2) {
    if (pairs[i].find('=') != std::string::npos) {
      args.push_back(pairs[i--]);
      continue;
    }
    if (i + 1 >= pairs.size()) break;
    auto at = std::find(args.begin(), args.end(), pairs[i]);
    if (at != args.end() && at + 1 != args.end()) {
      *(at + 1) = pairs[i + 1];
    } else {
      args.insert(args.end(), {pairs[i], pairs[i + 1]});
    }
  }
  return args;
}

// The federation's settings, shared by the flat server and the root.
std::vector<std::string> RootArgs(const std::string& out, int rounds, int min_clients) {
  return {"--bind",
          "tcp://127.0.0.1:*",
          "--model",
          "mnist_2nn",
          "--rounds",
          std::to_string(rounds),
          "--min-clients",
          std::to_string(min_clients),
          "--fraction",
          "1",
          "--lr",
          "0.01",
          "--uplink-bits",
          "32",
          "--seed",
          "7",
          "--deadline",
          "60",
          "--client-timeout",
          "3",
          "--no-eval",
          "--out",
          out,
          "--linger",
          "0.5",
          "--insecure"};
}

std::vector<std::string> RelayArgs(const std::string& parent) {
  return {"--parent",         parent,      "--bind",        "tcp://127.0.0.1:*",
          "--model",          "mnist_2nn", "--min-clients", "4",
          "--fraction",       "1",         "--linger",      "0.5",
          "--client-timeout", "3",         "--insecure"};
}

// Device `i` of eight at `servers` (comma-separated: failover).
std::unique_ptr<test::Process> Device(const std::string& servers, int i, const std::string& dir) {
  return std::make_unique<test::Process>(kClient, test::ClientArgs(servers, i, kShards),
                                         dir + "/c" + std::to_string(i) + ".log");
}

// fl-keygen --out FOLDER --name NAME (its log in LOG_DIR); true when it made
// the identity.
bool Keygen(const std::string& folder, const std::string& name, const std::string& log_dir) {
  test::Process p(test::BinPath("fl-keygen"), {"--out", folder, "--name", name},
                  log_dir + "/keygen-" + name + ".log");
  return p.Wait(30) == 0;
}

// A device as deployed under a relay: its own identity (`key`), the relay's
// key pinned (`relay_pub`), trains only on the model the root signed
// (`root_pub`); IID shard `i` of `n`.
std::unique_ptr<test::Process> EnrolledDevice(const std::string& relay,
                                              const std::string& relay_pub, const std::string& key,
                                              const std::string& root_pub, int i, int n,
                                              const std::string& log) {
  return std::make_unique<test::Process>(kClient,
                                         std::vector<std::string>{"--server",
                                                                  relay,
                                                                  "--server-key",
                                                                  relay_pub,
                                                                  "--key",
                                                                  key,
                                                                  "--root-key",
                                                                  root_pub,
                                                                  "--data",
                                                                  test::MnistDir(),
                                                                  "--partition",
                                                                  "iid",
                                                                  "--num-partitions",
                                                                  std::to_string(n),
                                                                  "--partition-index",
                                                                  std::to_string(i),
                                                                  "--heartbeat",
                                                                  "0.3",
                                                                  "--server-timeout",
                                                                  "5"},
                                         log);
}

// The participants column of rounds.csv, one entry per row.
std::vector<int> Participants(const std::string& csv_path) {
  std::ifstream in(csv_path);
  std::string line;
  std::vector<int> out;
  std::getline(in, line);  // header
  while (std::getline(in, line)) {
    std::istringstream row(line);
    std::string round, participants;
    std::getline(row, round, ',');
    std::getline(row, participants, ',');
    out.push_back(std::stoi(participants));
  }
  return out;
}

// A root and two relays; returns the relays' endpoints (empty on failure).
struct Tier {
  std::unique_ptr<test::Process> root;
  std::vector<std::unique_ptr<test::Process>> relays;
  std::vector<std::string> endpoints;
  std::vector<std::unique_ptr<test::Process>> devices;
  // The root and both relays came up.
  bool Up() const {
    return endpoints.size() == 2 && !endpoints[0].empty() && !endpoints[1].empty();
  }
  // Devices 0..n-1 of eight; device i under relay i / 4 unless `servers`
  // says otherwise (comma-separated: failover).
  void AddDevices(const std::string& dir, int n,
                  const std::function<std::string(int)>& servers = nullptr) {
    for (int i = 0; i < n; ++i) {
      devices.push_back(Device(servers ? servers(i) : endpoints[i / 4], i, dir));
    }
  }
  // Devices 0..n-1 of eight as threads of the test, device i under relay i / 4.
  void AddDeviceThreads(int n) {
    for (int first = 0; first < n; first += 4) {
      device_threads.push_back(std::make_unique<test::DeviceThreads>(
          endpoints[static_cast<size_t>(first / 4)], first, std::min(4, n - first), kShards));
    }
  }
  std::vector<std::unique_ptr<test::DeviceThreads>> device_threads;
};

Tier StartTier(const std::string& dir, int rounds, int min_clients,
               const std::vector<std::string>& root_extra,
               const std::vector<std::vector<std::string>>& relay_extra) {
  Tier t;
  t.root = std::make_unique<test::Process>(
      kServer,
      With(RootArgs(dir + "/root", rounds, min_clients), Join({"--relays", "any"}, root_extra)),
      dir + "/root.log");
  const std::string parent = test::StartedEndpoint(*t.root);
  if (parent.empty()) return t;
  for (size_t k = 0; k < relay_extra.size(); ++k) {
    t.relays.push_back(
        std::make_unique<test::Process>(kServer, With(RelayArgs(parent), relay_extra[k]),
                                        dir + "/relay" + std::to_string(k) + ".log"));
    t.endpoints.push_back(test::StartedEndpoint(*t.relays.back(), "relaying "));
  }
  // Both relays registered with the root before any device connects, so the
  // root's first round selects both.
  for (int i = 0; i < 600 && test::CountOf(t.root->Log(), "registered") < 2; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return t;
}

// Largest |a - b| over two models' values (and the largest |a|).
double LargestDifference(const ModelState& a, const ModelState& b, double* scale) {
  double largest = 0;
  *scale = 0;
  EXPECT_EQ(a.tensors.size(), b.tensors.size());
  for (size_t i = 0; i < std::min(a.tensors.size(), b.tensors.size()); ++i) {
    const auto& x = a.tensors[i].values;
    const auto& y = b.tensors[i].values;
    EXPECT_EQ(x.size(), y.size());
    for (size_t k = 0; k < std::min(x.size(), y.size()); ++k) {
      largest = std::max(largest, std::fabs(double{x[k]} - double{y[k]}));
      *scale = std::max(*scale, std::fabs(double{x[k]}));
    }
  }
  return largest;
}

// The flat run's and the relayed run's models after round 1 and at the end,
// as versions (the SHA-256 of each model's canonical serialization), and
// their largest difference (printed: what a failure would show).
struct FlatAndRelayed {
  std::array<uint8_t, 32> flat1{}, relayed1{}, flat2{}, relayed2{};
  double scale{0};  // the largest |value| of round 1's model
};

// Runs the flat federation and the tiered one with the root's `strategy`
// flags. `*logs` (when given) gets the flat server's log and the root's.
FlatAndRelayed RunFlatAndRelayed(const std::vector<std::string>& strategy, int root_min_clients = 2,
                                 std::pair<std::string, std::string>* logs = nullptr) {
  FlatAndRelayed out;
  test::TempDir dir;
  constexpr int kRounds = 2;
  {
    test::Process flat(kServer, With(RootArgs(dir.path() + "/flat", kRounds, kDevices), strategy),
                       dir.path() + "/flat.log");
    const std::string endpoint = test::StartedEndpoint(flat);
    EXPECT_FALSE(endpoint.empty()) << flat.Log();
    if (endpoint.empty()) return out;
    test::DeviceThreads devices(endpoint, 0, kDevices, kShards);
    EXPECT_EQ(flat.Wait(240), 0) << flat.Log();
    if (logs) logs->first = flat.Log();
  }
  {
    Tier t = StartTier(dir.path(), kRounds, root_min_clients, strategy, {{}, {}});
    EXPECT_TRUE(t.Up()) << t.root->Log();
    if (!t.Up()) return out;
    // Device i under relay i / 4.
    test::DeviceThreads first(t.endpoints[0], 0, kDevices / 2, kShards);
    test::DeviceThreads second(t.endpoints[1], kDevices / 2, kDevices / 2, kShards);
    EXPECT_EQ(t.root->Wait(240), 0) << t.root->Log();
    for (auto& r : t.relays) EXPECT_EQ(r->Wait(30), 0) << r->Log();
    if (logs) logs->second = t.root->Log() + t.relays[0]->Log();
    EXPECT_EQ(Participants(dir.path() + "/root/rounds.csv"), std::vector<int>(kRounds, 2));
  }
  auto flat1 = ReadCheckpoint(dir.path() + "/flat/checkpoint.fl.1");
  auto tiered1 = ReadCheckpoint(dir.path() + "/root/checkpoint.fl.1");
  auto flat = ReadModelFile(dir.path() + "/flat/global.flm");
  auto tiered = ReadModelFile(dir.path() + "/root/global.flm");
  EXPECT_FL_OK(flat1.status());
  EXPECT_FL_OK(tiered1.status());
  EXPECT_FL_OK(flat.status());
  EXPECT_FL_OK(tiered.status());
  if (!flat1.ok() || !tiered1.ok() || !flat.ok() || !tiered.ok()) return out;
  EXPECT_EQ(flat1->round, 1u);
  EXPECT_EQ(tiered1->round, 1u);
  out.flat1 = ModelVersion(flat1->model);
  out.relayed1 = ModelVersion(tiered1->model);
  out.flat2 = ModelVersion(*flat);
  out.relayed2 = ModelVersion(*tiered);
  const double one = LargestDifference(flat1->model, tiered1->model, &out.scale);
  double unused = 0;
  const double two = LargestDifference(*flat, *tiered, &unused);
  std::printf(
      "%s: round 1: largest |flat - relayed| %.3g (largest |value| %.3g), versions %s %s; "
      "round 2: %.3g, versions %s %s\n",
      strategy.empty()              ? "fedavg"
      : strategy[0] == "--strategy" ? strategy[1].c_str()
                                    : "central DP",
      one, out.scale, ShortVersion(out.flat1).c_str(), ShortVersion(out.relayed1).c_str(), two,
      ShortVersion(out.flat2).c_str(), ShortVersion(out.relayed2).c_str());
  return out;
}

// The same devices train the same model with the same seeds; each relay
// hands up the exact sum of its devices' weighted deltas (fixed point), the
// root adds the integers: the same sum as the flat server's, so the same
// model after round 1, bit for bit; round 2's devices then start from the
// same model, and end the same (docs/protocol.md, "Exact sums").
TEST(RelayTest, TwoRelaysEndWhereTheFlatRunEnds) {
  const FlatAndRelayed r = RunFlatAndRelayed({});
  EXPECT_GT(r.scale, kLargestInitial);  // a trained model, not two empty ones
  EXPECT_EQ(r.relayed1, r.flat1);
  EXPECT_EQ(r.relayed2, r.flat2);
}

// A server optimizer on the root steps from the exact mean, which relays
// leave as it is: FedAdam over two relays is FedAdam over their eight
// devices, bit for bit.
TEST(RelayTest, FedAdamOnTheRootComposesWithRelays) {
  const FlatAndRelayed r = RunFlatAndRelayed({"--strategy", "fedadam"});
  EXPECT_GT(r.scale, kLargestInitial);  // (FedAdam's first step is small: lr 0.01)
  EXPECT_EQ(r.relayed1, r.flat1);
  EXPECT_EQ(r.relayed2, r.flat2);
}

// The privacy lines of a server's log ("privacy spent: epsilon E at delta D
// (clip C)"), one per round.
std::vector<std::string> PrivacyLines(const std::string& log) {
  std::vector<std::string> out;
  for (size_t at = log.find("privacy spent"); at != std::string::npos;
       at = log.find("privacy spent", at + 1)) {
    out.push_back(log.substr(at, log.find('\n', at) - at));
  }
  return out;
}

// Central DP through relays: each relay Poisson-samples its devices at the
// root's rate (1 here, so every run samples everyone), clips each device's
// delta to the root's clip and hands up their exact sum, each weighing one,
// with the count within the clip; the root adds the relays' partials as their
// devices and releases the noise (seeded from --seed: no key) over the
// expected count, q x the devices the relays serve. So the relayed run
// releases what the flat one does: the same epsilon, the same adaptive clip
// (moved by the same noisy count), and the same model, bit for bit. The
// devices send 8-bit deltas; the relays' sums are exact whatever the codec.
// Under privacy the root's --min-clients counts the relays' devices.
TEST(RelayTest, CentralPrivacyThroughRelaysIsTheFlatPrivateRun) {
  std::pair<std::string, std::string> logs;
  const FlatAndRelayed r = RunFlatAndRelayed({"--dp-adaptive-clip=true", "--dp-noise-multiplier",
                                              "0.5", "--dp-clip", "0.5", "--uplink-bits", "8"},
                                             kDevices, &logs);
  const std::vector<std::string> flat = PrivacyLines(logs.first);
  const std::vector<std::string> relayed = PrivacyLines(logs.second);
  ASSERT_EQ(flat.size(), 2u) << logs.first;
  EXPECT_EQ(relayed, flat) << logs.second;
  EXPECT_NE(logs.second.find("the root's rounds are private"), std::string::npos) << logs.second;
  EXPECT_GT(r.scale, kLargestInitial);
  EXPECT_EQ(r.relayed1, r.flat1);
  EXPECT_EQ(r.relayed2, r.flat2);
}

// Root -> relay -> relay -> four devices against the flat run of the same
// four devices, one round, with the root's `extra` flags: true when the two
// models are the same version (their largest difference is printed, and the
// largest value goes in `*scale`); the flat server's and the three tiers'
// logs in `*flat_log` and `*tiers_log`.
bool RunStackedAndFlat(const std::vector<std::string>& extra, double* scale, std::string* flat_log,
                       std::string* tiers_log) {
  test::TempDir dir;
  const std::string d = dir.path();
  constexpr int kFour = 4;
  {
    test::Process flat(kServer, With(RootArgs(d + "/flat", 1, kFour), extra), d + "/flat.log");
    const std::string endpoint = test::StartedEndpoint(flat);
    EXPECT_FALSE(endpoint.empty()) << flat.Log();
    if (endpoint.empty()) return false;
    test::DeviceThreads devices(endpoint, 0, kFour, kShards);
    EXPECT_EQ(flat.Wait(120), 0) << flat.Log();
    *flat_log = flat.Log();
  }
  // (Under privacy the root's --min-clients counts devices: the four.)
  const bool private_run =
      std::find(extra.begin(), extra.end(), "--dp-noise-multiplier") != extra.end();
  test::Process root(
      kServer,
      With(RootArgs(d + "/root", 1, private_run ? kFour : 1), Join({"--relays", "any"}, extra)),
      d + "/root.log");
  const std::string top = test::StartedEndpoint(root);
  EXPECT_FALSE(top.empty()) << root.Log();
  if (top.empty()) return false;
  test::Process mid(kServer, With(RelayArgs(top), {"--min-clients", "1", "--relays", "any"}),
                    d + "/mid.log");
  const std::string middle = test::StartedEndpoint(mid, "relaying ");
  EXPECT_FALSE(middle.empty()) << mid.Log();
  if (middle.empty()) return false;
  test::Process leaf(kServer, RelayArgs(middle), d + "/leaf.log");
  const std::string bottom = test::StartedEndpoint(leaf, "relaying ");
  EXPECT_FALSE(bottom.empty()) << leaf.Log();
  if (bottom.empty()) return false;
  test::DeviceThreads devices(bottom, 0, kFour, kShards);
  EXPECT_EQ(root.Wait(120), 0) << root.Log();
  EXPECT_NE(leaf.Log().find("round 1: 4/4 updates"), std::string::npos) << leaf.Log();
  EXPECT_NE(mid.Log().find("round 1: 1/1 updates"), std::string::npos) << mid.Log();
  *tiers_log = root.Log() + mid.Log() + leaf.Log();
  auto flat = ReadModelFile(d + "/flat/global.flm");
  auto stacked = ReadModelFile(d + "/root/global.flm");
  EXPECT_FL_OK(flat.status());
  EXPECT_FL_OK(stacked.status());
  if (!flat.ok() || !stacked.ok()) return false;
  const double diff = LargestDifference(*flat, *stacked, scale);
  std::printf("stacked%s: round 1: largest |flat - relayed| %.3g (largest |value| %.3g)\n",
              extra.empty() ? "" : ", central DP", diff, *scale);
  return ModelVersion(*flat) == ModelVersion(*stacked);
}

// Relays stack: root -> relay -> relay -> 4 devices. The middle relay takes
// the lower one's partial (4 devices) as a participant that may send
// partials, counts its devices as its own contributors, and hands the root
// the exact sum it got: round 1 is the flat run's model, bit for bit.
TEST(RelayTest, StackedRelaysEndWhereTheFlatRunEnds) {
  double scale = 0;
  std::string flat_log, tiers_log;
  EXPECT_TRUE(RunStackedAndFlat({}, &scale, &flat_log, &tiers_log));
  EXPECT_GT(scale, kLargestInitial);
}

// Central DP through two tiers: the middle relay takes the lower relay's
// private partial (the exact sum of its four clipped deltas, their count,
// the count within the clip) as four devices and hands up the same; the
// lower relay's device count reaches the root through the middle one's
// HELLO. The root releases what the flat private run does: the same epsilon
// and adaptive clip, the same model, bit for bit.
TEST(RelayTest, CentralPrivacyThroughStackedRelaysIsTheFlatPrivateRun) {
  double scale = 0;
  std::string flat_log, tiers_log;
  EXPECT_TRUE(RunStackedAndFlat(
      {"--dp-adaptive-clip=true", "--dp-noise-multiplier", "0.3", "--dp-clip", "0.5"}, &scale,
      &flat_log, &tiers_log));
  const std::vector<std::string> flat = PrivacyLines(flat_log);
  ASSERT_EQ(flat.size(), 1u) << flat_log;
  EXPECT_EQ(PrivacyLines(tiers_log), flat) << tiers_log;
  EXPECT_EQ(test::CountOf(tiers_log, "the root's rounds are private"), 2) << tiers_log;
  EXPECT_GT(scale, kLargestInitial);
}

TEST(RelayTest, AKilledRelayLosesItsDevicesForThatRoundOnly) {
  test::TempDir dir;
  // Rounds take a second or two: seven leave the killed relay's devices
  // (--server-timeout 2, then backoff) time to fail over on a loaded machine.
  constexpr int kRounds = 7;
  // The root goes on with whoever is live (one relay will be). Its first
  // round may start before the second relay registered; from round 2 on both
  // are in.
  Tier t = StartTier(dir.path(), kRounds, 1, {}, {{}, {}});
  ASSERT_TRUE(t.Up()) << t.root->Log();
  // Relay 1's devices know relay 0 too.
  t.AddDevices(dir.path(), kDevices, [&](int i) {
    return i < 4 ? t.endpoints[0] : t.endpoints[1] + "," + t.endpoints[0];
  });
  // Mid-round 3: relay 1 has its TASK and its devices are training.
  ASSERT_TRUE(t.relays[1]->WaitForLog("round 3: selected", 120)) << t.relays[1]->Log();
  t.relays[1]->Signal(SIGKILL);
  ASSERT_EQ(t.root->Wait(240), 0) << t.root->Log();
  const std::vector<int> rows = Participants(dir.path() + "/root/rounds.csv");
  ASSERT_EQ(rows.size(), static_cast<size_t>(kRounds));
  EXPECT_EQ(rows[1], 2);
  EXPECT_EQ(rows[2], 1);  // relay 0's partial; relay 1's devices lost this round
  EXPECT_EQ(rows[6], 1);
  const std::string log = t.root->Log();
  // The root noticed the closed connection, not the 60 s deadline.
  EXPECT_NE(log.find("closed its connection"), std::string::npos) << log;
  EXPECT_EQ(log.find("missed the 60 s deadline"), std::string::npos) << log;
  // Its devices failed over: relay 0 averaged all eight by the last round.
  EXPECT_NE(t.relays[0]->Log().find("round 7: 8/8 updates"), std::string::npos)
      << t.relays[0]->Log();
  EXPECT_GE(test::CountOf(t.devices[5]->Log(), "failing over to " + t.endpoints[0]), 1)
      << t.devices[5]->Log();
}

TEST(RelayTest, ARelayLyingAboutItsWeightIsRefused) {
  test::TempDir dir;
  constexpr int kRounds = 2;
  // 938 examples per device: a partial of 4 weighs 3,750, within 4 x 1,000;
  // the liar's 37,500 is not.
  Tier t = StartTier(dir.path(), kRounds, 2, {"--max-examples", "1000"},
                     {{}, {"--debug-relay-weight-factor", "10"}});
  ASSERT_TRUE(t.Up()) << t.root->Log();
  t.AddDeviceThreads(kDevices);
  ASSERT_EQ(t.root->Wait(240), 0) << t.root->Log();
  EXPECT_EQ(Participants(dir.path() + "/root/rounds.csv"), std::vector<int>(kRounds, 1));
  const std::string log = t.root->Log();
  EXPECT_NE(log.find("weight 37500 is not in 1..4000 (4 device(s) x --max-examples 1000)"),
            std::string::npos)
      << log;
  EXPECT_NE(log.find("relay_weight=2"), std::string::npos) << log;
}

// Within the absolute bound (default --max-examples: 4 x 1,000,000), a relay
// claiming 20 times its devices' weight is counted as --max-weight-ratio (10)
// times the median partial's weight per device, for each of its devices: the
// root treats relays' claims as it treats devices'.
TEST(RelayTest, ALyingRelayCountsAtMostTenTimesTheMedianRelay) {
  test::TempDir dir;
  constexpr int kRounds = 2;
  Tier t = StartTier(dir.path(), kRounds, 2, {}, {{}, {"--debug-relay-weight-factor", "20"}});
  ASSERT_TRUE(t.Up()) << t.root->Log();
  t.AddDeviceThreads(kDevices);
  ASSERT_EQ(t.root->Wait(240), 0) << t.root->Log();
  EXPECT_EQ(Participants(dir.path() + "/root/rounds.csv"), std::vector<int>(kRounds, 2));
  const std::string log = t.root->Log();
  // 4 devices of 938 examples (937.5 on average): 75,000 claimed, 10 x 938 x 4
  // counted.
  EXPECT_EQ(test::CountOf(log, "claims 75000 examples for 4 devices; counted as 37500"), kRounds)
      << log;
}

// A relay none of whose devices answers (here: it has none) tells its parent
// at once with an empty partial, which the root refuses (relay_empty): the
// round goes on with the other relay's partial instead of waiting for the
// deadline. In simulated time (transport/simulated_network.h): the root, both
// relays (a relay's server and its session to the root) and relay 0's four
// devices are threads of this test over an in-memory network, so the 20 s
// deadline and relay 1's wait for devices cost no wall time.
TEST(RelayTest, ARelayWithoutAnswersDoesNotHoldTheRoundUp) {
  test::TempDir dir;
  constexpr int kRounds = 2;
  auto net = std::make_shared<transport::SimulatedNetwork>();
  // As fl-server's flags in RootArgs and RelayArgs set them.
  ServerOptions root = test::SimulatedServerOptions(net.get(), "mnist_2nn", kRounds, 2);
  root.train.lr = 0.01;
  root.train.uplink_bits = 32;
  root.seed = 7;
  // Relay 1 waits for a device until half its window (0.8 x 20 s), then
  // runs with none.
  root.round_deadline_seconds = 20;
  root.client_timeout_seconds = 3;
  root.out_dir = dir.path() + "/root";
  root.done_linger_seconds = 2;
  root.relays_dir = "any";
  std::atomic<bool> stop{false};
  std::vector<std::unique_ptr<Relay>> relays;
  std::unique_ptr<test::DeviceThreads> devices;
  // This thread takes part until everyone is started (declared last, so an
  // early return leaves before the relays and devices are joined).
  std::optional<transport::SimulatedNetwork::Participation> setup(std::in_place, net.get());
  auto server = Server::Create(root, net, TorchRuntime());
  ASSERT_FL_OK(server);
  for (int k = 0; k < 2; ++k) {
    ServerOptions ro = test::SimulatedServerOptions(net.get(), "mnist_2nn", 1, 4);
    ro.done_linger_seconds = 2;
    ro.client_timeout_seconds = 3;
    auto relay = Relay::Create(ro, net, TorchRuntime());
    ASSERT_FL_OK(relay);
    RelayUplinkOptions uo;
    uo.parent = (*server)->endpoint();
    uo.insecure = true;
    uo.id = "relay" + std::to_string(k);
    uo.verbose = false;
    ASSERT_FL_OK((*relay)->Connect(uo, net));
    (*relay)->Start(&stop, nullptr);
    relays.push_back(std::move(relay).value());
  }
  // All four devices under relay 0.
  devices = std::make_unique<test::DeviceThreads>(relays[0]->endpoint(), 0, 4, kShards, net);
  test::ServerThread run(server->get(), net.get());
  setup.reset();  // this thread only waits from here on
  Result<ServerSummary> summary = run.Join();
  for (auto& r : relays) EXPECT_FL_OK(r->Join());
  ASSERT_FL_OK(devices->Join());
  ASSERT_FL_OK(summary);
  EXPECT_EQ(Participants(dir.path() + "/root/rounds.csv"), std::vector<int>(kRounds, 1));
  EXPECT_EQ(summary->rejected["relay_empty"], 2);
  // No round waited for its 20 s deadline, nor for relay 1's 16 s window: the
  // empty partial came after half of it.
  const auto rows = test::ReadRoundsCsv(dir.path() + "/root/rounds.csv");
  ASSERT_EQ(rows.size(), static_cast<size_t>(kRounds));
  for (const auto& row : rows) EXPECT_LT(row.seconds, 16.0) << "round " << row.round;
}

// A relay its parent refuses for good (started for another model) exits with
// an error naming the refusal, and does not tell its devices the federation
// is over: they stay up, waiting for a server.
TEST(RelayTest, ARelayItsParentRefusesFailsWithoutEndingItsDevices) {
  test::TempDir dir;
  test::Process root(kServer, RootArgs(dir.path() + "/root", 1, 1), dir.path() + "/root.log");
  const std::string parent = test::StartedEndpoint(root);
  ASSERT_FALSE(parent.empty()) << root.Log();
  std::vector<std::string> args = RelayArgs(parent);
  args[std::find(args.begin(), args.end(), "mnist_2nn") - args.begin()] = "mnist_cnn";
  test::Process relay(kServer, args, dir.path() + "/relay.log");
  const std::string endpoint = test::StartedEndpoint(relay, "relaying ");
  ASSERT_FALSE(endpoint.empty()) << relay.Log();
  auto device = Device(endpoint, 0, dir.path());
  EXPECT_EQ(relay.Wait(60), 1) << relay.Log();
  EXPECT_NE(relay.Log().find("wrong_architecture"), std::string::npos) << relay.Log();
  EXPECT_EQ(device->Wait(1), -1) << device->Log();  // still up
  EXPECT_EQ(device->Log().find("server says done"), std::string::npos) << device->Log();
}

// As deployed: CURVE, enrolled identities, signed messages; the root's relays
// enrolled in a folder of their own (--relays DIR), every device pinning its
// relay's key and the root's (--root-key). Relay 1 changes the root's model
// before handing it down and attaches the root's endorsement anyway: its
// devices refuse every TASK it sends, so its devices' updates never reach the
// root, while relay 0's devices train on the root's model each round.
TEST(RelayTest, DevicesTrainOnlyOnTheModelTheRootSigned) {
  test::TempDir dir;
  const std::string d = dir.path();
  auto keygen = [&](const std::string& folder, const std::string& name) {
    return Keygen(folder, name, d);
  };
  ASSERT_TRUE(keygen(d + "/keys", "root"));
  for (int k = 0; k < 2; ++k) {
    ASSERT_TRUE(keygen(d + "/relays", "relay" + std::to_string(k)));  // .pub enrolls it
    ASSERT_TRUE(keygen(d + "/dev", "dev" + std::to_string(2 * k)));
    ASSERT_TRUE(keygen(d + "/dev", "dev" + std::to_string(2 * k + 1)));
    std::filesystem::create_directories(d + "/enrolled" + std::to_string(k));
    for (int i : {2 * k, 2 * k + 1}) {
      const std::string name = "/dev" + std::to_string(i) + ".pub";
      std::filesystem::copy_file(d + "/dev" + name, d + "/enrolled" + std::to_string(k) + name);
    }
  }
  const std::vector<std::string> common = {
      "--model", "mnist_2nn", "--max-examples", "20000", "--client-timeout", "3", "--linger", "0.5"};
  test::Process root(kServer,
                     Join({"--bind", "tcp://127.0.0.1:*", "--key", d + "/keys/root.key", "--relays",
                           d + "/relays", "--rounds", "2", "--min-clients", "2", "--fraction", "1",
                           "--deadline", "10", "--no-eval", "--out", d + "/root"},
                          common),
                     d + "/root.log");
  const std::string parent = test::StartedEndpoint(root);
  ASSERT_FALSE(parent.empty()) << root.Log();
  std::vector<std::unique_ptr<test::Process>> relays;
  std::vector<std::string> endpoints;
  for (int k = 0; k < 2; ++k) {
    const std::string name = "relay" + std::to_string(k);
    std::vector<std::string> args = {"--parent",      parent,
                                     "--server-key",  d + "/keys/root.pub",
                                     "--key",         d + "/relays/" + name + ".key",
                                     "--bind",        "tcp://127.0.0.1:*",
                                     "--clients",     d + "/enrolled" + std::to_string(k),
                                     "--min-clients", "2",
                                     "--fraction",    "1"};
    if (k == 1) args.push_back("--debug-relay-tamper-model");
    relays.push_back(
        std::make_unique<test::Process>(kServer, Join(args, common), d + "/" + name + ".log"));
    endpoints.push_back(test::StartedEndpoint(*relays.back(), "relaying "));
    ASSERT_FALSE(endpoints.back().empty()) << relays.back()->Log();
  }
  // The relays' keys sit beside their .pub in relays/ here; fl-server reads
  // only *.pub from an enrollment folder.
  std::vector<std::unique_ptr<test::Process>> devices;
  for (int i = 0; i < 4; ++i) {
    const std::string relay = "relay" + std::to_string(i / 2);
    devices.push_back(EnrolledDevice(endpoints[i / 2], d + "/relays/" + relay + ".pub",
                                     d + "/dev/dev" + std::to_string(i) + ".key",
                                     d + "/keys/root.pub", i, kShards,
                                     d + "/c" + std::to_string(i) + ".log"));
  }
  ASSERT_EQ(root.Wait(120), 0) << root.Log();
  EXPECT_EQ(Participants(d + "/root/rounds.csv"), std::vector<int>({1, 1}));
  for (int i : {0, 1}) {
    EXPECT_NE(devices[i]->Log().find("round 2: trained"), std::string::npos) << devices[i]->Log();
    EXPECT_EQ(devices[i]->Log().find("not the root's"), std::string::npos) << devices[i]->Log();
  }
  for (int i : {2, 3}) {
    const std::string log = devices[i]->Log();
    EXPECT_NE(log.find("TASK refused: its model is not the root's (--root-key): the root's "
                       "endorsement is for another round or model"),
              std::string::npos)
        << log;
    EXPECT_EQ(log.find("trained in"), std::string::npos) << log;
  }
}

// The root's endorsement crosses two tiers, and an fp16 downlink with it:
// root (fp16, --key, --relays DIR) -> relay -> relay -> 2 devices pinning the
// root's key. Each relay sends the model down in the format it came in, so
// its version is still the one the root signed, and the devices train both
// rounds; as deployed, with CURVE and fl-keygen identities at every tier.
TEST(RelayTest, TheRootsEndorsementCrossesTwoTiersWithAnFp16Downlink) {
  test::TempDir dir;
  const std::string d = dir.path();
  auto keygen = [&](const std::string& folder, const std::string& name) {
    return Keygen(folder, name, d);
  };
  ASSERT_TRUE(keygen(d + "/keys", "root"));
  ASSERT_TRUE(keygen(d + "/mid-relays", "mid"));    // enrolled at the root
  ASSERT_TRUE(keygen(d + "/leaf-relays", "leaf"));  // enrolled at the middle relay
  for (int i = 0; i < 2; ++i) ASSERT_TRUE(keygen(d + "/devices", "dev" + std::to_string(i)));
  const std::vector<std::string> common = {
      "--model",          "mnist_2nn", "--max-examples", "40000", "--linger", "0.5",
      "--client-timeout", "3",         "--fraction",     "1",     "--bind",   "tcp://127.0.0.1:*"};
  test::Process root(kServer,
                     Join({"--key", d + "/keys/root.key", "--relays", d + "/mid-relays",
                           "--downlink", "fp16", "--rounds", "2", "--min-clients", "1",
                           "--deadline", "20", "--no-eval", "--out", d + "/root"},
                          common),
                     d + "/root.log");
  const std::string top = test::StartedEndpoint(root);
  ASSERT_FALSE(top.empty()) << root.Log();
  test::Process mid(
      kServer,
      Join({"--parent", top, "--server-key", d + "/keys/root.pub", "--key",
            d + "/mid-relays/mid.key", "--relays", d + "/leaf-relays", "--min-clients", "1"},
           common),
      d + "/mid.log");
  const std::string middle = test::StartedEndpoint(mid, "relaying ");
  ASSERT_FALSE(middle.empty()) << mid.Log();
  test::Process leaf(
      kServer,
      Join({"--parent", middle, "--server-key", d + "/mid-relays/mid.pub", "--key",
            d + "/leaf-relays/leaf.key", "--clients", d + "/devices", "--min-clients", "2"},
           common),
      d + "/leaf.log");
  const std::string bottom = test::StartedEndpoint(leaf, "relaying ");
  ASSERT_FALSE(bottom.empty()) << leaf.Log();
  std::vector<std::unique_ptr<test::Process>> devices;
  for (int i = 0; i < 2; ++i) {
    devices.push_back(EnrolledDevice(
        bottom, d + "/leaf-relays/leaf.pub", d + "/devices/dev" + std::to_string(i) + ".key",
        d + "/keys/root.pub", i, kShards, d + "/c" + std::to_string(i) + ".log"));
  }
  ASSERT_EQ(root.Wait(120), 0) << root.Log();
  EXPECT_EQ(Participants(d + "/root/rounds.csv"), std::vector<int>({1, 1}));
  // fp16 at the root: 2 bytes a value of the 2NN's 199,210 (fp32 would be 796,840).
  const auto rows = test::ReadRoundsCsv(d + "/root/rounds.csv");
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_LT(rows[0].download_bytes, 450000) << rows[0].download_bytes;
  EXPECT_NE(leaf.Log().find("round 2: 2/2 updates"), std::string::npos) << leaf.Log();
  for (auto& device : devices) {
    const std::string log = device->Log();
    EXPECT_NE(log.find("round 2: trained"), std::string::npos) << log;
    EXPECT_EQ(log.find("not the root's"), std::string::npos) << log;
  }
  EXPECT_EQ(mid.Log().find("not the one the root signed"), std::string::npos) << mid.Log();
  EXPECT_EQ(leaf.Log().find("not the one the root signed"), std::string::npos) << leaf.Log();
}

// A typo in a failover endpoint, or in a relay's --parent, is refused when
// the process starts, naming it, not found when a device first fails over.
TEST(RelayTest, AMalformedEndpointIsRefusedAtStart) {
  test::TempDir dir;
  test::Process device(kClient,
                       With(test::ClientArgs("tcp://127.0.0.1:5555", 0, kDevices),
                            {"--server", "tcp://127.0.0.1:5555,tcp://relay-b:60000x"}),
                       dir.path() + "/device.log");
  EXPECT_EQ(device.Wait(30), 2);
  EXPECT_NE(device.Log().find("--server: endpoint 'tcp://relay-b:60000x': port '60000x'"),
            std::string::npos)
      << device.Log();
  test::Process relay(kServer, RelayArgs("tcp://root"), dir.path() + "/relay.log");
  EXPECT_NE(relay.Wait(30), 0);
  EXPECT_NE(relay.Log().find("--parent: endpoint 'tcp://root'"), std::string::npos) << relay.Log();
}

}  // namespace
}  // namespace fl
