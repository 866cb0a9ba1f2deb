// Central differential privacy for the aggregator: DP-FedAvg (McMahan et al.
// 2018, "Learning Differentially Private Recurrent Language Models") with fixed
// or adaptive clipping (Andrew et al. 2021, "Differentially Private Learning
// with Adaptive Clipping"), and a Renyi-DP accountant for the Poisson-subsampled
// Gaussian mechanism (Mironov, Talwar, Zhang 2019, "Renyi Differential Privacy
// of the Sampled Gaussian Mechanism").
//
// Each round, every live device is selected independently with probability q
// (Poisson sampling, as the accountant assumes). Each selected device's delta
// is clipped to L2 norm C and counts with weight 1 (a device's claimed sample
// count does not change its sensitivity); the server adds Gaussian noise of
// standard deviation z * C to the sum, on the kept coordinates only (the mask
// is public, so the sparsity is kept), and divides by the expected number of
// participants q * N. With adaptive clipping the server also counts, with
// noise of standard deviation sigma_b = qN / 20, how many deltas were within
// C, and moves C geometrically toward the target quantile; the update noise
// then uses z_delta = (z^-2 - (2 sigma_b)^-2)^(-1/2), so the pair of releases
// has noise multiplier z, which is what the accountant is charged with.
//
// The noise comes from a generator seeded per round from the server's secret
// key (its round-log key), or from --seed when the server has no key (then it
// is reproducible by anyone who knows the seed: experiments only).
#ifndef FEDGE_SERVER_PRIVACY_H_
#define FEDGE_SERVER_PRIVACY_H_

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"

namespace fl {

// What the `--dp-*` flags set (fl-server and fl-sim alike, server/flags.h).
struct PrivacyOptions {
  // z: noise standard deviation over the clipping norm. 0 = privacy off.
  double noise_multiplier{0};
  // C: clipping norm of each delta (the starting norm with adaptive clipping).
  double clip{1.0};
  // Adaptive clipping: move C toward the target_quantile of the deltas' norms
  // at this geometric learning rate (Andrew et al. use 0.2).
  bool adaptive_clip{false};
  double target_quantile{0.5};
  double clip_learning_rate{0.2};
  // The delta of the (epsilon, delta) guarantee reported.
  double delta{1e-5};
  // A relay aggregator's share of its root's privacy (docs/relays.md): each
  // device's delta is clipped to `clip` and weighs one, as under privacy, but
  // no noise is added and nothing is accounted for: the aggregate is the
  // exact sum of the clipped deltas, which the root noises. Not set by a flag: a relay
  // takes it from its parent's TASK (wire::TrainConfig::dp_clip).
  bool relay{false};

  bool enabled() const { return noise_multiplier > 0; }
  // Deltas are clipped and weigh one: privacy, or a relay's share of it.
  bool clips() const { return enabled() || relay; }
};

// InvalidArgument naming the --dp-* flag out of range.
Status CheckPrivacyOptions(const PrivacyOptions& options);

// The noise multiplier of the update when adaptive clipping spends part of the
// budget on the clipped-count release: (z^-2 - (2 sigma_b)^-2)^(-1/2), sigma_b =
// expected / 20. InvalidArgument when z is too large for that many expected
// participants (z must be below expected / 10).
Result<double> UpdateNoiseMultiplier(double z, double expected_participants);

// RDP orders the accountant tracks: 1.25 .. 4.5, 5 .. 63, 128, 256, 512 (as
// TensorFlow Privacy's compute_dp_sgd_privacy).
const std::vector<double>& RdpOrders();

// RDP of one step of the Poisson-subsampled Gaussian mechanism at `order`:
// sampling rate q in [0, 1], noise multiplier sigma > 0. +inf when it cannot
// be bounded.
double RdpSampledGaussian(double q, double sigma, double order);

// The smallest epsilon of an (epsilon, delta) guarantee over `orders` for the
// accumulated `rdp` (Canonne, Kamath, Steinke 2020, Proposition 12); `*order`
// gets the order that gave it.
double EpsilonFromRdp(const std::vector<double>& orders, const std::vector<double>& rdp,
                      double delta, double* order = nullptr);

// Accumulates the RDP of the rounds run.
class RdpAccountant {
 public:
  RdpAccountant();
  // `count` steps of rate q and noise multiplier sigma.
  void Compose(double q, double sigma, uint64_t count = 1);
  double Epsilon(double delta, double* order = nullptr) const;
  uint64_t steps() const { return steps_; }
  const std::vector<double>& rdp() const { return rdp_; }
  // Restores accumulated values (RdpOrders().size() of them).
  Status Restore(uint64_t steps, std::vector<double> rdp);

 private:
  std::vector<double> rdp_;
  uint64_t steps_{0};
};

}  // namespace fl

#endif  // FEDGE_SERVER_PRIVACY_H_
