// What operators run: --config TOML files (common/cli_config.h), the
// Prometheus endpoint of a live fl-server (checked with promtool), and
// fl-plot. The Debian packages are tested by tests/package_test.sh.
#include <gtest/gtest.h>
#include <httplib.h>
#include <sys/wait.h>

#include <CLI/CLI.hpp>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <regex>
#include <thread>

#include "client/device_state.h"
#include "client/schedule.h"
#include "common/cli_config.h"
#include "common/file_util.h"
#include "common/progress.h"
#include "tests/federation_util.h"

namespace fl {
namespace {

const std::string kServer = test::BinPath("fl-server");
const std::string kClient = test::BinPath("fl-client");

// A tool's options, as fl-server declares them, with --config.
struct Tool {
  CLI::App app{"tool"};
  int rounds = 10;
  int min_clients = 2;
  double noise = 0;
  bool insecure = false;
  std::string server = "tcp://127.0.0.1:5555";
  std::vector<std::string> classes;
  Tool() {
    app.add_option("--rounds", rounds, "")->capture_default_str();
    app.add_option("--min-clients", min_clients, "")->capture_default_str();
    app.add_option("--dp-noise-multiplier", noise, "")->capture_default_str();
    app.add_flag("--insecure", insecure, "");
    app.add_option("--server", server, "")->capture_default_str();
    app.add_option("--classes", classes, "");
    app.add_option("--debug-hook", rounds, "")->group("");  // a test hook
    AddConfigFile(&app);
  }
  // Parses `args` (after the program name); the error's message, or "".
  std::string Parse(std::vector<std::string> args) {
    args.insert(args.begin(), "tool");
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    try {
      app.parse(static_cast<int>(argv.size()), argv.data());
    } catch (const CLI::ParseError& e) {
      return e.what();
    }
    return "";
  }
};

std::string WriteConfig(const test::TempDir& dir, const std::string& name,
                        const std::string& text) {
  const std::string path = dir.path() + "/" + name;
  EXPECT_FL_OK(WriteFileAtomic(path, text));
  return path;
}

// Every flag has a key (its long name, '_' for '-', a table prefixing its
// keys), flags on the command line override the file, lists are arrays.
TEST(ConfigFileTest, KeysAreFlagsAndFlagsOverrideTheFile) {
  test::TempDir dir;
  const std::string path = WriteConfig(dir, "a.toml",
                                       "rounds = 50\n"
                                       "min_clients = 7\n"
                                       "insecure = true\n"
                                       "server = [\"tcp://a:1\", \"tcp://b:2\"]\n"
                                       "classes = [\"cat\", \"dog\"]\n"
                                       "[dp]\n"
                                       "noise-multiplier = 1.25\n");
  Tool t;
  ASSERT_EQ(t.Parse({"--config", path, "--rounds", "3"}), "");
  EXPECT_EQ(t.rounds, 3);  // the flag wins
  EXPECT_EQ(t.min_clients, 7);
  EXPECT_TRUE(t.insecure);
  EXPECT_EQ(t.server, "tcp://a:1,tcp://b:2");  // one value: the list joined
  EXPECT_EQ(t.classes, (std::vector<std::string>{"cat", "dog"}));
  EXPECT_EQ(t.noise, 1.25);  // a decimal a double holds exactly
  // The effective configuration, read back, is the same run.
  const std::string effective = EffectiveConfig(t.app);
  EXPECT_NE(effective.find("rounds = 3\n"), std::string::npos) << effective;
  EXPECT_NE(effective.find("server = \"tcp://a:1,tcp://b:2\"\n"), std::string::npos) << effective;
  EXPECT_NE(effective.find("classes = [\"cat\", \"dog\"]\n"), std::string::npos) << effective;
  EXPECT_NE(effective.find("insecure = true\n"), std::string::npos) << effective;
  EXPECT_EQ(effective.find("config"), std::string::npos) << effective;
  const std::string again = WriteConfig(dir, "effective.toml", effective);
  Tool u;
  ASSERT_EQ(u.Parse({"--config", again}), "") << effective;
  EXPECT_EQ(u.rounds, 3);
  EXPECT_EQ(u.min_clients, 7);
  EXPECT_TRUE(u.insecure);
  EXPECT_EQ(u.server, t.server);
  EXPECT_EQ(u.classes, t.classes);
  EXPECT_EQ(u.noise, 1.25);
}

// A key that names no flag is an error naming the key, its line, the file
// and the nearest flag; so is malformed TOML, and a value of the wrong type.
TEST(ConfigFileTest, MistakesAreNamed) {
  test::TempDir dir;
  Tool a;
  const std::string typo = WriteConfig(dir, "typo.toml", "rounds = 5\nmin-clientz = 3\n");
  std::string error = a.Parse({"--config", typo});
  EXPECT_NE(error.find("unknown key 'min-clientz'"), std::string::npos) << error;
  EXPECT_NE(error.find(typo + ", line 2"), std::string::npos) << error;
  EXPECT_NE(error.find("did you mean 'min-clients'"), std::string::npos) << error;
  Tool b;
  const std::string bad = WriteConfig(dir, "bad.toml", "rounds = = 5\n");
  error = b.Parse({"--config", bad});
  EXPECT_NE(error.find(bad + ", line 1"), std::string::npos) << error;
  Tool c;
  const std::string type = WriteConfig(dir, "type.toml", "rounds = \"many\"\n");
  error = c.Parse({"--config", type});
  EXPECT_NE(error.find("rounds"), std::string::npos) << error;
  Tool d;
  error = d.Parse({"--config", dir.path() + "/missing.toml"});
  EXPECT_NE(error.find("missing.toml"), std::string::npos) << error;
  // One key under its two spellings: which would win? Neither.
  Tool e;
  const std::string twice = WriteConfig(dir, "twice.toml", "min_clients = 1\nmin-clients = 2\n");
  error = e.Parse({"--config", twice});
  EXPECT_NE(error.find("'min-clients' is set twice"), std::string::npos) << error;
  // Test hooks are flags only.
  Tool f;
  const std::string hook = WriteConfig(dir, "hook.toml", "debug-hook = 1\n");
  error = f.Parse({"--config", hook});
  EXPECT_NE(error.find("'debug-hook' is a test hook"), std::string::npos) << error;
}

// fl-server and fl-client as users run them: a config file, a flag over it;
// the server logs its effective configuration and writes it next to its
// outputs; a mistake stops the program before it does anything.
TEST(ConfigFileTest, TheServerAndTheClientReadTheirFiles) {
  test::TempDir dir;
  const std::string path = WriteConfig(dir, "server.toml",
                                       "bind = \"tcp://127.0.0.1:*\"\n"
                                       "model = \"mnist_2nn\"\n"
                                       "rounds = 7\n"
                                       "min-clients = 1\n"
                                       "insecure = true\n"
                                       "no-eval = true\n"
                                       "out = \"" +
                                           dir.path() + "/run\"\n");
  test::Process server(kServer, {"--config", path, "--rounds", "2"}, dir.path() + "/server.log");
  ASSERT_FALSE(test::StartedEndpoint(server).empty()) << server.Log();
  EXPECT_NE(server.Log().find("effective configuration"), std::string::npos) << server.Log();
  EXPECT_NE(server.Log().find("rounds 1..2"), std::string::npos) << server.Log();
  auto written = ReadFile(dir.path() + "/run/fl-server.toml");
  ASSERT_FL_OK(written);
  EXPECT_NE(written->find("\nrounds = 2\n"), std::string::npos) << *written;
  EXPECT_NE(written->find("\nmodel = \"mnist_2nn\"\n"), std::string::npos) << *written;
  EXPECT_EQ(written->find("debug-"), std::string::npos) << *written;  // (test hooks are not)
  server.Signal(SIGTERM);
  EXPECT_EQ(server.Wait(30), 0) << server.Log();
  // The written file is a config file of the same run: read back (another
  // --out only), it starts the same server and is written back the same.
  test::Process again(
      kServer, {"--config", dir.path() + "/run/fl-server.toml", "--out", dir.path() + "/again"},
      dir.path() + "/again.log");
  ASSERT_FALSE(test::StartedEndpoint(again).empty()) << again.Log();
  auto rewritten = ReadFile(dir.path() + "/again/fl-server.toml");
  ASSERT_FL_OK(rewritten);
  std::string expected = *written;
  const std::string out_line = "out = \"" + dir.path() + "/run\"";
  ASSERT_NE(expected.find(out_line), std::string::npos) << expected;
  expected.replace(expected.find(out_line), out_line.size(), "out = \"" + dir.path() + "/again\"");
  // (The first line names the file itself.)
  EXPECT_EQ(rewritten->substr(rewritten->find('\n')), expected.substr(expected.find('\n')));
  again.Signal(SIGTERM);
  EXPECT_EQ(again.Wait(30), 0) << again.Log();

  const std::string typo = WriteConfig(dir, "typo.toml", "rounds = 2\nmin-client = 1\n");
  test::Process refused(kServer, {"--config", typo}, dir.path() + "/refused.log");
  EXPECT_NE(refused.Wait(30), 0);
  EXPECT_NE(refused.Log().find("unknown key 'min-client'"), std::string::npos) << refused.Log();

  const std::string client = WriteConfig(dir, "client.toml",
                                         "server = \"tcp://127.0.0.1:9\"\n"
                                         "insecure = true\n"
                                         "threads = 1\n"
                                         "heartbeat = 0.3\n"
                                         "frobnicate = 1\n");
  test::Process device(kClient, {"--config", client}, dir.path() + "/client.log");
  EXPECT_NE(device.Wait(30), 0);
  EXPECT_NE(device.Log().find("unknown key 'frobnicate'"), std::string::npos) << device.Log();
}

// Value of the sample `name` (with its labels, as rendered) in `text`; NaN
// when absent.
double SampleOf(const std::string& text, const std::string& name) {
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.rfind(name + " ", 0) == 0) return std::atof(line.c_str() + name.size() + 1);
  }
  return std::nan("");
}

// Runs promtool check metrics on `text`; its exit code (and output in *out).
int Promtool(const std::string& text, const std::string& dir, std::string* out) {
  const std::string in = dir + "/scrape.txt", log = dir + "/promtool.log";
  EXPECT_FL_OK(WriteFileAtomic(in, text));
  const std::string cmd = "promtool check metrics < '" + in + "' > '" + log + "' 2>&1";
  const int status = std::system(cmd.c_str());
  auto o = ReadFile(log);
  *out = o.ok() ? *o : "";
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// A live federation scraped twice, as Prometheus would: after round 1 and
// after the last round. The text passes promtool's checks, and the numbers
// are the run's: rounds, participants, accepted and refused updates (a
// device for another model is refused wrong_architecture), bytes, the ingest
// histogram, the evaluation and the model version.
TEST(MetricsTest, ALiveRunIsScrapedAndPassesPromtool) {
  test::TempDir dir;
  test::Process server(kServer,
                       {"--bind",
                        "tcp://127.0.0.1:*",
                        "--model",
                        "mnist_2nn",
                        "--rounds",
                        "3",
                        "--min-clients",
                        "2",
                        "--fraction",
                        "1",
                        "--epochs",
                        "1",
                        "--uplink-bits",
                        "8",
                        "--insecure",
                        "--metrics-port",
                        "0",
                        "--linger",
                        "5",
                        "--out",
                        dir.path() + "/run"},
                       dir.path() + "/server.log");
  const std::string endpoint = test::StartedEndpoint(server);
  ASSERT_FALSE(endpoint.empty()) << server.Log();
  std::smatch port;
  const std::string log = server.Log();
  ASSERT_TRUE(std::regex_search(log, port, std::regex("metrics on http://127\\.0\\.0\\.1:(\\d+)")))
      << log;
  httplib::Client http("127.0.0.1", std::stoi(port[1]));
  {
    // The port taken: a server says so and runs without metrics.
    test::Process other(kServer,
                        {"--bind", "tcp://127.0.0.1:*", "--model", "mnist_2nn", "--insecure",
                         "--metrics-port", port[1].str()},
                        dir.path() + "/other.log");
    EXPECT_FALSE(test::StartedEndpoint(other).empty()) << other.Log();
    EXPECT_NE(other.Log().find("running without metrics"), std::string::npos) << other.Log();
    other.Signal(SIGTERM);
    EXPECT_EQ(other.Wait(30), 0) << other.Log();
  }
  std::vector<std::unique_ptr<test::Process>> devices;
  for (int i = 0; i < 2; ++i) {
    // (Progress lines every 0.1 s: a round of 6,000 examples takes most of a
    // second.)
    auto args = test::ClientArgs(endpoint, i, 10);
    args.insert(args.end(), {"--progress-every", "0.1"});
    devices.push_back(std::make_unique<test::Process>(
        kClient, args, dir.path() + "/c" + std::to_string(i) + ".log"));
  }
  // A device started for another model: refused at its HELLO.
  auto wrong = test::ClientArgs(endpoint, 2, 3);
  wrong.insert(wrong.end(), {"--model", "mnist_cnn"});
  test::Process stranger(kClient, wrong, dir.path() + "/stranger.log");
  ASSERT_TRUE(server.WaitForLog("round 1: 2/2 updates, test accuracy", 120)) << server.Log();
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));  // one publish period
  auto first = http.Get("/metrics");
  ASSERT_TRUE(first) << "no answer from /metrics";
  EXPECT_EQ(first->status, 200);
  EXPECT_NE(first->get_header_value("Content-Type").find("text/plain; version=0.0.4"),
            std::string::npos);
  const std::string a = first->body;
  EXPECT_GE(SampleOf(a, "fedge_rounds_completed_total"), 1) << a;
  EXPECT_EQ(SampleOf(a, "fedge_round_participants"), 2) << a;
  EXPECT_EQ(SampleOf(a, "fedge_clients_connected"), 2) << a;
  EXPECT_GE(SampleOf(a, "fedge_messages_refused_total{reason=\"wrong_architecture\"}"), 1) << a;
  EXPECT_GT(SampleOf(a, "fedge_upload_bytes_total"), 2 * 199210) << a;  // two 8-bit updates
  EXPECT_GE(SampleOf(a, "fedge_update_ingest_seconds_count"), 2) << a;
  const double accuracy = SampleOf(a, "fedge_test_accuracy");
  EXPECT_GT(accuracy, 0.5) << a;
  EXPECT_LE(accuracy, 1.0) << a;
  EXPECT_TRUE(std::regex_search(a, std::regex("fedge_model_info\\{version=\"[0-9a-f]{64}\"\\} 1")))
      << a;
  std::string lint;
  EXPECT_EQ(Promtool(a, dir.path(), &lint), 0) << lint << "\n" << a;

  ASSERT_TRUE(server.WaitForLog("round 3: 2/2 updates", 120)) << server.Log();
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  auto last = http.Get("/metrics");
  ASSERT_TRUE(last);
  const std::string b = last->body;
  EXPECT_EQ(SampleOf(b, "fedge_round"), 3) << b;
  EXPECT_EQ(SampleOf(b, "fedge_rounds_completed_total"), 3) << b;
  EXPECT_EQ(SampleOf(b, "fedge_updates_accepted_total"), 6) << b;
  // (Counters only go up; the first scrape may have come after the last round.)
  EXPECT_GE(SampleOf(b, "fedge_upload_bytes_total"), SampleOf(a, "fedge_upload_bytes_total"));
  EXPECT_GT(SampleOf(b, "fedge_upload_bytes_total"), 6 * 199210) << b;  // six 8-bit updates
  EXPECT_EQ(Promtool(b, dir.path(), &lint), 0) << lint << "\n" << b;
  EXPECT_EQ(server.Wait(120), 0) << server.Log();
  // The devices said how far each round's training was, with an estimate.
  const std::string device_log = devices[0]->Log();
  EXPECT_TRUE(std::regex_search(device_log, std::regex("round 1: training, [0-9]+%, ETA [0-9]+ s")))
      << device_log;
}

// Progress lines: none before the interval, then the fraction done and the
// time the rest takes at the pace so far.
TEST(ProgressTest, LinesAreThrottledAndEstimateTheRest) {
  Progress p(0.2);
  std::string line;
  EXPECT_FALSE(p.Due(0.1, &line));  // too soon
  std::this_thread::sleep_for(std::chrono::milliseconds(250));
  EXPECT_FALSE(p.Due(0, &line));  // nothing done: no estimate
  ASSERT_TRUE(p.Due(0.25, &line));
  // 0.25 of the work in >= 0.25 s: the rest at least 0.75 s, rounded up (a
  // busy machine may take longer, never less).
  std::smatch eta;
  ASSERT_TRUE(std::regex_match(line, eta, std::regex("25%, ETA ([0-9]+) s"))) << line;
  EXPECT_GE(std::stoi(eta[1]), 1) << line;
  EXPECT_FALSE(p.Due(0.5, &line));  // within the interval again
}

// fl-plot draws several runs into one PNG with gnuplot, and says what it drew.
TEST(PlotTest, RunsAreOverlaidInOnePng) {
  test::TempDir dir;
  const std::string header =
      "round,participants,test_accuracy,test_loss,upload_bytes,download_bytes,round_seconds,"
      "eval_seconds,max_delta_norm\n";
  ASSERT_FL_OK(CreateDirectories(dir.path() + "/q8"));
  ASSERT_FL_OK(CreateDirectories(dir.path() + "/q32"));
  ASSERT_FL_OK(WriteFileAtomic(dir.path() + "/q8/rounds.csv",
                               header + "1,10,0.80,0.6,1000000,4000000,1,0.1,1\n"
                                        "2,10,,,1000000,4000000,1,0,1\n"
                                        "3,10,0.90,0.3,1000000,4000000,1,0.1,1\n"));
  ASSERT_FL_OK(WriteFileAtomic(dir.path() + "/q32/rounds.csv",
                               header + "1,10,0.82,0.6,4000000,4000000,1,0.1,1\n"
                                        "2,10,0.88,0.4,4000000,4000000,1,0.1,1\n"));
  const std::string png = dir.path() + "/plot.png";
  test::Process plot(test::BinPath("fl-plot"),
                     {dir.path() + "/q8", dir.path() + "/q32", "--names", "8-bit,32-bit", "--out",
                      png, "--script", dir.path() + "/plot.gp"},
                     dir.path() + "/plot.log");
  ASSERT_EQ(plot.Wait(60), 0) << plot.Log();
  auto image = ReadFile(png);
  ASSERT_FL_OK(image);
  ASSERT_GT(image->size(), 1000u);
  EXPECT_EQ(image->substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8));
  // Round 2 of q8 was not evaluated: 2 points, its bytes counted (3 MB in all).
  EXPECT_NE(plot.Log().find("8-bit: 2 evaluated round(s), last 3 at 90.00%, 3.0 MB up in all"),
            std::string::npos)
      << plot.Log();
  EXPECT_NE(plot.Log().find("32-bit: 2 evaluated round(s), last 2 at 88.00%, 8.0 MB up"),
            std::string::npos)
      << plot.Log();
  auto data = ReadFile(dir.path() + "/plot.gp.d/run0.csv");
  ASSERT_FL_OK(data);
  EXPECT_EQ(*data, "1,80.0000,1.000000\n3,90.0000,3.000000\n");
  // A name that would end gnuplot's string and start a command is refused.
  const std::string pwned = dir.path() + "/PWNED";
  test::Process injected(test::BinPath("fl-plot"),
                         {dir.path() + "/q8", "--names",
                          "a'\nsystem(\"touch " + pwned + "\")\nprint 'b", "--out", png},
                         dir.path() + "/injected.log");
  EXPECT_EQ(injected.Wait(30), 2) << injected.Log();
  EXPECT_NE(injected.Log().find("control character"), std::string::npos) << injected.Log();
  EXPECT_FALSE(ReadFile(pwned).ok());
  test::Process missing(test::BinPath("fl-plot"), {dir.path() + "/nothing", "--out", png},
                        dir.path() + "/missing.log");
  EXPECT_EQ(missing.Wait(30), 1);
  EXPECT_NE(missing.Log().find("nothing/rounds.csv"), std::string::npos) << missing.Log();
}

// fl-client --state-dir: the residual file round-trips exactly, belongs to
// one server, and a damaged one is refused, never used.
TEST(DeviceStateTest, TheResidualIsKeptExactlyAndCheckedOnLoad) {
  test::TempDir dir;
  const std::vector<float> residual = {0.5f, -1e-7f, 3.25f, 0.0f};
  ASSERT_FL_OK(SaveResidual(dir.path(), "tcp://a:1", 7, residual));
  uint64_t round = 0;
  auto back = LoadResidual(dir.path(), "tcp://a:1", &round);
  ASSERT_FL_OK(back.status());
  EXPECT_EQ(*back, residual);
  EXPECT_EQ(round, 7u);
  EXPECT_EQ(LoadResidual(dir.path(), "tcp://b:2", &round).status().code(),
            Status::Code::kFailedPrecondition);
  auto bytes = ReadFile(dir.path() + "/residual.bin");
  ASSERT_FL_OK(bytes.status());
  std::string flipped = *bytes;
  flipped[30] ^= 0x10;
  ASSERT_FL_OK(WriteFileAtomic(dir.path() + "/residual.bin", flipped));
  EXPECT_TRUE(LoadResidual(dir.path(), "tcp://a:1", &round).status().IsCorruption());
  EXPECT_EQ(LoadResidual(dir.path() + "/none", "tcp://a:1", &round).status().code(),
            Status::Code::kNotFound);
  DeviceState st{"tcp://a:1", 12, 11, 40};
  ASSERT_FL_OK(SaveDeviceState(dir.path(), st));
  auto got = LoadDeviceState(dir.path());
  ASSERT_FL_OK(got.status());
  EXPECT_EQ(got->server, "tcp://a:1");
  EXPECT_EQ(got->rounds_trained, 12);
  EXPECT_EQ(got->updates_accepted, 11);
  EXPECT_EQ(got->last_round, 40u);
  // The state file is TOML: any server string round-trips, and a damaged
  // file is refused, naming it.
  st.server = "tcp://[::1]:5555 \"quoted\" \\ back\tslash";
  ASSERT_FL_OK(SaveDeviceState(dir.path(), st));
  got = LoadDeviceState(dir.path());
  ASSERT_FL_OK(got.status());
  EXPECT_EQ(got->server, st.server);
  ASSERT_FL_OK(WriteFileAtomic(dir.path() + "/state.toml", "server = \"unterminated\n"));
  const Status damaged = LoadDeviceState(dir.path()).status();
  EXPECT_TRUE(damaged.IsCorruption()) << damaged.ToString();
  EXPECT_NE(damaged.ToString().find("state.toml"), std::string::npos) << damaged.ToString();
}

TEST(DeviceStateTest, TrainingWindowsInLocalHours) {
  auto night = ParseTrainingWindow("22-6");
  ASSERT_FL_OK(night.status());
  for (int h : {22, 23, 0, 5}) EXPECT_TRUE(night->Contains(h)) << h;
  for (int h : {6, 12, 21}) EXPECT_FALSE(night->Contains(h)) << h;
  auto day = ParseTrainingWindow("9-17");
  ASSERT_FL_OK(day.status());
  EXPECT_TRUE(day->Contains(9));
  EXPECT_FALSE(day->Contains(17));
  EXPECT_TRUE(ParseTrainingWindow("")->always());
  {
    // A window (this hour's) without --state-dir: the device says its
    // residual does not outlast a gap.
    test::TempDir dir;
    const int h = LocalHour();
    auto args = test::ClientArgs("tcp://127.0.0.1:9", 0, 4);
    args.insert(args.end(),
                {"--schedule-hours", std::to_string(h) + "-" + std::to_string((h + 1) % 24)});
    test::Process device(kClient, args, dir.path() + "/device.log");
    EXPECT_TRUE(device.WaitForLog("--schedule-hours without --state-dir", 60)) << device.Log();
    device.Signal(SIGTERM);
    EXPECT_EQ(device.Wait(30), 0) << device.Log();
  }
  for (const char* bad : {"5-5", "25-3", "9", "a-b", "9-17-3"}) {
    EXPECT_TRUE(ParseTrainingWindow(bad).status().IsInvalidArgument()) << bad;
  }
}

// The device as a service would run it: --state-dir, a training window.
// When the window closes it finishes its round and leaves; the server goes
// on waiting for it; when the window opens it rejoins with its error-feedback
// residual (8-bit uplink) and the federation ends. A second start of the
// device against another run continues its counters and residual; a damaged
// residual file is said and not used.
TEST(DeviceStateTest, TheDeviceLeavesOutsideItsWindowAndKeepsItsStateAcrossRestarts) {
  test::TempDir dir;
  const std::string state = dir.path() + "/state", window = dir.path() + "/window-open";
  ASSERT_FL_OK(WriteFileAtomic(window, ""));
  auto server_args = [&](const std::string& out, int rounds) {
    return std::vector<std::string>{"--bind",
                                    "tcp://127.0.0.1:*",
                                    "--model",
                                    "mnist_2nn",
                                    "--rounds",
                                    std::to_string(rounds),
                                    "--min-clients",
                                    "1",
                                    "--fraction",
                                    "1",
                                    "--uplink-bits",
                                    "8",
                                    "--client-timeout",
                                    "2",
                                    "--no-eval",
                                    "--insecure",
                                    "--linger",
                                    "2",
                                    "--out",
                                    out};
  };
  auto device_args = [&](const std::string& endpoint) {
    auto a = test::ClientArgs(endpoint, 0, 20);  // 3,000 examples
    a.insert(a.end(), {"--state-dir", state, "--debug-window-open-while", window});
    return a;
  };
  {
    test::Process server(kServer, server_args(dir.path() + "/run1", 4), dir.path() + "/s1.log");
    const std::string endpoint = test::StartedEndpoint(server);
    ASSERT_FALSE(endpoint.empty()) << server.Log();
    test::Process device(kClient, device_args(endpoint), dir.path() + "/d1.log");
    ASSERT_TRUE(server.WaitForLog("round 1: 1/1 updates", 120)) << server.Log();
    std::remove(window.c_str());  // the window closes
    ASSERT_TRUE(device.WaitForLog("the training window closed; leaving", 60)) << device.Log();
    ASSERT_TRUE(server.WaitForLog("waiting for clients (0 of 1 live)", 60)) << server.Log();
    ASSERT_FL_OK(WriteFileAtomic(window, ""));  // and opens again
    ASSERT_EQ(server.Wait(120), 0) << server.Log();
    EXPECT_EQ(device.Wait(30), 0) << device.Log();
    const std::string log = device.Log();
    EXPECT_NE(log.find("the training window is open; joining"), std::string::npos) << log;
    EXPECT_NE(log.find("error-feedback residual of 199210 values restored"), std::string::npos)
        << log;
    EXPECT_EQ(test::ReadRoundsCsv(dir.path() + "/run1/rounds.csv").size(), 4u);
  }
  auto kept = LoadDeviceState(state);
  ASSERT_FL_OK(kept.status());
  EXPECT_EQ(kept->rounds_trained, 4);
  EXPECT_EQ(kept->updates_accepted, 4);
  EXPECT_EQ(kept->last_round, 4u);
  auto config = ReadFile(state + "/fl-client.toml");
  ASSERT_FL_OK(config.status());
  EXPECT_NE(config->find("state-dir = \"" + state + "\""), std::string::npos) << *config;
  {
    // The written file starts the same device (it loads its data and waits
    // for the server, which is gone).
    test::Process again(kClient, {"--config", state + "/fl-client.toml"},
                        dir.path() + "/again.log");
    EXPECT_TRUE(again.WaitForLog("3000 training samples", 60)) << again.Log();
    // A second device in the same folder would overwrite its residual: it
    // is refused.
    test::Process second(kClient, {"--config", state + "/fl-client.toml"},
                         dir.path() + "/second.log");
    EXPECT_EQ(second.Wait(60), 3) << second.Log();
    EXPECT_NE(second.Log().find("is in use by another fl-client"), std::string::npos)
        << second.Log();
    again.Signal(SIGTERM);
    EXPECT_EQ(again.Wait(30), 0) << again.Log();
  }
  {
    // Another start: its totals go on, its residual is back. (The new run's
    // endpoint differs: the residual is the first server's, not used.)
    test::Process server(kServer, server_args(dir.path() + "/run2", 1), dir.path() + "/s2.log");
    const std::string endpoint = test::StartedEndpoint(server);
    ASSERT_FALSE(endpoint.empty()) << server.Log();
    test::Process device(kClient, device_args(endpoint), dir.path() + "/d2.log");
    ASSERT_EQ(server.Wait(120), 0) << server.Log();
    EXPECT_EQ(device.Wait(30), 0) << device.Log();
    EXPECT_NE(device.Log().find("4 round(s) trained before, the last round 4"), std::string::npos)
        << device.Log();
    EXPECT_NE(device.Log().find("not restored"), std::string::npos) << device.Log();
  }
  kept = LoadDeviceState(state);
  ASSERT_FL_OK(kept.status());
  EXPECT_EQ(kept->rounds_trained, 5);
  // A damaged residual is refused by its digest; the device trains anyway.
  auto bytes = ReadFile(state + "/residual.bin");
  ASSERT_FL_OK(bytes.status());
  std::string damaged = *bytes;
  damaged[damaged.size() / 2] ^= 0x01;
  ASSERT_FL_OK(WriteFileAtomic(state + "/residual.bin", damaged));
  {
    test::Process server(kServer, server_args(dir.path() + "/run3", 1), dir.path() + "/s3.log");
    const std::string endpoint = test::StartedEndpoint(server);
    ASSERT_FALSE(endpoint.empty()) << server.Log();
    test::Process device(kClient, device_args(endpoint), dir.path() + "/d3.log");
    ASSERT_EQ(server.Wait(120), 0) << server.Log();
    EXPECT_EQ(device.Wait(30), 0) << device.Log();
    EXPECT_NE(device.Log().find("digest does not match"), std::string::npos) << device.Log();
    EXPECT_NE(device.Log().find("round 1: trained"), std::string::npos) << device.Log();
  }
}

}  // namespace
}  // namespace fl
