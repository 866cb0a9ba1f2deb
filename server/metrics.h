// The aggregator's Prometheus metrics (fl-server --metrics-port): what the
// server thread records as it works, rendered in Prometheus' text exposition
// format (version 0.0.4) for a scrape at /metrics.
//
//   fedge_rounds_completed_total               counter
//   fedge_round                                gauge: the last round completed
//   fedge_round_selected, _participants        gauges: the last round's
//   fedge_updates_accepted_total               counter
//   fedge_messages_refused_total{reason}       counter, by REJECT reason code
//   fedge_upload_bytes_total, _download_bytes_total   counters (all messages)
//   fedge_update_ingest_seconds                histogram: one update's verify,
//                                              decode and checks on the server
//   fedge_round_seconds, _collect_seconds,
//   fedge_aggregation_seconds, _evaluation_seconds    gauges: the last round's
//   fedge_test_accuracy, fedge_test_loss       gauges: the last evaluation
//   fedge_privacy_epsilon                      gauge (private runs only)
//   fedge_clients_connected, fedge_clients_known      gauges
//   fedge_model_info{version}                  1, the global model's version
//
// Thread-safe: the server thread writes, the HTTP thread renders. Free of
// LibTorch and of the HTTP server (server/metrics_endpoint.h serves it).
#ifndef FEDGE_SERVER_METRICS_H_
#define FEDGE_SERVER_METRICS_H_

#include <array>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>

#include "common/status.h"

namespace fl {

struct RoundMetrics;

class ServerMetrics {
 public:
  // Upper bounds of the ingest histogram's buckets, in seconds.
  static constexpr std::array<double, 12> kIngestBuckets = {
      0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0};

  // A round reported (rounds.csv's row): counters advance by its numbers.
  void RoundDone(const RoundMetrics& m);
  // Messages refused so far, by REJECT reason code (the server's totals).
  void SetRefused(const std::map<std::string, int64_t>& totals);
  // One UPDATE's handling on the server, in seconds.
  void ObserveIngest(double seconds);
  void SetClients(int64_t connected, int64_t known);
  // The global model's version (hex) now.
  void SetModelVersion(const std::string& version);

  // The exposition text.
  std::string Render() const;

 private:
  mutable std::mutex mu_;
  uint64_t rounds_{0}, last_round_{0};
  int64_t selected_{0}, participants_{0};
  uint64_t accepted_{0};
  std::map<std::string, uint64_t> refused_;
  uint64_t upload_bytes_{0}, download_bytes_{0};
  std::array<uint64_t, kIngestBuckets.size()> ingest_buckets_{};
  uint64_t ingest_count_{0};
  double ingest_sum_{0};
  double round_seconds_{0}, collect_seconds_{0}, aggregation_seconds_{0}, eval_seconds_{0};
  double accuracy_{0}, loss_{0}, epsilon_{0};
  bool evaluated_{false}, private_{false};
  int64_t connected_{0}, known_{0};
  std::string version_;
};

}  // namespace fl

#endif  // FEDGE_SERVER_METRICS_H_
