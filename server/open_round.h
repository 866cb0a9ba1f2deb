// The state of the round (or asynchronous step) being collected: who was
// asked, who answered, the bounds the answers are held to, the round's
// write-ahead log and the ACKs waiting for it to be durable, and what the
// round measured. A scheduler owns one; the server's receive path reads and
// fills it.
#ifndef FEDGE_SERVER_OPEN_ROUND_H_
#define FEDGE_SERVER_OPEN_ROUND_H_

#include <algorithm>
#include <array>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "common/fixed_point.h"
#include "common/status.h"
#include "common/wire/envelope.h"
#include "server/round_metrics.h"
#include "server/wal.h"

namespace fl {

// The bounds an update of the round is held to (ServerOptions says how each
// is derived), and the strategy's fixed step offset for the range check.
struct RoundLimits {
  // Bound on a delta's L2 norm (0 = none) and most examples one update counts.
  double norm_bound{0};
  int64_t weight_cap{0};
  // What each selected device had registered when it was selected: a HELLO
  // it sends later does not change what its update may claim.
  std::map<std::string, int64_t> registered;
  // Live devices (a relay counting as its devices) the selection was made
  // from: a private round's expected participants are the rate times this.
  uint32_t population{0};
  // The strategy's fixed step offset (Aggregator::StepOffset), its factor and
  // the largest |factor x offset|.
  const std::vector<float>* step_offset{nullptr};
  double step_offset_factor{0};
  double step_offset_max_abs{0};
};

struct OpenRound {
  using Nonce = std::array<uint8_t, wire::kNonceBytes>;

  // Updates are being collected for `round` (the round, or the step).
  bool collecting{false};
  uint64_t round{0};
  // Random per round; TASKs carry it and UPDATEs must return it (signed).
  // (Asynchronous steps: each task has its own.)
  Nonce nonce{};
  // Selected, and selected but not answered yet (asynchronous: the devices
  // holding a task).
  std::set<std::string> selected;
  std::set<std::string> pending;
  // Updates that close the round (over-selection); the selection's size otherwise.
  size_t target{0};
  // Selected devices that already got their TASK a second time this round.
  std::set<std::string> resent;
  RoundLimits limits;
  // The round's write-ahead log and where its accepted updates are in it;
  // ACKs wait in `unsynced_acks` until the log is durable (group commit). A
  // write to the log failed: `log_error` (the server stops: it cannot
  // acknowledge).
  std::unique_ptr<WalWriter> log;
  std::vector<WalEntry> entries;
  struct UnsyncedAck {
    std::string peer;
    uint64_t round;
    uint64_t log_end;  // where its record ends in the log
  };
  std::deque<UnsyncedAck> unsynced_acks;
  Status log_error;
  // Reopened from its log by --resume: its devices get until the deadline
  // to come back (they need time to notice the server is back).
  bool reopened{false};
  // Relays among the pending, and when each was last probed (a relay works
  // in silence, like a device).
  std::map<std::string, double> relay_probed;
  // What the round measured, and its timing.
  RoundMetrics m;
  double started{0};
  double last_accept_time{0};
  double first_update_time{0};
  double train_loss_sum{0};
  // A relay: the round's exact sum, handed up (RoundPlan::hands_up_sum).
  FixedSum sum;

  // Starts round `r`: metrics, answers and log entries of the last one go.
  void Reset(uint64_t r) {
    m = RoundMetrics();
    m.round = r;
    train_loss_sum = 0;
    entries.clear();
    resent.clear();
  }
  // An update the log holds, in the round's metrics as if it had just arrived.
  void KeepLogged(const WalEntry& e, const WalRecord& rec) {
    entries.push_back(e);
    train_loss_sum += rec.train_loss;
    m.participants++;
    m.delta_bytes += rec.delta.size();
    m.max_train_seconds = std::max(m.max_train_seconds, rec.train_seconds);
  }
};

}  // namespace fl

#endif  // FEDGE_SERVER_OPEN_ROUND_H_
