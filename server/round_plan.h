// What a round asks of its participants, as a value: the schedulers make one
// per round (a root from its options, a relay from its parent's TASK), and
// the server's options stay as they were given.
#ifndef FEDGE_SERVER_ROUND_PLAN_H_
#define FEDGE_SERVER_ROUND_PLAN_H_

#include <limits>
#include <string>

#include "common/wire/messages.h"

namespace fl {

class Aggregator;

struct RoundPlan {
  // The TASK's configuration: the round's learning rate and seed, the codec,
  // and the optional fields (trainable tensors, FedProx's mu, normalisation,
  // classes) for devices that read them. A relay's is its parent's, whole.
  wire::TrainConfig train;
  // Seconds the round waits for updates (the TASK's deadline).
  double deadline_seconds{0};
  // Times on the server's clock (SchedulerHost::Now()): until when the round
  // waits for --min-clients live devices before it runs with those it has,
  // and when it must be done (a relay's parent's deadline). Infinity: none.
  double live_by{std::numeric_limits<double>::infinity()};
  double end{std::numeric_limits<double>::infinity()};
  // Central differential privacy of the round (the root's own, or on a relay
  // its root's): devices are Poisson-sampled at `sampling_rate` and their
  // deltas clipped to `dp_clip`; 0 = not private.
  double sampling_rate{0};
  double dp_clip{0};
  // A relay: the root's signed endorsement of the round's model, which its
  // TASKs carry to the devices.
  std::string root_endorsement;
  // A relay: the round ends in the exact sum of its updates, handed up
  // (Aggregator::FinishSum), not in a step of the model; `rule`, when set, is
  // the aggregator it sums with (its share of the root's privacy) instead of
  // the server's strategy. Not owned.
  bool hands_up_sum{false};
  Aggregator* rule{nullptr};

  bool private_round() const { return sampling_rate > 0; }
};

}  // namespace fl

#endif  // FEDGE_SERVER_ROUND_PLAN_H_
