// Heterogeneous devices in the simulator ([devices], experiments/sim/sim_config.h).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "common/file_util.h"
#include "experiments/sim/sim_config.h"
#include "tests/test_util.h"

namespace fl {
namespace {

// No [devices] section: every device as fast as this machine. Stragglers:
// exactly round(fraction x clients) of them, each `straggler_slowdown` times
// its log-normal draw; the median device is this machine (sigma puts half of
// them at 1); the same seed gives the same fleet, another seed another one.
TEST(DeviceSlowdownsTest, LogNormalWithStragglers) {
  SimConfig c;
  c.clients = 100;
  EXPECT_EQ(DeviceSlowdowns(c), std::vector<double>(100, 1.0));
  c.straggler_fraction = 0.3;
  c.straggler_slowdown = 10;
  auto s = DeviceSlowdowns(c);
  EXPECT_EQ(std::count(s.begin(), s.end(), 10.0), 30);
  EXPECT_EQ(std::count(s.begin(), s.end(), 1.0), 70);
  c.slowdown_sigma = 0.5;
  s = DeviceSlowdowns(c);
  EXPECT_EQ(s, DeviceSlowdowns(c));
  EXPECT_EQ(std::count_if(s.begin(), s.end(), [](double v) { return v >= 10; }), 30);
  const auto at_one = std::count(s.begin(), s.end(), 1.0);
  // About half of the 70 others: Binomial(70, 1/2) is 35 +- 4.2, so 20 and 50
  // are 3.6 standard deviations away. Seeded.
  EXPECT_GT(at_one, 20);
  EXPECT_LT(at_one, 50);
  EXPECT_LT(*std::max_element(s.begin(), s.end()), 10 * std::exp(0.5 * 4));
  c.seed = 2;
  EXPECT_NE(DeviceSlowdowns(c), s);
}

// The [devices] keys are read, written back with the config, and checked
// (an unknown key when read, a value out of range by ValidateSimConfig).
TEST(DeviceSlowdownsTest, ConfigKeysAndTheirBounds) {
  test::TempDir dir;
  const std::string path = dir.path() + "/c.toml";
  ASSERT_FL_OK(WriteFileAtomic(path,
                               "[devices]\nslowdown_sigma = 0.5\nstraggler_fraction = 0.3\n"
                               "straggler_slowdown = 10.0\ndropout = 0.1\n"));
  SimConfig c;
  ASSERT_FL_OK(LoadSimConfig(path, &c));
  EXPECT_EQ(c.slowdown_sigma, 0.5);
  EXPECT_EQ(c.straggler_fraction, 0.3);
  EXPECT_EQ(c.dropout, 0.1);
  ASSERT_FL_OK(WriteFileAtomic(path, SimConfigToToml(c)));
  SimConfig back;
  ASSERT_FL_OK(LoadSimConfig(path, &back));
  EXPECT_EQ(back.dropout, 0.1);
  for (const char* bad : {"dropout = 1.0", "straggler_fraction = 1.5", "straggler_slowdown = 0.5",
                          "slowdown_sigma = -1.0", "stragglers = 0.3"}) {
    ASSERT_FL_OK(WriteFileAtomic(path, std::string("[devices]\n") + bad + "\n"));
    SimConfig b;
    Status st = LoadSimConfig(path, &b);
    if (st.ok()) st = ValidateSimConfig(b);
    EXPECT_FALSE(st.ok()) << bad;
    EXPECT_NE(st.ToString().find("devices."), std::string::npos) << st.ToString();
  }
}

TEST(DeviceSlowdownsTest, AsyncConfigKeysAndTheirBounds) {
  test::TempDir dir;
  const std::string path = dir.path() + "/c.toml";
  ASSERT_FL_OK(WriteFileAtomic(path,
                               "[federation]\nclients = 20\nmode = \"async\"\nconcurrency = 8\n"
                               "buffer = 4\nstaleness_exponent = 1.0\nmax_staleness = 3\n"));
  SimConfig c;
  ASSERT_FL_OK(LoadSimConfig(path, &c));
  ASSERT_FL_OK(ValidateSimConfig(c));
  EXPECT_EQ(c.mode, "async");
  EXPECT_EQ(c.concurrency, 8);
  EXPECT_EQ(c.buffer, 4);
  EXPECT_EQ(c.staleness_exponent, 1.0);
  EXPECT_EQ(c.max_staleness, 3);
  ASSERT_FL_OK(WriteFileAtomic(path, SimConfigToToml(c)));
  SimConfig back;
  ASSERT_FL_OK(LoadSimConfig(path, &back));
  EXPECT_EQ(back.mode, "async");
  EXPECT_EQ(back.buffer, 4);
  for (const char* bad :
       {"mode = \"fedbuff\"", "mode = \"async\"\nconcurrency = 0",
        "mode = \"async\"\nconcurrency = 21", "mode = \"async\"\nbuffer = 9\nconcurrency = 8"}) {
    ASSERT_FL_OK(WriteFileAtomic(path, std::string("[federation]\nclients = 20\n") + bad + "\n"));
    SimConfig b;
    Status st = LoadSimConfig(path, &b);
    if (st.ok()) st = ValidateSimConfig(b);
    EXPECT_FALSE(st.ok()) << bad;
    EXPECT_NE(st.ToString().find("federation."), std::string::npos) << st.ToString();
  }
}

}  // namespace
// A mistyped partition is refused when the config is checked, before a run
// touches its --out folder; the schemes fl-sim knows pass.
TEST(SimConfigTest, AnUnknownPartitionIsRefusedByTheCheck) {
  for (const char* ok : {"iid", "shards", "dirichlet", "folders", "column"}) {
    SimConfig c;
    c.partition = ok;
    SCOPED_TRACE(ok);
    EXPECT_FL_OK(ValidateSimConfig(c));
  }
  SimConfig c;
  c.partition = "shard";
  const Status st = ValidateSimConfig(c);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.ToString().find("data.partition"), std::string::npos) << st.ToString();
  EXPECT_NE(st.ToString().find("'shard'"), std::string::npos) << st.ToString();
}

}  // namespace fl
