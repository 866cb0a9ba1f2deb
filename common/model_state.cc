#include "common/model_state.h"

#include <fnmatch.h>

#include <algorithm>
#include <cmath>
#include <numeric>

namespace fl {

int64_t TensorState::KeptCount() const {
  if (mask.empty()) return static_cast<int64_t>(values.size());
  int64_t n = 0;
  for (uint8_t m : mask) n += m;
  return n;
}

namespace {

// "bn1.running_var" -> "running_var".
std::string LastPart(const std::string& name) {
  const size_t dot = name.rfind('.');
  return dot == std::string::npos ? name : name.substr(dot + 1);
}

}  // namespace

bool IsRunningStatistic(const std::string& name) {
  const std::string last = LastPart(name);
  return last == "running_mean" || last == "running_var";
}

int64_t ClampRunningVariances(ModelState* state) {
  int64_t clamped = 0;
  for (auto& t : state->tensors) {
    if (LastPart(t.name) != "running_var") continue;
    for (float& v : t.values) {
      if (v < 0.0f) {
        v = 0.0f;
        ++clamped;
      }
    }
  }
  return clamped;
}

Status CheckModelState(const ModelState& state) {
  for (size_t i = 0; i < state.tensors.size(); ++i) {
    const TensorState& t = state.tensors[i];
    if (t.name.empty()) return Status::Corruption("tensor " + std::to_string(i) + " has no name");
    // Multiply with a saturating bound so a hostile shape cannot overflow.
    uint64_t n = 1;
    for (int64_t d : t.shape) {
      if (d < 0) return Status::Corruption("tensor '" + t.name + "' has a negative dimension");
      n = (d != 0 && n > (uint64_t{1} << 40) / static_cast<uint64_t>(d)) ? (uint64_t{1} << 41)
                                                                         : n * d;
    }
    if (n != t.values.size()) {
      return Status::Corruption("tensor '" + t.name + "' has " + std::to_string(t.values.size()) +
                                " values but its shape implies " + std::to_string(n));
    }
    if (!t.mask.empty()) {
      if (t.mask.size() != t.values.size()) {
        return Status::Corruption("tensor '" + t.name + "' has a mask of " +
                                  std::to_string(t.mask.size()) + " entries for " +
                                  std::to_string(t.values.size()) + " values");
      }
      for (size_t k = 0; k < t.mask.size(); ++k) {
        if (t.mask[k] > 1) {
          return Status::Corruption("tensor '" + t.name + "' mask entry " + std::to_string(k) +
                                    " is not 0 or 1");
        }
        if (t.mask[k] == 0 && t.values[k] != 0.0f) {
          return Status::Corruption("tensor '" + t.name +
                                    "' has a nonzero value at pruned position " +
                                    std::to_string(k));
        }
      }
    }
  }
  return Status::OK();
}

bool SameLayout(const ModelState& a, const ModelState& b) {
  if (a.architecture != b.architecture || a.tensors.size() != b.tensors.size()) return false;
  for (size_t i = 0; i < a.tensors.size(); ++i) {
    if (a.tensors[i].name != b.tensors[i].name || a.tensors[i].shape != b.tensors[i].shape ||
        a.tensors[i].values.size() != b.tensors[i].values.size()) {
      return false;
    }
  }
  return true;
}

namespace {

void AppendKept(const TensorState& t, std::vector<float>* out) {
  if (t.mask.empty()) {
    out->insert(out->end(), t.values.begin(), t.values.end());
    return;
  }
  for (size_t k = 0; k < t.values.size(); ++k) {
    if (t.mask[k]) out->push_back(t.values[k]);
  }
}

}  // namespace

std::vector<float> GatherKept(const ModelState& state) {
  std::vector<float> out;
  out.reserve(state.KeptCount());
  for (const auto& t : state.tensors) AppendKept(t, &out);
  return out;
}

std::vector<float> GatherKept(const TensorState& tensor) {
  std::vector<float> out;
  out.reserve(tensor.KeptCount());
  AppendKept(tensor, &out);
  return out;
}

std::string PackMask(const std::vector<uint8_t>& mask) {
  std::string bits((mask.size() + 7) / 8, '\0');
  for (size_t k = 0; k < mask.size(); ++k) {
    if (mask[k]) bits[k >> 3] |= static_cast<char>(1 << (k & 7));
  }
  return bits;
}

Result<size_t> UnpackMask(const char* bits, size_t len, size_t n, std::vector<uint8_t>* mask) {
  if (len != (n + 7) / 8) {
    return Status::Corruption("mask is " + std::to_string(len) + " bytes, shape needs " +
                              std::to_string((n + 7) / 8));
  }
  const auto* b = reinterpret_cast<const uint8_t*>(bits);
  if (n % 8 && (b[n / 8] >> (n % 8)) != 0) return Status::Corruption("mask has padding bits set");
  mask->resize(n);
  size_t kept = 0;
  for (size_t k = 0; k < n; ++k) {
    (*mask)[k] = (b[k >> 3] >> (k & 7)) & 1;
    kept += (*mask)[k];
  }
  return kept;
}

Result<std::vector<float>> KeptDifference(const ModelState& after, const ModelState& before) {
  if (!SameLayout(after, before)) {
    return Status::InvalidArgument("models differ in layout ('" + after.architecture + "' vs '" +
                                   before.architecture + "')");
  }
  std::vector<float> out;
  out.reserve(before.KeptCount());
  for (size_t i = 0; i < before.tensors.size(); ++i) {
    const auto& a = after.tensors[i].values;
    const auto& b = before.tensors[i].values;
    const auto& m = before.tensors[i].mask;
    for (size_t k = 0; k < b.size(); ++k) {
      if (m.empty() || m[k]) out.push_back(a[k] - b[k]);
    }
  }
  return out;
}

namespace {

std::string DescribeOutOfRange(double v, float max_abs) {
  if (!std::isfinite(v)) return std::to_string(v) + ", not finite";
  return std::to_string(v) + ", beyond the limit " + std::to_string(max_abs);
}

template <typename T, typename S>
Status AddScaledKeptImpl(ModelState* state, const std::vector<T>& delta, S scale, float max_abs) {
  if (static_cast<int64_t>(delta.size()) != state->KeptCount()) {
    return Status::InvalidArgument("delta has " + std::to_string(delta.size()) +
                                   " values, model keeps " + std::to_string(state->KeptCount()));
  }
  // First pass checks every new value (in the wider type, before it is
  // narrowed to float: a double beyond FLT_MAX does not convert), second
  // pass writes them. A refused update leaves the model as it was.
  const double limit = max_abs;
  size_t j = 0;
  for (const auto& t : state->tensors) {
    for (size_t k = 0; k < t.values.size(); ++k) {
      if (!t.mask.empty() && !t.mask[k]) continue;
      const double v = static_cast<double>(t.values[k]) + static_cast<double>(scale * delta[j++]);
      if (!(std::fabs(v) <= limit)) {  // also NaN
        return Status::InvalidArgument("value " + std::to_string(k) + " of '" + t.name +
                                       "' would become " + DescribeOutOfRange(v, max_abs));
      }
    }
  }
  j = 0;
  for (auto& t : state->tensors) {
    for (size_t k = 0; k < t.values.size(); ++k) {
      if (t.mask.empty() || t.mask[k]) {
        t.values[k] = static_cast<float>(t.values[k] + scale * delta[j++]);
      }
    }
  }
  return Status::OK();
}

}  // namespace

Status AddScaledKept(ModelState* state, const std::vector<float>& delta, float scale,
                     float max_abs) {
  return AddScaledKeptImpl(state, delta, scale, max_abs);
}

Status AddScaledKept(ModelState* state, const std::vector<double>& delta, double scale,
                     float max_abs) {
  return AddScaledKeptImpl(state, delta, scale, max_abs);
}

Status CheckValueRange(const ModelState& state, float max_abs) {
  for (const auto& t : state.tensors) {
    for (size_t k = 0; k < t.values.size(); ++k) {
      if (!(std::fabs(t.values[k]) <= max_abs)) {
        return Status::InvalidArgument("value " + std::to_string(k) + " of '" + t.name + "' is " +
                                       DescribeOutOfRange(t.values[k], max_abs));
      }
    }
  }
  return Status::OK();
}

Status PruneByMagnitude(ModelState* state, double sparsity, bool global) {
  if (!(sparsity >= 0 && sparsity < 1)) {
    return Status::InvalidArgument("sparsity must be in [0, 1), got " + std::to_string(sparsity));
  }
  std::vector<TensorState*> prunable;
  for (auto& t : state->tensors) {
    if (t.shape.size() >= 2) prunable.push_back(&t);
  }
  // Prunes the `drop` smallest-magnitude currently kept values of `ts` together.
  auto prune = [](const std::vector<TensorState*>& ts, double frac) {
    std::vector<std::pair<float, std::pair<size_t, size_t>>> all;  // |v|, (tensor, index)
    for (size_t i = 0; i < ts.size(); ++i) {
      for (size_t k = 0; k < ts[i]->values.size(); ++k) {
        all.push_back({std::fabs(ts[i]->values[k]), {i, k}});
      }
    }
    const size_t drop = static_cast<size_t>(std::llround(frac * all.size()));
    if (drop == 0) return;
    std::nth_element(all.begin(), all.begin() + (drop - 1), all.end());
    for (size_t j = 0; j < drop; ++j) {
      TensorState* t = ts[all[j].second.first];
      if (t->mask.empty()) t->mask.assign(t->values.size(), 1);
      t->mask[all[j].second.second] = 0;
      t->values[all[j].second.second] = 0.0f;
    }
  };
  if (global) {
    prune(prunable, sparsity);
  } else {
    for (TensorState* t : prunable) prune({t}, sparsity);
  }
  for (TensorState* t : prunable) {
    if (t->mask.empty()) t->mask.assign(t->values.size(), 1);
  }
  return Status::OK();
}

std::vector<double> ErkDensities(const ModelState& state, double sparsity) {
  const size_t n = state.tensors.size();
  std::vector<double> density(n, 1.0), score(n, 0.0);
  std::vector<bool> free(n, false);  // prunable and not yet forced dense
  double total = 0;
  for (size_t i = 0; i < n; ++i) {
    const auto& shape = state.tensors[i].shape;
    if (shape.size() < 2) continue;
    double sum = 0, prod = 1;
    for (int64_t d : shape) {
      sum += static_cast<double>(d);
      prod *= static_cast<double>(d);
    }
    score[i] = sum / prod;
    free[i] = true;
    total += prod;
  }
  const double keep = (1 - sparsity) * total;  // prunable values to keep
  for (;;) {
    // Values the dense layers keep; the free ones share the rest by score.
    double dense = 0, weighted = 0;
    for (size_t i = 0; i < n; ++i) {
      if (state.tensors[i].shape.size() < 2) continue;
      const double size = static_cast<double>(state.tensors[i].values.size());
      if (free[i]) {
        weighted += score[i] * size;
      } else {
        dense += size;
      }
    }
    if (weighted <= 0) break;
    const double eps = (keep - dense) / weighted;
    bool changed = false;
    for (size_t i = 0; i < n; ++i) {
      if (!free[i]) continue;
      if (eps * score[i] >= 1) {
        free[i] = false;
        density[i] = 1;
        changed = true;
      }
    }
    if (changed) continue;
    for (size_t i = 0; i < n; ++i) {
      if (free[i]) density[i] = std::max(0.0, eps * score[i]);
    }
    break;
  }
  return density;
}

Status PruneErk(ModelState* state, double sparsity) {
  if (!(sparsity >= 0 && sparsity < 1)) {
    return Status::InvalidArgument("sparsity must be in [0, 1), got " + std::to_string(sparsity));
  }
  const std::vector<double> density = ErkDensities(*state, sparsity);
  for (size_t i = 0; i < state->tensors.size(); ++i) {
    TensorState& t = state->tensors[i];
    if (t.shape.size() < 2) continue;
    ModelState one;
    one.tensors.push_back(std::move(t));
    // At least one value of a layer stays (PruneByMagnitude rounds to the nearest count).
    const double n = static_cast<double>(one.tensors[0].values.size());
    Status st = PruneByMagnitude(&one, std::min(1.0 - density[i], (n - 1.0) / n),
                                 /*global=*/true);
    t = std::move(one.tensors[0]);
    FL_RETURN_IF_ERROR(st);
  }
  return Status::OK();
}

double GradualSparsity(double initial, double final, int round, int rounds) {
  if (rounds <= 0 || round >= rounds) return final;
  if (round <= 0) return initial;
  const double left = 1.0 - static_cast<double>(round) / rounds;
  return final + (initial - final) * left * left * left;
}

double PrunableSparsity(const ModelState& state) {
  double pruned = 0, total = 0;
  for (const auto& t : state.tensors) {
    if (t.shape.size() < 2) continue;
    total += static_cast<double>(t.values.size());
    if (t.mask.empty()) continue;
    for (uint8_t m : t.mask) pruned += m == 0;
  }
  return total > 0 ? pruned / total : 0.0;
}

Result<std::vector<uint8_t>> MatchTrainable(const ModelState& state, const std::string& patterns) {
  std::vector<uint8_t> which(state.tensors.size(), 0);
  std::string names;
  for (const auto& t : state.tensors) names += (names.empty() ? "" : ", ") + t.name;
  size_t pos = 0;
  while (pos <= patterns.size()) {
    const size_t comma = std::min(patterns.find(',', pos), patterns.size());
    const std::string pattern = patterns.substr(pos, comma - pos);
    pos = comma + 1;
    if (pattern.empty()) continue;
    bool matched = false;
    for (size_t i = 0; i < state.tensors.size(); ++i) {
      if (fnmatch(pattern.c_str(), state.tensors[i].name.c_str(), 0) == 0) {
        which[i] = 1;
        matched = true;
      }
    }
    if (!matched) {
      return Status::InvalidArgument("--trainable '" + pattern + "'",
                                     "matches no tensor of the model (" + names + ")");
    }
  }
  if (std::find(which.begin(), which.end(), 1) == which.end()) {
    return Status::InvalidArgument("--trainable '" + patterns + "'", "names no tensor");
  }
  return which;
}

int64_t KeptCountOf(const ModelState& state, const std::vector<uint8_t>& which) {
  int64_t n = 0;
  for (size_t i = 0; i < state.tensors.size(); ++i) {
    if (which.empty() || (i < which.size() && which[i])) n += state.tensors[i].KeptCount();
  }
  return n;
}

ModelState SelectTensors(const ModelState& state, const std::vector<uint8_t>& which) {
  if (which.empty()) return state;
  ModelState out;
  out.architecture = state.architecture;
  for (size_t i = 0; i < state.tensors.size() && i < which.size(); ++i) {
    if (which[i]) out.tensors.push_back(state.tensors[i]);
  }
  return out;
}

}  // namespace fl
