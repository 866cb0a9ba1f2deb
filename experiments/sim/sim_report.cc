#include "experiments/sim/sim_report.h"

#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "common/file_util.h"
#include "common/reproducible.h"
#include "common/wire/compact.h"

namespace fl {

namespace {

using Json = nlohmann::ordered_json;

// A number, or null when it is not finite (JSON has no NaN).
Json Number(double v) { return std::isfinite(v) ? Json(v) : Json(nullptr); }

void PrintTable(const std::vector<RoundMetrics>& history) {
  // max_train_s: the slowest participant's training wall time; overhead: round
  // time over it (1.0 = the round took exactly as long as its slowest client).
  std::printf("\n%5s %12s %9s %9s %10s %12s %8s %11s %8s\n", "round", "participants", "test_acc",
              "test_loss", "upload_MB", "download_MB", "seconds", "max_train_s", "overhead");
  for (const auto& m : history) {
    std::printf("%5llu %12d %9s %9.4f %10s %12s %8.1f %11.1f %8.2f\n",
                static_cast<unsigned long long>(m.round), m.participants,
                Percent(m.test_accuracy).c_str(), m.test_loss, Mb(m.upload_bytes).c_str(),
                Mb(m.download_bytes).c_str(), m.round_seconds, m.max_train_seconds,
                m.max_train_seconds > 0 ? m.round_seconds / m.max_train_seconds : 0.0);
  }
}

// Per target accuracy: the round that reached it (an earlier run's too), and
// this invocation's wall time (the rounds' own, evaluation overlapping them)
// and uplink bytes until it (null when it was reached before a --resume, or
// not at all).
void Targets(const SimOutcome& o, Json* rounds, Json* seconds, Json* bytes) {
  *rounds = *seconds = *bytes = Json::object();
  for (double t : o.config->targets) {
    char key[32];
    std::snprintf(key, sizeof(key), "%.10g", t);
    Json reached = nullptr, took = nullptr, sent = nullptr;
    for (const auto& [round, accuracy] : o.earlier) {
      if (round < o.first_round && accuracy >= t) {
        reached = round;
        break;
      }
    }
    double sum_seconds = 0;
    uint64_t sum_bytes = 0;
    for (const auto& m : o.history) {
      if (!reached.is_null()) break;
      sum_seconds += m.round_seconds;
      sum_bytes += m.upload_bytes;
      if (m.test_accuracy >= t) {
        reached = m.round;
        took = sum_seconds;
        sent = sum_bytes;
      }
    }
    (*rounds)[key] = reached;
    (*seconds)[key] = took;
    (*bytes)[key] = sent;
    std::printf("rounds to %.2f%% test accuracy: %s\n", 100 * t,
                reached.is_null() ? "not reached" : reached.dump().c_str());
  }
}

Json Summary(const SimOutcome& o, double per_update) {
  const SimConfig& c = *o.config;
  const ServerSummary& s = o.summary;
  Json j;
  j["config"] = c.server.out_dir + "/config.toml";
  j["config_file"] = o.config_path;
  j["seed"] = c.server.seed;
  j["reproducible"] = c.reproducible;
  j["kernels"] = c.reproducible ? DescribeReproducibleSettings()
                                : "as this machine's libraries picked them (not --reproducible)";
  j["model"] = c.server.model;
  j["clients"] = c.clients;
  j["fraction"] = c.server.fraction;
  j["partition"] = c.partition;
  j["sparsity"] = c.server.sparsity;
  j["codec"] = c.server.train.codec;
  j["uplink_bits"] = c.server.train.uplink_bits;
  j["downlink"] = wire::ValueFormatName(c.server.downlink);
  j["secure"] = c.secure;
  j["topology"] = {{"relays", c.relays}, {"relay_strategy", c.relay_strategy}};
  j["strategy"] = c.server.strategy.name;
  if (c.server.privacy.enabled()) {
    j["epsilon"] = Number(s.epsilon);
    j["delta"] = c.server.privacy.delta;
  }
  j["adversaries"] = {{"fraction", c.adversary_fraction},
                      {"count", o.adversaries},
                      {"kind", c.adversary_fraction > 0 ? c.adversary_kind : "none"},
                      {"scale", c.adversary_scale}};
  j["rounds_completed"] = s.rounds_completed;
  j["resumed_after_round"] = o.first_round - 1;
  j["interrupted"] = s.interrupted && !o.reached_target;
  j["stopped_at_target"] = o.reached_target;
  j["final_accuracy"] = Number(s.final_accuracy);
  j["final_loss"] = Number(s.final_loss);
  return j;
}

}  // namespace

std::string Percent(double v) {
  if (std::isnan(v)) return "-";
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.2f%%", 100 * v);
  return buf;
}

std::string Mb(uint64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.1f", bytes / 1e6);
  return buf;
}

Status ReportSimRun(const SimOutcome& o) {
  const SimConfig& c = *o.config;
  const ServerSummary& s = o.summary;
  PrintTable(o.history);
  Json rounds, seconds, bytes;
  Targets(o, &rounds, &seconds, &bytes);
  std::printf("final test accuracy %.2f%%, %s MB up, %s MB down, wall time %.1f s%s\n",
              100 * s.final_accuracy, Mb(s.upload_bytes).c_str(), Mb(s.download_bytes).c_str(),
              o.wall_seconds,
              o.reached_target ? " (stopped at the target)"
              : s.interrupted  ? " (interrupted)"
                               : "");
  const double per_update =
      o.updates ? static_cast<double>(o.delta_bytes) / static_cast<double>(o.updates) : 0.0;
  std::printf("encoded delta per client update: %.0f bytes (%llu updates)\n", per_update,
              static_cast<unsigned long long>(o.updates));
  Json j = Summary(o, per_update);
  j["rounds_to_target"] = rounds;
  j["wall_seconds_to_target"] = seconds;
  j["upload_bytes_to_target"] = bytes;
  j["devices"] = {{"slowdown_sigma", c.slowdown_sigma},
                  {"straggler_fraction", c.straggler_fraction},
                  {"straggler_slowdown", c.straggler_slowdown},
                  {"dropout", c.dropout}};
  j["upload_bytes"] = s.upload_bytes;
  j["download_bytes"] = s.download_bytes;
  j["delta_bytes_per_update"] = per_update;
  j["rejected"] = Json::object();
  for (const auto& [reason, n] : s.rejected) j["rejected"][reason] = n;
  j["wall_seconds"] = o.wall_seconds;
  FL_RETURN_IF_ERROR(WriteFileAtomic(c.server.out_dir + "/summary.json", j.dump(2) + "\n"));
  std::printf("wrote %s/rounds.csv, %s/summary.json, %s/config.toml\n", c.server.out_dir.c_str(),
              c.server.out_dir.c_str(), c.server.out_dir.c_str());
  return Status::OK();
}

}  // namespace fl
