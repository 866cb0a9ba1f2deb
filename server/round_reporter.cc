#include "server/round_reporter.h"

#include <spdlog/spdlog.h>

#include <cmath>

#include "server/metrics.h"
#include "server/run_store.h"

namespace fl {

Checkpoint::Row RoundReporter::RowOf(const RoundMetrics& rm) {
  return {rm.round,         static_cast<uint32_t>(rm.participants),
          rm.upload_bytes,  rm.download_bytes,
          rm.round_seconds, rm.max_delta_norm};
}

std::vector<Checkpoint::Row> RoundReporter::PendingRows() const {
  std::vector<Checkpoint::Row> rows;
  for (const auto& u : unreported_) rows.push_back(RowOf(u.m));
  return rows;
}

Status RoundReporter::Report(bool wait) {
  while (!unreported_.empty()) {
    Completed& c = unreported_.front();
    if (c.awaiting_eval) {
      std::optional<Evaluation> e = wait ? evaluator_->Take() : evaluator_->TryTake();
      if (!e) break;
      if (e->round != c.m.round) {
        return Status::Internal("evaluation of round " + std::to_string(e->round) +
                                " arrived for round " + std::to_string(c.m.round));
      }
      if (!e->status.ok()) {
        spdlog::error("round {}: evaluation failed: {}", e->round, e->status.ToString());
      }
      c.m.test_accuracy = e->accuracy;
      c.m.test_loss = e->mean_loss;
      c.m.eval_seconds = e->seconds;
      c.awaiting_eval = false;
    }
    const RoundMetrics rm = std::move(c.m);
    unreported_.pop_front();
    FL_RETURN_IF_ERROR(store_->AppendRow(rm));
    if (summary_) {
      summary_->upload_bytes += rm.upload_bytes;
      summary_->download_bytes += rm.download_bytes;
      if (!std::isnan(rm.test_accuracy)) {
        summary_->final_accuracy = rm.test_accuracy;
        summary_->final_loss = rm.test_loss;
      }
      if (!std::isnan(rm.epsilon)) summary_->epsilon = rm.epsilon;
    }
    if (o_.verbose) Log(rm);
    if (on_round_ && *on_round_) (*on_round_)(rm);
    if (metrics_) metrics_->RoundDone(rm);
  }
  return Status::OK();
}

void RoundReporter::Log(const RoundMetrics& rm) const {
  // Transfers that waited for the windows (ServerOptions::transfer_window_bytes).
  std::string waited = rm.uploads_queued + rm.tasks_queued == 0
                           ? ""
                           : fmt::format("; {} TASK(s) and {} upload(s) waited their turn",
                                         rm.tasks_queued, rm.uploads_queued);
  if (rm.clipped > 0) waited += fmt::format("; {} delta(s) clipped", rm.clipped);
  if (o_.steps) {
    waited += fmt::format("; staleness mean {:.2f}, max {}; {} task(s) handed out",
                          rm.mean_staleness, rm.max_staleness, rm.selected);
    if (rm.expired > 0) waited += fmt::format(", {} given up", rm.expired);
  }
  if (!std::isnan(rm.epsilon)) {
    waited += fmt::format("; privacy spent: epsilon {:.3f} at delta {:g} (clip {:.4g})",
                          rm.epsilon, o_.dp_delta, rm.dp_clip);
  }
  if (o_.steps) {
    spdlog::info("step {}: {} updates{}, {:.1f} s{}", rm.round, rm.participants,
                 std::isnan(rm.test_accuracy)
                     ? std::string()
                     : fmt::format(", test accuracy {:.2f}% (+{:.1f} s evaluation)",
                                   100 * rm.test_accuracy, rm.eval_seconds),
                 rm.round_seconds, waited);
  } else if (std::isnan(rm.test_accuracy)) {
    spdlog::info("round {}: {}/{} updates, {:.1f} s{}", rm.round, rm.participants, rm.selected,
                 rm.round_seconds, waited);
  } else {
    spdlog::info(
        "round {}: {}/{} updates, test accuracy {:.2f}%, {:.1f} s (+{:.1f} s "
        "evaluation, overlapping the next round){}",
        rm.round, rm.participants, rm.selected, 100 * rm.test_accuracy, rm.round_seconds,
        rm.eval_seconds, waited);
  }
}

}  // namespace fl
