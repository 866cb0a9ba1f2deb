// What a round (or an asynchronous step) measured: one row of rounds.csv,
// the RoundCallback's argument and the Prometheus gauges (server/metrics.h).
// Free of the server itself, so that what writes or reads a row needs only this.
#ifndef FEDGE_SERVER_ROUND_METRICS_H_
#define FEDGE_SERVER_ROUND_METRICS_H_

#include <cmath>
#include <cstdint>
#include <functional>
#include <map>
#include <string>

namespace fl {

// What happened in one round.
struct RoundMetrics {
  uint64_t round{0};
  int selected{0};
  // Clients whose update was accepted and averaged.
  int participants{0};
  // Selected devices told their work was not needed (over-selection closed
  // the round before they answered).
  int withdrawn{0};
  // Asynchronous mode: the mean and largest staleness (server steps between
  // an update's task and this step) of the step's updates, and tasks given
  // up at the deadline during it.
  double mean_staleness{0};
  uint32_t max_staleness{0};
  int expired{0};
  // Test accuracy and loss of the new global model (NaN when not evaluated).
  double test_accuracy{0};
  double test_loss{0};
  // Bytes of all messages received from / sent to clients during the round.
  uint64_t upload_bytes{0};
  uint64_t download_bytes{0};
  // Encoded delta bytes of the accepted updates (UPDATE data field only).
  uint64_t delta_bytes{0};
  // Wall time from selection to the checkpoint being written.
  double round_seconds{0};
  // Wall time of the evaluation (0 when not evaluated); it runs in the
  // background, overlapping the next round, so it is not part of round_seconds.
  double eval_seconds{0};
  // Wall time from selection to the last accepted update (or the deadline).
  double collect_seconds{0};
  // Wall time from the first UPDATE received to the last one accepted: the
  // server's ingest window (0 when fewer than two updates arrived).
  double ingest_seconds{0};
  // Longest local training time reported by a participant.
  double max_train_seconds{0};
  // Mean of the participants' last-epoch training loss.
  double mean_train_loss{0};
  // Largest L2 norm of an accepted delta, and the round's bound on it (0 = none).
  double max_delta_norm{0};
  // Deltas the strategy scaled down to its clipping norm (--clip, --dp-clip).
  int64_t clipped{0};
  // Sparsity of the model's prunable tensors after the round, and whether
  // the round tightened the mask (federated pruning).
  double sparsity{0};
  bool mask_changed{false};
  // With privacy: epsilon spent after this round (at --dp-delta) and the
  // clipping norm the next round uses; NaN without.
  double epsilon{std::nan("")};
  double dp_clip{std::nan("")};
  double update_norm_bound{0};
  // Most examples one update counted with this round.
  int64_t weight_cap{0};
  // False when the averaged model would have had a value out of range (not
  // finite, or beyond fp16 with an fp16 downlink): the global model was kept.
  bool committed{true};
  // Transfer windows: most update bytes granted at once this round, and
  // uploads (TASKs) that had to wait for room.
  uint64_t upload_window_peak_bytes{0};
  int64_t uploads_queued{0};
  int64_t tasks_queued{0};
  // Refused messages this round, by reason code. Connections refused during
  // the CURVE handshake (unenrolled transport key) count as "transport_denied".
  std::map<std::string, int64_t> rejected;
  // Time spent on the UPDATEs that reached the server this round: in total
  // (receive to reply, summed over the threads that worked on each) and in
  // checking their payload digest and signature.
  double update_handle_seconds{0};
  double update_auth_seconds{0};
  int64_t updates_received{0};
  // Of those, the ones prepared (authenticated, decoded, checked) on the
  // ingest threads together with other messages rather than alone.
  int64_t updates_prepared_together{0};
};

// Called after every completed round, once its evaluation is done, in round
// order (on the server thread).
using RoundCallback = std::function<void(const RoundMetrics&)>;

struct ServerSummary {
  uint64_t rounds_completed{0};
  double final_accuracy{0};
  double final_loss{0};
  uint64_t upload_bytes{0};
  uint64_t download_bytes{0};
  // Total refused messages by reason over the run.
  std::map<std::string, int64_t> rejected;
  // True when the run stopped on a signal before finishing its rounds.
  bool interrupted{false};
  // With privacy: epsilon spent over the run (NaN without).
  double epsilon{std::nan("")};
};

// The CSV header of rounds.csv; with privacy it gains an `epsilon` column
// (RoundsCsvHeader(true)), in asynchronous mode `tasks,mean_staleness,
// max_staleness,expired` (a row per server step; `tasks`: handed out during it).
extern const char kRoundsCsvHeader[];
std::string RoundsCsvHeader(bool privacy, bool async = false);

}  // namespace fl

#endif  // FEDGE_SERVER_ROUND_METRICS_H_
