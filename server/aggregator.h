// Aggregation strategies on fedge's compressed layout: every delta is the
// model's kept values in canonical order (the mask is shared state), so every
// rule below works on kept coordinates only and pruned weights stay 0.
//
// A strategy is two parts, each a free function over plain vectors (so each
// is tested against hand-computed examples, tests/aggregator_test.cc):
//   the rule, which combines the round's deltas into one pseudo-gradient D:
//     mean          sum_k n_k d_k / sum_k n_k (FedAvg, McMahan et al. 2017),
//                   summed exactly in fixed point (common/fixed_point.h), so
//                   D is the same in any order, grouping (relays' partial
//                   sums), thread count or CPU; streams: one 128-bit integer
//                   accumulator, 16 bytes per kept value
//     median        coordinate-wise median of the K deltas (Yin et al. 2018)
//     trimmed_mean  coordinate-wise mean after dropping the floor(beta K)
//                   largest and smallest values (Yin et al. 2018)
//     krum          the delta whose n-f-2 nearest neighbours are closest
//                   (Blanchard et al. 2017); multikrum: mean of the m best
//                   robust rules hold the K deltas (4 bytes per kept value each)
//                   and weigh them equally: a device's claimed sample count
//                   does not buy it influence; what they average (trimmed_mean's
//                   middle, multikrum's choice) is summed in fixed point too,
//                   and krum's ties go to the smaller delta, not the first
//   the server optimizer (in double, from the exact D: the same bits on
//   every machine), which turns D into the step added to the model:
//     sgd           x += lr D
//     momentum      v = beta v + D; x += lr v (FedAvgM, Hsu et al. 2019)
//     adagrad/adam/yogi  m = b1 m + (1-b1) D; v as in Reddi et al. 2021
//                   ("Adaptive Federated Optimization", Algorithm 2), v
//                   starting at tau^2; x += lr m / (sqrt(v) + tau)
//                   state: 4 bytes per kept value per moment
// and optional norm clipping of each delta before the rule (any strategy).
//
// Strategy state (momentum, moments) survives --resume: SaveState goes into the
// checkpoint, LoadState restores it, and a resumed run ends bit for bit where
// the uninterrupted one does.
//
// This header stays free of LibTorch.
#ifndef FEDGE_SERVER_AGGREGATOR_H_
#define FEDGE_SERVER_AGGREGATOR_H_

#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "common/fixed_point.h"
#include "common/model_state.h"
#include "common/status.h"
#include "server/privacy.h"

namespace fl {

// What `--strategy ...` sets (fl-server and fl-sim alike, server/flags.h).
struct StrategyOptions {
  // fedavg, fedavgm, fedadagrad, fedadam, fedyogi, fedprox, median,
  // trimmed_mean, krum, multikrum.
  std::string name{"fedavg"};
  // Server learning rate; 0 = the strategy's default (DefaultServerLr).
  double server_lr{0};
  // fedavgm: server momentum beta.
  double momentum{0.9};
  // Adaptive optimizers: first and second moment decay, and tau (adaptivity).
  double beta1{0.9};
  double beta2{0.99};
  double tau{1e-3};
  // fedprox: proximal term mu, sent to clients in the TASK.
  double mu{0.01};
  // trimmed_mean: fraction beta dropped at each end, in [0, 0.5).
  double trim_fraction{0.1};
  // krum/multikrum: Byzantine devices tolerated (f), and deltas averaged by
  // multikrum (m; 0 = K - f).
  int krum_f{1};
  int krum_m{0};
  // Each delta is scaled to at most this L2 norm before aggregation; 0 = off.
  double clip{0};
};

// The strategy names, in the order --help lists them.
const std::vector<std::string>& StrategyNames();

// The server learning rate `name` uses when none is given: 1 for fedavg,
// fedavgm, fedprox and the robust rules; 0.1 for fedadagrad; 0.01 for fedadam
// and fedyogi.
double DefaultServerLr(const std::string& name);

// InvalidArgument naming the option (as its fl-server flag) that is out of range.
Status CheckStrategyOptions(const StrategyOptions& options);

// The fewest deltas a round needs for the rule to resist anything: 0 for the
// mean (it resists nothing), 3 for the median, enough for trimmed_mean to trim
// one value at each end (and at least 3), 2f + 3 for krum and multikrum.
int RobustMinimum(const StrategyOptions& options);

// --- the arithmetic --------------------------------------------------------

// Scales `delta` to L2 norm `clip` when its norm is above it. Returns the
// factor applied (1 when it was within the norm or clip <= 0).
double ClipToNorm(std::vector<float>* delta, double clip);

// Coordinate-wise median of equally long vectors (mean of the two middle
// values when their number is even).
std::vector<double> CoordinateMedian(const std::vector<std::vector<float>>& deltas);

// Coordinate-wise mean after dropping the `trim` largest and `trim` smallest
// values of each coordinate, the rest summed exactly (fixed point: values
// within +-2^23); needs 2 * trim < deltas.size().
std::vector<double> TrimmedMean(const std::vector<std::vector<float>>& deltas, size_t trim);

// Krum scores: for each delta, the sum of squared L2 distances to its
// `neighbours` nearest other deltas (Blanchard et al. 2017 use n - f - 2).
std::vector<double> KrumScores(const std::vector<std::vector<float>>& deltas, size_t neighbours);

// Indexes of the `m` deltas with the lowest Krum score (ties: the delta
// whose bytes compare lower first, whatever the order they came in),
// with neighbours = n - f - 2 clamped to [1, n - 1].
std::vector<size_t> KrumSelect(const std::vector<std::vector<float>>& deltas, int f, size_t m);

// Server optimizers over a pseudo-gradient `d` (the rule's output).
enum class ServerOptimizer : uint8_t {
  kSgd = 0,
  kMomentum = 1,
  kAdagrad = 2,
  kAdam = 3,
  kYogi = 4
};

// One step: updates the moments `m` and `v` (sized like d, or empty for sgd;
// v of adaptive optimizers starting at tau^2) and writes the step into
// `step`, so that the new model is x + step.
void ServerStep(ServerOptimizer opt, const StrategyOptions& options, double lr,
                const std::vector<double>& d, std::vector<float>* m, std::vector<float>* v,
                std::vector<double>* step);

// --- the seam the server aggregates through ---------------------------------

// What a round's aggregation needs to know beyond its updates.
struct RoundInfo {
  // Devices expected to take part (with privacy: q times the live devices
  // selection sampled from; the noisy sum is divided by it).
  double expected_participants{0};
  // Seeds the round's privacy noise.
  uint64_t noise_seed{0};
};

// One accepted update as a rule takes it: a device's delta, or a relay's
// exact partial sum.
struct Contribution {
  // Examples it counts with (a device's, capped; a partial's at most
  // sum->weight: the root's cap on what a relay may claim, which scales the
  // sum by weight / sum->weight).
  int64_t weight{0};
  // A device's delta: finite, num_values long (clipped in place when the
  // rule clips; rules that keep the deltas take the buffer).
  std::vector<float>* delta{nullptr};
  // Or a relay's partial: the exact sum of its devices' weighted deltas and
  // their total weight (common/fixed_point.h). The mean adds the integers,
  // so relayed rounds end where flat ones do, bit for bit; a robust rule
  // takes the partial's mean as one delta.
  FixedSum* sum{nullptr};
  // A private partial (the root's central privacy): how many of its devices'
  // deltas were within the clip; -1 for any other update.
  int64_t within_clip{-1};
};

// The seam the server aggregates through. A strategy (MakeAggregator) is a
// rule and a server optimizer; privacy wraps one (server/private_aggregator.h).
class Aggregator {
 public:
  virtual ~Aggregator() = default;

  // The strategy's name (StrategyOptions::name).
  virtual const std::string& name() const = 0;

  // Starts a round whose deltas carry `num_values` kept values. Drops what an
  // unfinished round had added.
  virtual void Begin(size_t num_values, const RoundInfo& info = {}) = 0;

  // Adds one accepted update (counted once; a private partial as its
  // devices). InvalidArgument, and nothing added, on a size or weight
  // mismatch; FailedPrecondition for a kind of update the rule does not take
  // (a private partial without privacy, a plain partial under it).
  virtual Status Add(const Contribution& c) = 0;
  // A device's delta of `weight` examples.
  Status Add(int64_t weight, std::vector<float>* delta) { return Add(Contribution{weight, delta}); }

  // Updates added this round, and how many of them were clipped (under
  // privacy: devices, a private partial's counting as its devices).
  virtual int64_t count() const = 0;
  virtual int64_t clipped() const = 0;

  // Adds the round's step to `model`'s kept values, all or nothing: when a new
  // value would not be finite or exceed `max_abs`, InvalidArgument, and
  // `model` and the strategy's state are as before. FailedPrecondition when
  // nothing was added (with privacy, a round without updates still releases
  // noise: the accountant assumes every round does).
  virtual Status Finish(ModelState* model, float max_abs) = 0;

  // The server optimizer alone: adds its step for the pseudo-gradient `d`
  // (num_values long) to `model`, all or nothing as Finish.
  virtual Status Step(std::vector<double> d, ModelState* model, float max_abs) = 0;

  // Instead of Finish: the round's aggregate as an exact sum, no step (what a
  // relay hands up). The mean hands up the sum as added; a robust rule its
  // aggregate D as round(D * 2^40) times the total weight. FailedPrecondition
  // when nothing was added.
  virtual Status FinishSum(FixedSum* sum) = 0;

  // The strategy's state between rounds (empty when it has none), and back.
  // LoadState refuses (InvalidArgument) a state of another strategy or model size.
  virtual std::string SaveState() const = 0;
  virtual Status LoadState(const std::string& state, size_t num_values) = 0;

  // The mask tightened between rounds (federated pruning): `still_kept` has
  // one entry per previously kept value, 1 where it is still kept. The
  // strategy's per-value state follows (momentum and moments of the values
  // that remain).
  virtual void KeepOnly(const std::vector<uint8_t>& still_kept) = 0;

  // lr when the step is lr times a convex combination of the (clipped)
  // deltas plus a fixed offset (StepOffset), so an update that alone keeps
  // the model in range keeps the aggregate in range too; 0 when the step is
  // not bounded that way (adaptive optimizers, privacy): then only Finish's
  // check holds.
  virtual double convex_step_scale() const = 0;

  // The fixed part of the next step, per kept value, before the scale:
  // `*factor` times the returned values (momentum: beta times the momentum),
  // so the step is lr (factor * offset + D). Null when there is none.
  virtual const std::vector<float>* StepOffset(double* factor) const = 0;

  // The fedprox proximal term clients train with (0 = none).
  virtual double proximal_mu() const = 0;

  // Bytes the rule holds per kept value of each added update until Finish:
  // 0 for the mean (it streams into 16 bytes per kept value, whatever the
  // count), 4 for the robust rules (median, trimmed_mean, krum, multikrum
  // keep every delta).
  virtual size_t held_bytes_per_value() const = 0;
};

// The aggregator for `options` (checked with CheckStrategyOptions), wrapped
// in central differential privacy when `privacy` clips (MakePrivateAggregator
// in server/private_aggregator.h).
Result<std::unique_ptr<Aggregator>> MakeAggregator(const StrategyOptions& options,
                                                   const PrivacyOptions& privacy = {},
                                                   double sampling_rate = 1.0);

}  // namespace fl

#endif  // FEDGE_SERVER_AGGREGATOR_H_
