// Heterogeneous devices in the simulator, and fl-sim's settings
// (experiments/sim/sim_config.h).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "common/file_util.h"
#include "experiments/sim/sim_config.h"
#include "server/flags.h"
#include "tests/test_util.h"

namespace fl {
namespace {

// No device settings: every device as fast as this machine. Stragglers:
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
  c.server.seed = 2;
  EXPECT_NE(DeviceSlowdowns(c), s);
}

// fl-sim's command line: `args`, with a config file holding `toml` when it
// is not empty.
Status Parse(std::vector<std::string> args, SimCommandLine* line, const std::string& toml = "") {
  test::TempDir dir;
  if (!toml.empty()) {
    const std::string path = dir.path() + "/c.toml";
    FL_RETURN_IF_ERROR(WriteFileAtomic(path, toml));
    args.insert(args.begin(), {"--config", path});
  }
  return ParseSimFlags(args, line);
}

// The devices' keys are read from flags and files under fl-client's names
// (--slowdown-sigma, --dropout, ...), written back in the effective config
// (which reads back the same), and checked: a value out of range, a key that
// names no flag, a key fl-sim's config files had before (with its new name).
TEST(DeviceSlowdownsTest, ConfigKeysAndTheirBounds) {
  SimCommandLine line;
  ASSERT_FL_OK(Parse({"--straggler-fraction", "0.3"}, &line,
                     "slowdown-sigma = 0.5\nstraggler_fraction = 0.2\n"
                     "straggler-slowdown = 10.0\ndropout = 0.1\n"));
  const SimConfig& c = line.config;
  EXPECT_EQ(c.slowdown_sigma, 0.5);
  EXPECT_EQ(c.straggler_fraction, 0.3);  // the flag over the file
  EXPECT_EQ(c.dropout, 0.1);
  SimCommandLine back;
  ASSERT_FL_OK(Parse({}, &back, line.effective));
  EXPECT_EQ(back.config.dropout, 0.1);
  EXPECT_EQ(back.config.straggler_fraction, 0.3);
  EXPECT_EQ(back.effective, line.effective);
  const std::pair<const char*, const char*> refused[] = {
      {"dropout = 1.0", "dropout"},
      {"straggler-fraction = 1.5", "straggler-fraction"},
      {"straggler-slowdown = 0.5", "straggler-slowdown"},
      {"slowdown-sigma = -1.0", "slowdown-sigma"},
      {"stragglers = 0.3", "unknown key 'stragglers'"},
      {"[devices]\ndropout = 0.1", "'devices.dropout' is now 'dropout'"},
  };
  for (const auto& [toml, message] : refused) {
    SimCommandLine b;
    const Status st = Parse({}, &b, std::string(toml) + "\n");
    EXPECT_FALSE(st.ok()) << toml;
    EXPECT_NE(st.ToString().find(message), std::string::npos) << st.ToString();
  }
}

// The asynchronous settings under fl-server's names, and the checks that
// need the number of virtual clients.
TEST(DeviceSlowdownsTest, AsyncConfigKeysAndTheirBounds) {
  SimCommandLine line;
  ASSERT_FL_OK(Parse({}, &line,
                     "clients = 20\nmode = \"async\"\nconcurrency = 8\nbuffer = 4\n"
                     "staleness-exponent = 1.0\nmax-staleness = 3\n"));
  const ServerOptions& s = line.config.server;
  EXPECT_EQ(s.mode, "async");
  EXPECT_EQ(s.async.concurrency, 8);
  EXPECT_EQ(s.async.buffer, 4);
  EXPECT_EQ(s.async.staleness_exponent, 1.0);
  EXPECT_EQ(s.async.max_staleness, 3);
  SimCommandLine back;
  ASSERT_FL_OK(Parse({}, &back, line.effective));
  EXPECT_EQ(back.config.server.mode, "async");
  EXPECT_EQ(back.config.server.async.buffer, 4);
  const std::pair<const char*, const char*> refused[] = {
      {"mode = \"fedbuff\"", "--mode"},
      {"mode = \"async\"\nconcurrency = 21", "--concurrency: must be at most --clients"},
      {"[federation]\nmax_staleness = 3", "'federation.max_staleness' is now 'max-staleness'"},
  };
  for (const auto& [toml, message] : refused) {
    SimCommandLine b;
    const Status st = Parse({}, &b, "clients = 20\n" + std::string(toml) + "\n");
    EXPECT_FALSE(st.ok()) << toml;
    EXPECT_NE(st.ToString().find(message), std::string::npos) << st.ToString();
  }
}

// One name for a setting in fl-server and fl-sim: every run setting a
// checkpoint records (the schema's, server/flags.h) is a flag of fl-sim, and
// the server's options fl-sim builds are the ones its flags say.
TEST(SimConfigTest, TheServersFlagsAreFlSims) {
  SimCommandLine line;
  ASSERT_FL_OK(Parse({"--strategy",
                      "fedadam",
                      "--beta1",
                      "0.8",
                      "--lr-decay",
                      "0.9",
                      "--no-error-feedback",
                      "--downlink",
                      "fp16",
                      "--dp-noise-multiplier",
                      "0.5",
                      "--dp-adaptive-clip",
                      "--deadline",
                      "30",
                      "--codec",
                      "sign",
                      "--partition",
                      "column",
                      "--group-column",
                      "user",
                      "--no-eval",
                      "--data",
                      "rows.csv"},
                     &line, "[dp]\nclip = 2.0\n"));
  const ServerOptions& s = line.config.server;
  EXPECT_EQ(s.strategy.name, "fedadam");
  EXPECT_EQ(s.strategy.beta1, 0.8);
  EXPECT_EQ(s.lr_decay, 0.9);
  EXPECT_FALSE(s.train.error_feedback);
  EXPECT_EQ(s.downlink, wire::ValueFormat::kFp16);
  EXPECT_EQ(s.privacy.noise_multiplier, 0.5);
  EXPECT_EQ(s.privacy.clip, 2.0);
  EXPECT_TRUE(s.privacy.adaptive_clip);
  EXPECT_EQ(s.round_deadline_seconds, 30);
  EXPECT_EQ(s.train.uplink_bits, 1);  // --codec sign's own width
  EXPECT_EQ(s.data.group_column, "user");
  // --no-eval leaves --data alone: it is the clients' training data.
  EXPECT_FALSE(line.config.evaluate);
  EXPECT_EQ(s.data.path, "rows.csv");
  const std::string settings = RunSettingsText(s);
  for (const char* line_of :
       {"--beta1=0.8\n", "--lr-decay=0.9\n", "--no-error-feedback=true\n", "--downlink=fp16\n",
        "--dp-clip=2\n", "--dp-adaptive-clip=true\n", "--codec=sign\n", "--uplink-bits=1\n"}) {
    EXPECT_NE(settings.find(line_of), std::string::npos) << line_of << " in\n" << settings;
  }
  EXPECT_EQ(settings.find("--krum-f"), std::string::npos) << settings;  // not fedadam's
  const std::string help = SimHelp();
  size_t start = 0;
  while (start < settings.size()) {
    const size_t eq = settings.find('=', start);
    const std::string flag = settings.substr(start, eq - start);
    EXPECT_NE(help.find(flag + " "), std::string::npos) << flag << " is not a flag of fl-sim";
    start = settings.find('\n', eq) + 1;
  }
}

}  // namespace
// A mistyped partition is refused when the config is checked, before a run
// touches its --out folder; the schemes fl-sim knows pass.
TEST(SimConfigTest, AnUnknownPartitionIsRefusedByTheCheck) {
  for (const char* ok : {"iid", "shards", "dirichlet", "folders", "column"}) {
    SimConfig c;
    c.partition = ok;
    c.server.data.group_column = "device";
    SCOPED_TRACE(ok);
    EXPECT_FL_OK(ValidateSimConfig(c));
  }
  SimConfig c;
  c.partition = "shard";
  const Status st = ValidateSimConfig(c);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.ToString().find("--partition"), std::string::npos) << st.ToString();
  EXPECT_NE(st.ToString().find("'shard'"), std::string::npos) << st.ToString();
}

}  // namespace fl
