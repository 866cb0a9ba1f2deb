// What fl-sim prints and writes at the end of a run: the table of rounds, the
// rounds (and time and bytes) to each target accuracy, and summary.json.
#ifndef FEDGE_EXPERIMENTS_SIM_SIM_REPORT_H_
#define FEDGE_EXPERIMENTS_SIM_SIM_REPORT_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "common/status.h"
#include "experiments/sim/sim_config.h"
#include "server/round_metrics.h"

namespace fl {

// "98.62%", or "-" for a round that was not evaluated; megabytes to 0.1.
std::string Percent(double v);
std::string Mb(uint64_t bytes);

struct SimOutcome {
  const SimConfig* config{nullptr};
  std::string config_path;  // the --config given ("" without)
  // This invocation's rounds, and (round, accuracy) of those an earlier run
  // in --out evaluated (--resume).
  std::vector<RoundMetrics> history;
  std::vector<std::pair<uint64_t, double>> earlier;
  uint64_t first_round{1};
  ServerSummary summary;
  uint64_t delta_bytes{0};
  uint64_t updates{0};
  double wall_seconds{0};
  bool reached_target{false};
  size_t adversaries{0};
};

// Prints the table and the targets, and writes OUT/summary.json.
Status ReportSimRun(const SimOutcome& o);

}  // namespace fl

#endif  // FEDGE_EXPERIMENTS_SIM_SIM_REPORT_H_
