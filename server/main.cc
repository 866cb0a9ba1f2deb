// fl-server: the federated learning aggregator.
//
//   fl-server --bind tcp://*:5555 --model mnist_cnn --rounds 50 --fraction 0.1
//             --min-clients 10 --data data/mnist --out runs/prod
//   fl-server ... --resume        # continue from runs/prod/checkpoint.fl
//   fl-server --parent tcp://root:5555 --server-key root.pub --key relay.key
//             --clients devices/ --bind tcp://*:6000     # a relay aggregator
//   Root of relays: --relays relays/ (their public keys) --max-examples N.
//   Encrypted (CURVE) and enrolled by default: --key server.key --clients enrolled/;
//   --insecure for local experiments. See docs/deploying.md, "Deploying to a fleet".
//
// SIGINT/SIGTERM abandon the round in progress, keep the last checkpoint and exit 0.
// SIGHUP re-reads the enrollment folder (--clients) at once.
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <csignal>
#include <memory>

#include "common/cli_config.h"
#include "common/file_util.h"
#include "common/memory.h"
#include "common/process_exit.h"
#include "common/reproducible.h"
#include "relay/relay.h"
#include "server/flags.h"
#include "server/metrics_endpoint.h"
#include "server/server.h"
#include "server/torch_runtime.h"

namespace {

std::atomic<bool> g_stop{false};
std::atomic<bool> g_reload{false};
// The first SIGINT/SIGTERM stops the run cleanly (rows of finished rounds are
// still written); a second one ends the process at once.
void OnSignal(int sig) {
  g_stop = true;
  std::signal(sig, SIG_DFL);
}
void OnHangup(int) { g_reload = true; }

// The flags of fl-server beyond ServerOptions': tiers (docs/relays.md),
// metrics, logging.
struct Extras {
  fl::RelayUplinkOptions relay;
  int metrics_port{-1};
  std::string metrics_bind{"127.0.0.1"};
  bool quiet{false};
  bool reproducible{false};
};

void AddExtraFlags(CLI::App& app, Extras& e) {
  app.add_option("--parent", e.relay.parent,
                 "Run as a relay aggregator under this parent (tcp://root:5555): a server to its "
                 "own devices (--bind, --clients), a participant to the parent, which it sends one "
                 "signed partial aggregate a round; rounds and hyperparameters come from the "
                 "parent (--rounds, --lr, ... are the parent's)")
      ->group("Relays");
  app.add_option("--server-key", e.relay.parent_key_path,
                 "With --parent: the parent's NAME.pub (the connection must reach it; only "
                 "what it signed is taken)")
      ->group("Relays");
  app.add_flag("--debug-relay-tamper-model", e.relay.debug_tamper_model,
               "With --parent: change the parent's model before the devices get it (testing "
               "the devices' --root-key check)")
      ->group("");
  app.add_option("--debug-relay-weight-factor", e.relay.debug_weight_factor,
                 "With --parent: claim this many times the partials' true weight (testing the "
                 "parent's check)")
      ->group("");
  app.add_option("--metrics-port", e.metrics_port,
                 "Serve Prometheus metrics on http://--metrics-bind:PORT/metrics (0: a free port, "
                 "logged; -1: off)")
      ->capture_default_str()
      ->check(CLI::Range(-1, 65535));
  app.add_option("--metrics-bind", e.metrics_bind,
                 "Address the metrics endpoint listens on (0.0.0.0: every interface; it is "
                 "plain HTTP without authentication)")
      ->capture_default_str();
  app.add_flag("--quiet", e.quiet, "Log warnings and errors only");
  app.add_flag("--reproducible", e.reproducible,
               std::string(fl::kReproducibleHelp) +
                   "; on the server: the starting model and the evaluation");
}

// --metrics-port: the endpoint (null when off, or when it could not start:
// monitoring does not take the federation down).
std::unique_ptr<fl::MetricsEndpoint> StartMetrics(const Extras& e, fl::ServerMetrics* metrics,
                                                  fl::ServerOptions* o) {
  if (e.metrics_port < 0) return nullptr;
  auto endpoint = fl::MetricsEndpoint::Start(metrics, e.metrics_bind, e.metrics_port);
  if (!endpoint.ok()) {
    spdlog::error("--metrics-port: {}; running without metrics", endpoint.status().ToString());
    return nullptr;
  }
  o->metrics = metrics;
  spdlog::info("metrics on http://{}:{}/metrics", e.metrics_bind, (*endpoint)->port());
  return std::move(endpoint).value();
}

// A relay aggregator's session to its parent.
fl::Status ConnectRelay(fl::Relay* relay, const fl::ServerOptions& o, Extras& e,
                        std::shared_ptr<fl::transport::Context> ctx) {
  e.relay.key_path = o.key_path;
  e.relay.insecure = o.insecure;
  e.relay.verbose = !e.quiet;
  char host[64] = "relay";
  gethostname(host, sizeof host - 1);
  e.relay.id = "relay-" + std::string(host).substr(0, 16) + "-" + std::to_string(getpid());
  FL_RETURN_IF_ERROR(relay->Connect(e.relay, ctx));
  spdlog::info("relay {}: parent {}", relay->id(), e.relay.parent);
  return fl::Status::OK();
}

// The last line: how the run ended, the bytes, what was refused.
void LogEnd(const fl::ServerSummary& sum, bool relay, bool evaluated) {
  std::string rej;
  for (const auto& [reason, n] : sum.rejected) rej += " " + reason + "=" + std::to_string(n);
  if (relay) {
    // (A relay evaluates nothing: the root reports the accuracy.)
    spdlog::info("relay {} after round {}: {} bytes from its devices, {} to them; refused:{}",
                 sum.interrupted ? "stopped" : "finished", sum.rounds_completed, sum.upload_bytes,
                 sum.download_bytes, rej.empty() ? " none" : rej);
    return;
  }
  spdlog::info("{} after {} rounds: {}, {} bytes up, {} down; refused:{}",
               sum.interrupted ? "stopped" : "finished", sum.rounds_completed,
               evaluated ? fmt::format("final test accuracy {:.2f}%", 100 * sum.final_accuracy)
                         : std::string("not evaluated (--no-eval)"),
               sum.upload_bytes, sum.download_bytes, rej.empty() ? " none" : rej);
}

}  // namespace

static int ServerMain(int argc, char** argv) {
  fl::UseOneMallocArena();
  fl::ServerFlags f;
  f.o.data.path = FL_DEFAULT_DATA_DIR;
  Extras e;
  CLI::App app{"fl-server: federated learning aggregator (FedAvg over ZeroMQ)"};
  fl::AddServerFlags(&app, &f);
  AddExtraFlags(app, e);
  fl::AddConfigFile(&app);
  CLI11_PARSE(app, argc, argv);
  if (e.reproducible) {
    if (const fl::Status st = fl::BecomeReproducible(argv); !st.ok()) {
      spdlog::error("{}", st.ToString());
      return 2;
    }
    spdlog::info("reproducible: {}", fl::DescribeReproducibleSettings());
  }
  const bool is_relay = !e.relay.parent.empty();
  // A relay evaluates nothing unless asked: the root does.
  if (is_relay && app.count("--data") == 0) f.no_eval = true;
  if (e.quiet) spdlog::set_level(spdlog::level::warn);
  if (fl::Status st = fl::FinishServerFlags(&f); !st.ok()) {
    spdlog::error("{}", st.ToString());
    return 2;
  }
  fl::ServerOptions& o = f.o;
  o.verbose = !e.quiet;
  spdlog::info("effective configuration (--config FILE takes these keys):\n{}",
               fl::EffectiveConfig(app));
  if (!o.out_dir.empty()) {
    // Next to the run's outputs, so that the run can be told and repeated.
    if (fl::Status st = fl::WriteEffectiveConfig(app, "fl-server", o.out_dir); !st.ok()) {
      spdlog::error("--out: {}", st.ToString());
      return 1;
    }
  }
  spdlog::info("seed {}", o.seed);
  if (o.clients_dir.empty() && o.insecure) {
    spdlog::warn("no --clients enrollment folder: accepting updates from any client, unsigned");
  }
  std::signal(SIGINT, OnSignal);
  std::signal(SIGTERM, OnSignal);
  std::signal(SIGHUP, OnHangup);  // re-read the enrollment folder now
  o.reload_enrollment = &g_reload;
  fl::ServerMetrics metrics;
  const auto metrics_endpoint = StartMetrics(e, &metrics, &o);
  auto ctx = fl::transport::CreateZmqContext();
  fl::Result<fl::ServerSummary> sum = fl::Status::Internal("not run");
  if (is_relay) {
    auto relay = fl::Relay::Create(o, ctx, fl::TorchRuntime());
    if (!relay.ok()) {
      spdlog::error("{}", relay.status().ToString());
      return 1;
    }
    if (fl::Status st = ConnectRelay(relay->get(), o, e, ctx); !st.ok()) {
      spdlog::error("{}", st.ToString());
      return 2;
    }
    sum = (*relay)->Run(&g_stop, nullptr);
  } else {
    auto server = fl::Server::Create(o, ctx, fl::TorchRuntime());
    if (!server.ok()) {
      spdlog::error("{}", server.status().ToString());
      return 1;
    }
    sum = (*server)->Run(&g_stop, nullptr);
  }
  if (!sum.ok()) {
    spdlog::error("{}", sum.status().ToString());
    return 1;
  }
  LogEnd(*sum, is_relay, !f.no_eval);
  return 0;
}

// LibTorch's static teardown is skipped: common/process_exit.h.
int main(int argc, char** argv) { fl::ExitWithoutStaticTeardown(ServerMain(argc, argv)); }
