#include "server/aggregator.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

#include "common/random.h"
#include "common/wire/limits.h"
#include "common/wire/reader.h"
#include "server/private_aggregator.h"
#include "server/strategy.h"

namespace fl {
namespace {

enum class Rule : uint8_t { kMean, kMedian, kTrimmedMean, kKrum, kMultiKrum };

struct StrategyKind {
  const char* name;
  Rule rule;
  ServerOptimizer optimizer;
  double default_lr;
};

// fedprox is FedAvg on the server; its difference is the clients' proximal term.
constexpr StrategyKind kStrategies[] = {
    {"fedavg", Rule::kMean, ServerOptimizer::kSgd, 1.0},
    {"fedavgm", Rule::kMean, ServerOptimizer::kMomentum, 1.0},
    {"fedadagrad", Rule::kMean, ServerOptimizer::kAdagrad, 0.1},
    {"fedadam", Rule::kMean, ServerOptimizer::kAdam, 0.01},
    {"fedyogi", Rule::kMean, ServerOptimizer::kYogi, 0.01},
    {"fedprox", Rule::kMean, ServerOptimizer::kSgd, 1.0},
    {"median", Rule::kMedian, ServerOptimizer::kSgd, 1.0},
    {"trimmed_mean", Rule::kTrimmedMean, ServerOptimizer::kSgd, 1.0},
    {"krum", Rule::kKrum, ServerOptimizer::kSgd, 1.0},
    {"multikrum", Rule::kMultiKrum, ServerOptimizer::kSgd, 1.0},
};

const StrategyKind* FindStrategy(const std::string& name) {
  for (const auto& s : kStrategies) {
    if (name == s.name) return &s;
  }
  return nullptr;
}

// Serialized state: magic "FLAS" | version u32 = 2 | optimizer u8 | values u64
// | m (values x f32 bits) | v (values x f32 bits), moments present only for
// the optimizers that have them (values 0: none yet) | private u8, and when
// 1: clipping norm f64 | accountant steps u64 | orders u32 | RDP f64 each.
// Version 1 (before privacy) ends after the moments.
constexpr char kStateMagic[4] = {'F', 'L', 'A', 'S'};
constexpr uint32_t kStateVersion = 2;

int MomentsOf(ServerOptimizer opt) {
  switch (opt) {
    case ServerOptimizer::kSgd:
      return 0;
    case ServerOptimizer::kMomentum:
      return 1;
    default:
      return 2;
  }
}

class StrategyImpl final : public Strategy {
 public:
  StrategyImpl(const StrategyOptions& o, const StrategyKind& kind)
      : o_(o), kind_(kind), lr_(o.server_lr > 0 ? o.server_lr : kind.default_lr) {}

  const std::string& name() const override { return o_.name; }
  bool is_mean() const override { return kind_.rule == Rule::kMean; }

  void Begin(size_t num_values, const RoundInfo& /*info*/) override {
    n_ = num_values;
    count_ = clipped_ = 0;
    sum_ = FixedSum();
    kept_.clear();
    // (The sum is allocated by the first update it takes: AddWeighted and
    // AddSum size it; a privacy decorator's strategy never takes one.)
  }

  Status Add(const Contribution& c) override {
    if (c.sum) return AddPartial(c);
    return AddDelta(c.weight, c.delta);
  }

 private:
  Status AddDelta(int64_t weight, std::vector<float>* delta) {
    if (weight <= 0) {
      return Status::InvalidArgument("update weight " + std::to_string(weight) + " (must be > 0)");
    }
    FL_RETURN_IF_ERROR(CheckSize(delta->size()));
    if (weight > std::numeric_limits<int64_t>::max() - sum_.weight) {
      return Status::InvalidArgument("total weight overflows");
    }
    // Clipping scales in place: nothing is clipped until the update is sure
    // to be added (its values in the fixed-point range; clipping only
    // shrinks them).
    FL_RETURN_IF_ERROR(CheckFixedRange(*delta));
    if (ClipToNorm(delta, o_.clip) < 1.0) ++clipped_;
    if (kind_.rule == Rule::kMean) {
      FL_RETURN_IF_ERROR(AddWeighted(&sum_, weight, delta->data(), n_));
    } else {
      kept_.emplace_back();
      kept_.back().swap(*delta);
      sum_.weight += weight;
    }
    ++count_;
    return Status::OK();
  }

  Status AddPartial(const Contribution& c) {
    if (c.within_clip >= 0) {
      return Status::FailedPrecondition("a private partial aggregate for a server without privacy");
    }
    const int64_t weight = c.weight;
    FixedSum* sum = c.sum;
    FL_RETURN_IF_ERROR(CheckSize(sum->values.size()));
    if (weight <= 0 || weight > sum->weight) {
      return Status::InvalidArgument("a partial aggregate of weight " +
                                     std::to_string(sum->weight) + " counted as " +
                                     std::to_string(weight));
    }
    if (weight > std::numeric_limits<int64_t>::max() - sum_.weight) {
      return Status::InvalidArgument("total weight overflows");
    }
    if (weight < sum->weight) {
      // Capped: the same mean at the weight allowed. (Only a relay that
      // claims more than the others is; rounded once per value, in double.)
      const double f = static_cast<double>(weight) / static_cast<double>(sum->weight);
      for (FixedInt& x : sum->values) x = RoundFixed(static_cast<double>(x) * f);
      sum->weight = weight;
    }
    if (o_.clip > 0 || kind_.rule != Rule::kMean) {
      // Clipping and the robust rules work on deltas: the partial's mean.
      std::vector<float> mean(n_);
      for (size_t i = 0; i < n_; ++i) {
        mean[i] = static_cast<float>(FixedMean(sum->values[i], sum->weight));
        // (A mean a hair below 2^23 may round to it as a float: refused, as
        // a device's value there would be.)
        if (!(std::fabs(mean[i]) < static_cast<float>(kFixedMaxAbs))) {
          return Status::InvalidArgument("value " + std::to_string(i) +
                                         " of a partial's mean is beyond the fixed-point range");
        }
      }
      if (ClipToNorm(&mean, o_.clip) < 1.0) ++clipped_;
      if (kind_.rule != Rule::kMean) {
        kept_.push_back(std::move(mean));
        sum_.weight += weight;
        ++count_;
        return Status::OK();
      }
      FL_RETURN_IF_ERROR(AddWeighted(&sum_, weight, mean.data(), n_));
      ++count_;
      return Status::OK();
    }
    FL_RETURN_IF_ERROR(AddSum(&sum_, *sum));
    ++count_;
    return Status::OK();
  }

 public:
  int64_t count() const override { return count_; }
  int64_t clipped() const override { return clipped_; }

  Status FinishSum(FixedSum* out) override {
    if (count_ == 0) return Status::FailedPrecondition("no updates to aggregate");
    if (kind_.rule == Rule::kMean) {
      *out = std::move(sum_);
    } else {
      // A robust rule's aggregate D stands for the total weight of the
      // deltas it was taken from.
      const int64_t weight = sum_.weight;
      const std::vector<double> d = Combine();
      if (d.size() != n_) return Status::Internal("the rule's aggregate has the wrong size");
      out->weight = weight;
      out->values.resize(n_);
      for (size_t i = 0; i < n_; ++i) {
        out->values[i] = static_cast<FixedInt>(DoubleToFixed(d[i])) * weight;
      }
    }
    sum_ = FixedSum();
    kept_.clear();
    kept_.shrink_to_fit();
    return Status::OK();
  }

  Status Finish(ModelState* model, float max_abs) override {
    if (count_ == 0) return Status::FailedPrecondition("no updates to aggregate");
    return Step(Combine(), model, max_abs);
  }

  // Applies the optimizer's step from pseudo-gradient `d`, all or nothing.
  Status Step(std::vector<double> d, ModelState* model, float max_abs) override {
    if (d.size() != n_) return CheckSize(d.size());
    sum_ = FixedSum();
    kept_.clear();
    kept_.shrink_to_fit();
    if (kind_.optimizer == ServerOptimizer::kSgd) {
      return AddScaledKept(model, d, lr_, max_abs);
    }
    // The moments move only when the step is committed.
    EnsureMoments();
    std::vector<float> m = m_, v = v_;
    std::vector<double> step;
    ServerStep(kind_.optimizer, o_, lr_, d, &m, &v, &step);
    for (size_t i = 0; i < m.size(); ++i) {
      if (!std::isfinite(m[i]) || (!v.empty() && !std::isfinite(v[i]))) {
        return Status::InvalidArgument("the optimizer's moments would not be finite at value " +
                                       std::to_string(i));
      }
    }
    FL_RETURN_IF_ERROR(AddScaledKept(model, step, 1.0, max_abs));
    m_ = std::move(m);
    v_ = std::move(v);
    return Status::OK();
  }

  std::string SaveState() const override {
    if (kind_.optimizer == ServerOptimizer::kSgd || m_.empty()) return "";
    return SaveStateWith(false, "");
  }

  std::string SaveStateWith(bool is_private, const std::string& privacy) const override {
    wire::Writer w;
    w.PutBytes(kStateMagic, 4);
    w.PutU32(kStateVersion);
    w.PutU8(static_cast<uint8_t>(kind_.optimizer));
    w.PutU64(m_.size());
    for (const auto* vec : {&m_, &v_}) {
      if (vec->empty()) continue;
      for (float f : *vec) {
        uint32_t bits;
        std::memcpy(&bits, &f, 4);
        w.PutU32(bits);
      }
    }
    w.PutU8(is_private ? 1 : 0);
    if (is_private) w.PutBytes(privacy.data(), privacy.size());
    return w.Release();
  }

  Status LoadState(const std::string& state, size_t num_values) override {
    return LoadStateWith(state, num_values, nullptr);
  }

  Status LoadStateWith(const std::string& state, size_t num_values,
                       std::string* privacy) override {
    m_.clear();
    v_.clear();
    if (state.empty()) return Status::OK();  // no round aggregated yet
    if (state.size() < 17 || std::memcmp(state.data(), kStateMagic, 4) != 0) {
      return Status::InvalidArgument("strategy state is not a fedge strategy state");
    }
    wire::Reader r(state.data() + 4, state.size() - 4);
    uint32_t version = 0;
    uint8_t opt = 0;
    uint64_t values = 0;
    if (!r.GetU32(&version) || !r.GetU8(&opt) || !r.GetU64(&values)) {
      return Status::InvalidArgument("strategy state is truncated");
    }
    if (version != 1 && version != kStateVersion) {
      return Status::InvalidArgument("strategy state version " + std::to_string(version) +
                                     " not supported");
    }
    if (opt != static_cast<uint8_t>(kind_.optimizer)) {
      return Status::InvalidArgument("strategy state is of another server optimizer than '" +
                                     o_.name + "' uses");
    }
    if (values != 0 && values != num_values) {
      return Status::InvalidArgument("strategy state has " + std::to_string(values) +
                                     " values, the model " + std::to_string(num_values));
    }
    const int moments = values == 0 ? 0 : MomentsOf(kind_.optimizer);
    if (r.remaining() < static_cast<size_t>(moments) * 4 * values) {
      return Status::InvalidArgument("strategy state is truncated");
    }
    std::vector<float> m(moments >= 1 ? values : 0), v(moments == 2 ? values : 0);
    for (auto* vec : {&m, &v}) {
      for (float& f : *vec) {
        uint32_t bits = 0;
        r.GetU32(&bits);
        std::memcpy(&f, &bits, 4);
        if (!std::isfinite(f)) return Status::InvalidArgument("strategy state is not finite");
      }
    }
    uint8_t is_private = 0;
    if (version >= 2 && !r.GetU8(&is_private)) {
      return Status::InvalidArgument("strategy state is truncated");
    }
    if (is_private > 1) return Status::InvalidArgument("strategy state has a bad privacy flag");
    if (is_private == 1 && !privacy) {
      return Status::InvalidArgument(
          "the checkpoint is of a run with differential privacy; resume it with its --dp-* "
          "settings");
    }
    if (is_private == 1) {
      if (r.remaining() == 0) return Status::InvalidArgument("privacy state is truncated");
      privacy->assign(state.data() + state.size() - r.remaining(), r.remaining());
    } else if (r.remaining() != 0) {
      return Status::InvalidArgument("strategy state has the wrong length");
    } else if (privacy) {
      privacy->clear();
    }
    m_ = std::move(m);
    v_ = std::move(v);
    return Status::OK();
  }

  void KeepOnly(const std::vector<uint8_t>& still_kept) override {
    for (auto* vec : {&m_, &v_}) {
      if (vec->size() != still_kept.size()) continue;  // none yet
      size_t j = 0;
      for (size_t i = 0; i < still_kept.size(); ++i) {
        if (still_kept[i]) (*vec)[j++] = (*vec)[i];
      }
      vec->resize(j);
      vec->shrink_to_fit();
    }
  }

  double convex_step_scale() const override {
    if (kind_.optimizer == ServerOptimizer::kSgd) return lr_;
    // With momentum the step is lr (beta m + D); a clipped delta mixes in the
    // momentum-only step, which no single update checks: then only the
    // round's check holds.
    return kind_.optimizer == ServerOptimizer::kMomentum && !(o_.clip > 0) ? lr_ : 0.0;
  }

  const std::vector<float>* StepOffset(double* factor) const override {
    // Momentum: v = beta m + D, x += lr v.
    if (kind_.optimizer != ServerOptimizer::kMomentum || m_.empty()) return nullptr;
    *factor = o_.momentum;
    return &m_;
  }

  double proximal_mu() const override { return o_.name == "fedprox" ? o_.mu : 0.0; }

  size_t held_bytes_per_value() const override {
    return kind_.rule == Rule::kMean ? 0 : sizeof(float);
  }

 private:
  Status CheckSize(size_t values) const {
    if (values == n_) return Status::OK();
    return Status::InvalidArgument("delta has " + std::to_string(values) + " values, model has " +
                                   std::to_string(n_));
  }

  // The rule's pseudo-gradient.
  std::vector<double> Combine() {
    switch (kind_.rule) {
      case Rule::kMean:
        return MeanOf(sum_);
      case Rule::kMedian:
        return CoordinateMedian(kept_);
      case Rule::kTrimmedMean: {
        const size_t k = kept_.size();
        size_t trim = static_cast<size_t>(std::floor(o_.trim_fraction * static_cast<double>(k)));
        if (2 * trim >= k) trim = (k - 1) / 2;
        return TrimmedMean(kept_, trim);
      }
      case Rule::kKrum:
      case Rule::kMultiKrum: {
        const size_t k = kept_.size();
        size_t m = 1;
        if (kind_.rule == Rule::kMultiKrum) {
          m = o_.krum_m > 0                        ? static_cast<size_t>(o_.krum_m)
              : k > static_cast<size_t>(o_.krum_f) ? k - o_.krum_f
                                                   : 1;
        }
        const std::vector<size_t> chosen = KrumSelect(kept_, o_.krum_f, std::min(m, k));
        // The chosen deltas' plain mean, summed exactly.
        FixedSum mean;
        for (size_t i : chosen) {
          if (!AddWeighted(&mean, 1, kept_[i].data(), n_).ok()) return {};
        }
        return MeanOf(mean);
      }
    }
    return {};
  }

  void EnsureMoments() {
    if (m_.size() == n_) return;
    m_.assign(n_, 0.0f);
    if (MomentsOf(kind_.optimizer) == 2) {
      v_.assign(n_, static_cast<float>(o_.tau * o_.tau));
    }
  }

  const StrategyOptions o_;
  const StrategyKind kind_;
  const double lr_;
  size_t n_{0};
  int64_t count_{0};
  int64_t clipped_{0};
  FixedSum sum_;  // mean: sum_k n_k d_k exactly (robust rules: the weight only)
  std::vector<std::vector<float>> kept_;  // robust rules: the deltas
  std::vector<float> m_, v_;              // optimizer moments
};

}  // namespace

const std::vector<std::string>& StrategyNames() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> n;
    for (const auto& s : kStrategies) n.push_back(s.name);
    return n;
  }();
  return names;
}

double DefaultServerLr(const std::string& name) {
  const StrategyKind* k = FindStrategy(name);
  return k ? k->default_lr : 1.0;
}

int RobustMinimum(const StrategyOptions& o) {
  const StrategyKind* kind = FindStrategy(o.name);
  if (!kind || kind->rule == Rule::kMean) return 0;
  if (o.name == "krum" || o.name == "multikrum") return 2 * o.krum_f + 3;
  if (o.name == "trimmed_mean" && o.trim_fraction > 0) {
    return std::max(3, static_cast<int>(std::ceil(1.0 / o.trim_fraction - 1e-9)));
  }
  return 3;
}

Status CheckStrategyOptions(const StrategyOptions& o) {
  if (!FindStrategy(o.name)) {
    std::string all;
    for (const auto& n : StrategyNames()) all += (all.empty() ? "" : ", ") + n;
    return Status::InvalidArgument("--strategy '" + o.name + "' is not one of " + all);
  }
  auto in = [](double v, double lo, double hi) { return std::isfinite(v) && v >= lo && v <= hi; };
  if (!in(o.server_lr, 0, 1e6)) {
    return Status::InvalidArgument("--server-lr must be a finite number > 0 (0 = the default)");
  }
  if (!in(o.momentum, 0, 1) || o.momentum >= 1) {
    return Status::InvalidArgument("--server-momentum must be in [0, 1)");
  }
  if (!in(o.beta1, 0, 1) || o.beta1 >= 1)
    return Status::InvalidArgument("--beta1 must be in [0, 1)");
  if (!in(o.beta2, 0, 1) || o.beta2 >= 1)
    return Status::InvalidArgument("--beta2 must be in [0, 1)");
  if (!in(o.tau, 0, 1e6) || o.tau <= 0) return Status::InvalidArgument("--tau must be > 0");
  if (!in(o.mu, 0, wire::kMaxProximalMu)) {
    return Status::InvalidArgument("--mu must be in [0, " + std::to_string(wire::kMaxProximalMu) +
                                   "]");
  }
  if (!in(o.trim_fraction, 0, 0.5) || o.trim_fraction >= 0.5) {
    return Status::InvalidArgument("--trim-fraction must be in [0, 0.5)");
  }
  if (o.krum_f < 0) return Status::InvalidArgument("--krum-f must be >= 0");
  if (o.krum_m < 0) return Status::InvalidArgument("--krum-m must be >= 0 (0 = K - f)");
  if (!in(o.clip, 0, std::numeric_limits<double>::max())) {
    return Status::InvalidArgument("--clip must be a finite number >= 0 (0 = off)");
  }
  return Status::OK();
}

double ClipToNorm(std::vector<float>* delta, double clip) {
  if (!(clip > 0)) return 1.0;
  double sq = 0;
  for (float x : *delta) sq += static_cast<double>(x) * x;
  const double norm = std::sqrt(sq);
  if (!(norm > clip)) return 1.0;
  const double scale = clip / norm;
  for (float& x : *delta) x = static_cast<float>(x * scale);
  return scale;
}

std::vector<double> CoordinateMedian(const std::vector<std::vector<float>>& deltas) {
  if (deltas.empty()) return {};
  const size_t k = deltas.size(), n = deltas[0].size();
  std::vector<double> out(n);
  std::vector<float> col(k);
  const size_t mid = k / 2;
  for (size_t j = 0; j < n; ++j) {
    for (size_t i = 0; i < k; ++i) col[i] = deltas[i][j];
    std::nth_element(col.begin(), col.begin() + mid, col.end());
    double med = col[mid];
    if (k % 2 == 0) {
      // The lower middle is the largest value of the part before `mid`.
      const float lower = *std::max_element(col.begin(), col.begin() + mid);
      med = 0.5 * (static_cast<double>(lower) + med);
    }
    out[j] = med;
  }
  return out;
}

std::vector<double> TrimmedMean(const std::vector<std::vector<float>>& deltas, size_t trim) {
  if (deltas.empty()) return {};
  const size_t k = deltas.size(), n = deltas[0].size();
  if (2 * trim >= k) trim = (k - 1) / 2;
  std::vector<double> out(n);
  std::vector<float> col(k);
  for (size_t j = 0; j < n; ++j) {
    for (size_t i = 0; i < k; ++i) col[i] = deltas[i][j];
    // The `trim` smallest to the front and the `trim` largest to the back
    // (in linear time for large K), then the middle is summed exactly (fixed
    // point), so its order does not matter.
    // (A few values sort faster than two selections.)
    if (k <= 32) {
      std::sort(col.begin(), col.end());
    } else if (trim > 0) {
      std::nth_element(col.begin(), col.begin() + (trim - 1), col.end());
      std::nth_element(col.begin() + trim, col.end() - trim, col.end());
    }
    FixedInt s = 0;
    for (size_t i = trim; i < k - trim; ++i) s += ToFixed(col[i]);
    out[j] = FixedMean(s, static_cast<int64_t>(k - 2 * trim));
  }
  return out;
}

std::vector<double> KrumScores(const std::vector<std::vector<float>>& deltas, size_t neighbours) {
  const size_t k = deltas.size();
  std::vector<double> dist(k * k, 0.0);
  for (size_t a = 0; a < k; ++a) {
    for (size_t b = a + 1; b < k; ++b) {
      const float* x = deltas[a].data();
      const float* y = deltas[b].data();
      double s = 0;
      for (size_t j = 0; j < deltas[a].size(); ++j) {
        const double t = static_cast<double>(x[j]) - y[j];
        s += t * t;
      }
      dist[a * k + b] = dist[b * k + a] = s;
    }
  }
  std::vector<double> scores(k, 0.0);
  std::vector<double> row;
  for (size_t a = 0; a < k; ++a) {
    row.clear();
    for (size_t b = 0; b < k; ++b) {
      if (b != a) row.push_back(dist[a * k + b]);
    }
    const size_t take = std::min(neighbours, row.size());
    std::partial_sort(row.begin(), row.begin() + take, row.end());
    scores[a] = std::accumulate(row.begin(), row.begin() + take, 0.0);
  }
  return scores;
}

std::vector<size_t> KrumSelect(const std::vector<std::vector<float>>& deltas, int f, size_t m) {
  const size_t k = deltas.size();
  if (k == 0) return {};
  const long want = static_cast<long>(k) - f - 2;
  const size_t neighbours =
      static_cast<size_t>(std::clamp<long>(want, 1, std::max<long>(1, static_cast<long>(k) - 1)));
  const std::vector<double> scores = KrumScores(deltas, neighbours);
  std::vector<size_t> idx(k);
  std::iota(idx.begin(), idx.end(), 0);
  // Ties go to the delta whose bits compare lower (a total order: -0 and +0
  // differ), so the choice does not depend on the order the deltas came in;
  // only identical deltas stay tied, and either of them is the same choice.
  std::sort(idx.begin(), idx.end(), [&](size_t a, size_t b) {
    if (scores[a] != scores[b]) return scores[a] < scores[b];
    const size_t n = std::min(deltas[a].size(), deltas[b].size());
    const int c = std::memcmp(deltas[a].data(), deltas[b].data(), n * sizeof(float));
    return c != 0 ? c < 0 : deltas[a].size() < deltas[b].size();
  });
  idx.resize(std::min(std::max<size_t>(m, 1), k));
  return idx;
}

void ServerStep(ServerOptimizer opt, const StrategyOptions& o, double lr,
                const std::vector<double>& d, std::vector<float>* m, std::vector<float>* v,
                std::vector<double>* step) {
  const size_t n = d.size();
  step->assign(n, 0.0);
  switch (opt) {
    case ServerOptimizer::kSgd:
      for (size_t i = 0; i < n; ++i) (*step)[i] = lr * d[i];
      return;
    case ServerOptimizer::kMomentum:
      for (size_t i = 0; i < n; ++i) {
        const double mi = o.momentum * (*m)[i] + d[i];
        (*m)[i] = static_cast<float>(mi);
        (*step)[i] = lr * mi;
      }
      return;
    default:
      break;
  }
  const double b1 = o.beta1, b2 = o.beta2;
  for (size_t i = 0; i < n; ++i) {
    const double mi = b1 * (*m)[i] + (1 - b1) * d[i];
    const double d2 = d[i] * d[i];
    double vi = (*v)[i];
    if (opt == ServerOptimizer::kAdagrad) {
      vi = vi + d2;
    } else if (opt == ServerOptimizer::kAdam) {
      vi = b2 * vi + (1 - b2) * d2;
    } else {  // Yogi
      const double sign = vi > d2 ? 1.0 : (vi < d2 ? -1.0 : 0.0);
      vi = vi - (1 - b2) * d2 * sign;
    }
    (*m)[i] = static_cast<float>(mi);
    (*v)[i] = static_cast<float>(vi);
    // The step from the moments as stored, so a resumed run steps alike.
    (*step)[i] =
        lr * static_cast<double>((*m)[i]) / (std::sqrt(static_cast<double>((*v)[i])) + o.tau);
  }
}

Result<std::unique_ptr<Strategy>> MakeStrategy(const StrategyOptions& options) {
  FL_RETURN_IF_ERROR(CheckStrategyOptions(options));
  return std::unique_ptr<Strategy>(
      std::make_unique<StrategyImpl>(options, *FindStrategy(options.name)));
}

Result<std::unique_ptr<Aggregator>> MakeAggregator(const StrategyOptions& options,
                                                   const PrivacyOptions& privacy,
                                                   double sampling_rate) {
  if (privacy.clips()) {
    auto p = MakePrivateAggregator(options, privacy, sampling_rate);
    if (!p.ok()) return p.status();
    return std::unique_ptr<Aggregator>(std::move(p).value());
  }
  auto s = MakeStrategy(options);
  if (!s.ok()) return s.status();
  return std::unique_ptr<Aggregator>(std::move(s).value());
}

}  // namespace fl
