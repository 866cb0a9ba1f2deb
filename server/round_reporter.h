// The rows of finished rounds: rounds.csv, the RoundCallback, the run's
// summary, the round's log line and its Prometheus gauges, in round order,
// each once its evaluation (which runs in the background) is done.
#ifndef FEDGE_SERVER_ROUND_REPORTER_H_
#define FEDGE_SERVER_ROUND_REPORTER_H_

#include <cstdint>
#include <deque>
#include <map>
#include <string>
#include <vector>

#include "common/status.h"
#include "server/checkpoint.h"
#include "server/evaluator.h"
#include "server/round_metrics.h"

namespace fl {

class RunStore;
class ServerMetrics;

class RoundReporter {
 public:
  struct Options {
    bool verbose{true};
    // Rows are asynchronous steps (their log line says so).
    bool steps{false};
    // The privacy's delta, for the log line (with privacy).
    double dp_delta{0};
  };
  // `evaluator` (may be null), `store` and `metrics` (may be null) are not owned.
  RoundReporter(Options options, BackgroundEvaluator* evaluator, RunStore* store,
                ServerMetrics* metrics)
      : o_(options), evaluator_(evaluator), store_(store), metrics_(metrics) {}

  // Set for the duration of Server::Run.
  void Attach(const RoundCallback* on_round, ServerSummary* summary) {
    on_round_ = on_round;
    summary_ = summary;
  }

  // A finished round; `awaiting_eval` when its model went to the evaluator.
  void Add(const RoundMetrics& m, bool awaiting_eval) { unreported_.push_back({m, awaiting_eval}); }
  bool empty() const { return unreported_.empty(); }
  size_t size() const { return unreported_.size(); }
  // The checkpoint's rows of rounds not reported yet (it owes them at --resume).
  std::vector<Checkpoint::Row> PendingRows() const;
  static Checkpoint::Row RowOf(const RoundMetrics& rm);

  // Writes the rows of finished rounds whose evaluation is done (all of
  // them, waiting for the evaluator, when `wait`), in round order.
  Status Report(bool wait);

 private:
  void Log(const RoundMetrics& rm) const;

  struct Completed {
    RoundMetrics m;
    bool awaiting_eval{false};
  };
  const Options o_;
  BackgroundEvaluator* const evaluator_;
  RunStore* const store_;
  ServerMetrics* const metrics_;
  std::deque<Completed> unreported_;
  const RoundCallback* on_round_{nullptr};
  ServerSummary* summary_{nullptr};
};

}  // namespace fl

#endif  // FEDGE_SERVER_ROUND_REPORTER_H_
