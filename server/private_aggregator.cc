#include "server/private_aggregator.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "common/random.h"
#include "common/wire/reader.h"
#include "server/strategy.h"

namespace fl {

namespace {

class Private final : public PrivateAggregator {
 public:
  Private(std::unique_ptr<Strategy> inner, const PrivacyOptions& dp, double q)
      : inner_(std::move(inner)), dp_(dp), q_(q), clip_(dp.clip) {}

  const std::string& name() const override { return inner_->name(); }

  void Begin(size_t num_values, const RoundInfo& info) override {
    inner_->Begin(num_values, info);
    n_ = num_values;
    info_ = info;
    count_ = clipped_ = within_clip_ = 0;
    sum_ = FixedSum();
    sum_.values.assign(n_, 0);
  }

  Status Add(const Contribution& c) override {
    if (c.sum) return AddPartial(c);
    return AddDelta(c.weight, c.delta);
  }

  int64_t count() const override { return count_; }
  int64_t clipped() const override { return clipped_; }

  Status Finish(ModelState* model, float max_abs) override {
    if (dp_.enabled()) return FinishPrivate(model, max_abs);
    if (count_ == 0) return Status::FailedPrecondition("no updates to aggregate");
    return Step(MeanOf(sum_), model, max_abs);
  }

  Status Step(std::vector<double> d, ModelState* model, float max_abs) override {
    sum_ = FixedSum();
    return inner_->Step(std::move(d), model, max_abs);
  }

  Status FinishSum(FixedSum* out) override {
    if (count_ == 0) return Status::FailedPrecondition("no updates to aggregate");
    *out = std::move(sum_);
    sum_ = FixedSum();
    return Status::OK();
  }

  // The strategy's state, marked private, then: clipping norm f64 | accountant
  // steps u64 | orders u32 | RDP f64 each (a relay's share keeps none).
  std::string SaveState() const override {
    if (!dp_.enabled()) return inner_->SaveState();
    wire::Writer w;
    w.PutF64(clip_);
    w.PutU64(accountant_.steps());
    w.PutU32(static_cast<uint32_t>(accountant_.rdp().size()));
    for (double r : accountant_.rdp()) w.PutF64(r);
    return inner_->SaveStateWith(true, w.Release());
  }

  Status LoadState(const std::string& state, size_t num_values) override;

  void KeepOnly(const std::vector<uint8_t>& still_kept) override { inner_->KeepOnly(still_kept); }
  // A private step is a noisy sum over an expected count, not a combination
  // (and a relay's share takes no step: it hands up its sum).
  double convex_step_scale() const override { return 0.0; }
  const std::vector<float>* StepOffset(double* factor) const override {
    return inner_->StepOffset(factor);
  }
  double proximal_mu() const override { return inner_->proximal_mu(); }
  size_t held_bytes_per_value() const override { return 0; }

  double epsilon() const override {
    return dp_.enabled() ? accountant_.Epsilon(dp_.delta) : std::nan("");
  }
  double dp_clip() const override { return dp_.enabled() ? clip_ : std::nan(""); }

 private:
  Status CheckSize(size_t values) const {
    if (values == n_) return Status::OK();
    return Status::InvalidArgument("delta has " + std::to_string(values) + " values, model has " +
                                   std::to_string(n_));
  }

  // Every device counts alike: its sensitivity is the clipping norm. Nothing
  // is clipped until the update is sure to be added.
  Status AddDelta(int64_t weight, std::vector<float>* delta) {
    if (weight <= 0) {
      return Status::InvalidArgument("update weight " + std::to_string(weight) + " (must be > 0)");
    }
    FL_RETURN_IF_ERROR(CheckSize(delta->size()));
    if (sum_.weight == std::numeric_limits<int64_t>::max()) {
      return Status::InvalidArgument("total weight overflows");
    }
    FL_RETURN_IF_ERROR(CheckFixedRange(*delta));
    if (ClipToNorm(delta, clip_) < 1.0) {
      ++clipped_;
    } else {
      ++within_clip_;
    }
    FL_RETURN_IF_ERROR(AddWeighted(&sum_, 1, delta->data(), n_));
    ++count_;
    return Status::OK();
  }

  // A relay's private partial: the exact sum of its devices' clipped deltas,
  // each weighing one, `within_clip` of which were within the clip. The mean
  // of deltas clipped to C is within C, up to rounding: each clipped float is
  // within C (1 + 2^-24), each term within half a unit (2^-41) per value, and
  // the norm is summed in double (n 2^-53 relative). Beyond
  // C (1 + 2^-20) + sqrt(n) 2^-41 it is no honest relay's: scaled to C, as if
  // its devices had sent that much and no more.
  Status AddPartial(const Contribution& c) {
    if (c.within_clip < 0) {
      return Status::FailedPrecondition(
          "a partial aggregate without privacy for a private round (a private partial is "
          "needed)");
    }
    FixedSum* sum = c.sum;
    const int64_t devices = sum->weight;
    if (devices < 1 || c.within_clip > devices) {
      return Status::InvalidArgument("a private partial of " + std::to_string(devices) +
                                     " devices, " + std::to_string(c.within_clip) +
                                     " within the clip");
    }
    FL_RETURN_IF_ERROR(CheckSize(sum->values.size()));
    if (devices > std::numeric_limits<int64_t>::max() - sum_.weight) {
      return Status::InvalidArgument("total weight overflows");
    }
    double sq = 0;
    for (const FixedInt& x : sum->values) {
      const double v = FixedMean(x, devices);
      sq += v * v;
    }
    const double norm = std::sqrt(sq);
    const double allowed = clip_ * (1 + std::ldexp(1.0, -20)) +
                           std::sqrt(static_cast<double>(n_)) * std::ldexp(1.0, -41);
    if (!(norm <= allowed)) {
      const double f = norm > 0 && std::isfinite(norm) ? clip_ / norm : 0.0;
      for (FixedInt& x : sum->values) x = RoundFixed(static_cast<double>(x) * f);
    }
    FL_RETURN_IF_ERROR(AddSum(&sum_, *sum));
    count_ += devices;
    within_clip_ += c.within_clip;
    clipped_ += devices - c.within_clip;
    return Status::OK();
  }

  Status FinishPrivate(ModelState* model, float max_abs);
  Status ReadPrivacy(const std::string& bytes, double* clip, RdpAccountant* accountant) const;

  const std::unique_ptr<Strategy> inner_;
  const PrivacyOptions dp_;
  const double q_;            // sampling rate
  double clip_;               // clipping norm C (adaptive clipping moves it)
  RdpAccountant accountant_;  // privacy spent so far
  RoundInfo info_;
  size_t n_{0};
  int64_t count_{0};
  int64_t clipped_{0};
  int64_t within_clip_{0};
  FixedSum sum_;  // the clipped deltas' exact sum, each weighing one
};

// DP-FedAvg: the sum of the clipped deltas plus Gaussian noise of standard
// deviation z_delta * C on every kept coordinate, over the expected
// participants; then the strategy's step. The round is charged to the
// accountant whatever happens to the step (its noise was drawn for release).
Status Private::FinishPrivate(ModelState* model, float max_abs) {
  const double expected = info_.expected_participants;
  if (!(expected > 0)) {
    // (A round log from before the population was recorded.)
    return Status::InvalidArgument(
        "a private round needs its expected number of participants; the round does not "
        "record it");
  }
  double z = dp_.noise_multiplier;
  if (dp_.adaptive_clip) {
    auto zd = UpdateNoiseMultiplier(dp_.noise_multiplier, expected);
    if (!zd.ok()) return zd.status();
    z = *zd;
  }
  if (sum_.values.size() != n_) sum_.values.assign(n_, 0);
  Random rng(info_.noise_seed);
  const double sd = z * clip_;
  // The noise is added to the exact sum: the same release wherever the sum
  // was put together (relays, threads, order).
  std::vector<double> d(n_);
  for (size_t i = 0; i < n_; ++i) {
    const double x = std::ldexp(static_cast<double>(sum_.values[i]), -kFixedFractionBits);
    d[i] = (x + sd * rng.Normal()) / expected;
  }
  // The count of deltas within C, noised and used to move C (Andrew et al.
  // 2021, Alg. 1). Each device adds b - 1/2 (b = 1 when within C), so the
  // count's sensitivity is 1/2, which the split of the noise multiplier
  // (UpdateNoiseMultiplier) assumes.
  const double sigma_b = expected / 20;
  const double shifted = within_clip_ - 0.5 * (within_clip_ + clipped_);
  const double within = std::clamp((shifted + sigma_b * rng.Normal()) / expected + 0.5, 0.0, 1.0);
  accountant_.Compose(q_, dp_.noise_multiplier);
  Status st = Step(std::move(d), model, max_abs);
  if (dp_.adaptive_clip) {
    // Kept within 10^-6..10^6 times the starting norm: devices sending
    // nothing cannot drive it to 0 (no clipping, no noise).
    clip_ = std::clamp(clip_ * std::exp(-dp_.clip_learning_rate * (within - dp_.target_quantile)),
                       dp_.clip * 1e-6, dp_.clip * 1e6);
  }
  return st;
}

Status Private::ReadPrivacy(const std::string& bytes, double* clip,
                            RdpAccountant* accountant) const {
  wire::Reader r(bytes.data(), bytes.size());
  uint64_t steps = 0;
  uint32_t orders = 0;
  if (!r.GetF64(clip) || !r.GetU64(&steps) || !r.GetU32(&orders) || orders > 1024 ||
      r.remaining() != 8u * orders) {
    return Status::InvalidArgument("privacy state is truncated");
  }
  if (!(std::isfinite(*clip) && *clip > 0)) {
    return Status::InvalidArgument("privacy state has a bad clipping norm");
  }
  std::vector<double> rdp(orders);
  for (double& x : rdp) r.GetF64(&x);
  return accountant->Restore(steps, std::move(rdp));
}

Status Private::LoadState(const std::string& state, size_t num_values) {
  if (!dp_.enabled()) return inner_->LoadState(state, num_values);
  // A private run's checkpoints always hold its accountant: an empty state,
  // or one not marked private, is a run that released rounds without noise.
  const Status no_privacy = Status::InvalidArgument(
      "the checkpoint is of a run without differential privacy; its privacy cannot be "
      "accounted for from here");
  if (state.empty()) return no_privacy;
  std::string privacy;
  FL_RETURN_IF_ERROR(inner_->LoadStateWith(state, num_values, &privacy));
  if (privacy.empty()) return no_privacy;
  double clip = clip_;
  RdpAccountant accountant;
  FL_RETURN_IF_ERROR(ReadPrivacy(privacy, &clip, &accountant));
  clip_ = clip;
  accountant_ = std::move(accountant);
  return Status::OK();
}

}  // namespace

Result<std::unique_ptr<PrivateAggregator>> MakePrivateAggregator(const StrategyOptions& options,
                                                                 const PrivacyOptions& privacy,
                                                                 double sampling_rate) {
  FL_RETURN_IF_ERROR(CheckPrivacyOptions(privacy));
  auto strategy = MakeStrategy(options);
  if (!strategy.ok()) return strategy.status();
  if (!(*strategy)->is_mean()) {
    return Status::InvalidArgument("--strategy " + options.name +
                                   " cannot be made differentially private here: DP-FedAvg "
                                   "needs the mean (fedavg, fedavgm, fedadagrad, fedadam, "
                                   "fedyogi, fedprox)");
  }
  if (options.clip > 0) {
    return Status::InvalidArgument(
        "with differential privacy the clipping norm is --dp-clip; drop --clip");
  }
  if (!(sampling_rate > 0 && sampling_rate <= 1)) {
    return Status::InvalidArgument("the sampling rate must be in (0, 1]");
  }
  return std::unique_ptr<PrivateAggregator>(
      std::make_unique<Private>(std::move(strategy).value(), privacy, sampling_rate));
}

}  // namespace fl
