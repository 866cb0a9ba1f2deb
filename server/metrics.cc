#include "server/metrics.h"

#include <spdlog/spdlog.h>

#include <cmath>
#include <cstdio>

#include "server/server.h"

namespace fl {
namespace {

// A label value as the exposition format wants it: \ " and newline escaped.
std::string Escape(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\' || c == '"') {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::string Number(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

void Family(std::string* out, const char* name, const char* type, const char* help) {
  *out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
}

void Sample(std::string* out, const std::string& name, double v) {
  *out += name + " " + Number(v) + "\n";
}

}  // namespace

void ServerMetrics::RoundDone(const RoundMetrics& m) {
  std::lock_guard<std::mutex> lock(mu_);
  ++rounds_;
  last_round_ = m.round;
  selected_ = m.selected;
  participants_ = m.participants;
  accepted_ += static_cast<uint64_t>(std::max(0, m.participants));
  upload_bytes_ += m.upload_bytes;
  download_bytes_ += m.download_bytes;
  round_seconds_ = m.round_seconds;
  collect_seconds_ = m.collect_seconds;
  aggregation_seconds_ = std::max(0.0, m.round_seconds - m.collect_seconds);
  if (!std::isnan(m.test_accuracy)) {
    evaluated_ = true;
    accuracy_ = m.test_accuracy;
    loss_ = m.test_loss;
    eval_seconds_ = m.eval_seconds;
  }
  if (!std::isnan(m.epsilon)) {
    private_ = true;
    epsilon_ = m.epsilon;
  }
}

void ServerMetrics::SetRefused(const std::map<std::string, int64_t>& totals) {
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [reason, n] : totals)
    refused_[reason] = static_cast<uint64_t>(std::max<int64_t>(0, n));
}

void ServerMetrics::ObserveIngest(double seconds) {
  std::lock_guard<std::mutex> lock(mu_);
  for (size_t i = 0; i < kIngestBuckets.size(); ++i) {
    if (seconds <= kIngestBuckets[i]) ++ingest_buckets_[i];
  }
  ++ingest_count_;
  ingest_sum_ += seconds;
}

void ServerMetrics::SetClients(int64_t connected, int64_t known) {
  std::lock_guard<std::mutex> lock(mu_);
  connected_ = connected;
  known_ = known;
}

void ServerMetrics::SetModelVersion(const std::string& version) {
  std::lock_guard<std::mutex> lock(mu_);
  version_ = version;
}

std::string ServerMetrics::Render() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::string out;
  Family(&out, "fedge_rounds_completed_total", "counter", "Rounds completed by this process.");
  Sample(&out, "fedge_rounds_completed_total", static_cast<double>(rounds_));
  Family(&out, "fedge_round", "gauge", "The last round completed.");
  Sample(&out, "fedge_round", static_cast<double>(last_round_));
  Family(&out, "fedge_round_selected", "gauge", "Participants selected in the last round.");
  Sample(&out, "fedge_round_selected", static_cast<double>(selected_));
  Family(&out, "fedge_round_participants", "gauge",
         "Updates accepted and aggregated in the last round.");
  Sample(&out, "fedge_round_participants", static_cast<double>(participants_));
  Family(&out, "fedge_updates_accepted_total", "counter", "Updates accepted and aggregated.");
  Sample(&out, "fedge_updates_accepted_total", static_cast<double>(accepted_));
  Family(&out, "fedge_messages_refused_total", "counter",
         "Messages (updates, HELLOs, connections) refused, by REJECT reason code "
         "(docs/protocol.md).");
  for (const auto& [reason, n] : refused_) {
    Sample(&out, "fedge_messages_refused_total{reason=\"" + Escape(reason) + "\"}",
           static_cast<double>(n));
  }
  Family(&out, "fedge_upload_bytes_total", "counter", "Bytes received from participants.");
  Sample(&out, "fedge_upload_bytes_total", static_cast<double>(upload_bytes_));
  Family(&out, "fedge_download_bytes_total", "counter", "Bytes sent to participants.");
  Sample(&out, "fedge_download_bytes_total", static_cast<double>(download_bytes_));
  Family(&out, "fedge_update_ingest_seconds", "histogram",
         "One UPDATE's verification, decoding and checks on the server.");
  for (size_t i = 0; i < kIngestBuckets.size(); ++i) {
    char le[32];
    std::snprintf(le, sizeof le, "%g", kIngestBuckets[i]);
    Sample(&out, std::string("fedge_update_ingest_seconds_bucket{le=\"") + le + "\"}",
           static_cast<double>(ingest_buckets_[i]));
  }
  Sample(&out, "fedge_update_ingest_seconds_bucket{le=\"+Inf\"}",
         static_cast<double>(ingest_count_));
  Sample(&out, "fedge_update_ingest_seconds_sum", ingest_sum_);
  Sample(&out, "fedge_update_ingest_seconds_count", static_cast<double>(ingest_count_));
  Family(&out, "fedge_round_seconds", "gauge",
         "The last round's wall time, selection to checkpoint.");
  Sample(&out, "fedge_round_seconds", round_seconds_);
  Family(&out, "fedge_round_collect_seconds", "gauge", "The last round's wait for its updates.");
  Sample(&out, "fedge_round_collect_seconds", collect_seconds_);
  Family(&out, "fedge_aggregation_seconds", "gauge",
         "The last round's aggregation and checkpoint (round minus collect).");
  Sample(&out, "fedge_aggregation_seconds", aggregation_seconds_);
  Family(&out, "fedge_evaluation_seconds", "gauge", "The last evaluation's wall time.");
  Sample(&out, "fedge_evaluation_seconds", evaluated_ ? eval_seconds_ : std::nan(""));
  Family(&out, "fedge_test_accuracy", "gauge", "The last evaluation's test accuracy (0..1).");
  Sample(&out, "fedge_test_accuracy", evaluated_ ? accuracy_ : std::nan(""));
  Family(&out, "fedge_test_loss", "gauge", "The last evaluation's test loss.");
  Sample(&out, "fedge_test_loss", evaluated_ ? loss_ : std::nan(""));
  if (private_) {
    Family(&out, "fedge_privacy_epsilon", "gauge",
           "Epsilon spent so far (central DP, at --dp-delta).");
    Sample(&out, "fedge_privacy_epsilon", epsilon_);
  }
  Family(&out, "fedge_clients_connected", "gauge",
         "Participants live now (heard from within --client-timeout).");
  Sample(&out, "fedge_clients_connected", static_cast<double>(connected_));
  Family(&out, "fedge_clients_known", "gauge", "Participants the server tracks.");
  Sample(&out, "fedge_clients_known", static_cast<double>(known_));
  Family(&out, "fedge_model_info", "gauge", "The global model's version (SHA-256, hex).");
  Sample(&out, "fedge_model_info{version=\"" + Escape(version_) + "\"}", 1);
  return out;
}

}  // namespace fl
