// Central differential privacy as a decorator of a strategy (as Flower's
// server-side clipping strategies wrap any strategy): DP-FedAvg (McMahan et
// al. 2018) with fixed or adaptive clipping (Andrew et al. 2021) around a
// strategy whose rule is the mean (fedavg, fedavgm, the adaptive optimizers,
// fedprox). Each device's delta is clipped to the clipping norm and weighs
// one; the exact sum gets Gaussian noise on every kept coordinate, is divided
// by the expected participants, and the wrapped strategy's server optimizer
// steps with it. The accountant (server/privacy.h) is charged every round.
//
// A relay's share of its root's privacy (PrivacyOptions::relay) clips and
// weighs alike but adds no noise and accounts for nothing: it hands up the
// exact sum of the clipped deltas (FinishSum), which the root noises.
#ifndef FEDGE_SERVER_PRIVATE_AGGREGATOR_H_
#define FEDGE_SERVER_PRIVATE_AGGREGATOR_H_

#include <memory>

#include "server/aggregator.h"
#include "server/privacy.h"

namespace fl {

class PrivateAggregator : public Aggregator {
 public:
  // Epsilon spent so far at the configured delta, and the clipping norm the
  // next round uses; NaN for a relay's share.
  virtual double epsilon() const = 0;
  virtual double dp_clip() const = 0;
};

// `options`' strategy wrapped in `privacy` (which must clip), devices sampled
// at rate `sampling_rate` (Poisson). InvalidArgument for a strategy whose
// rule is not the mean, with --clip, or a rate outside (0, 1].
Result<std::unique_ptr<PrivateAggregator>> MakePrivateAggregator(const StrategyOptions& options,
                                                                 const PrivacyOptions& privacy,
                                                                 double sampling_rate);

}  // namespace fl

#endif  // FEDGE_SERVER_PRIVATE_AGGREGATOR_H_
