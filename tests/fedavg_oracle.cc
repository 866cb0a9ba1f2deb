#include "tests/fedavg_oracle.h"

#include <cmath>
#include <string>

namespace fl {
namespace {

Status CheckSameLayout(const ModelState& a, const ModelState& b, const std::string& what) {
  if (a.tensors.size() != b.tensors.size()) {
    return Status::InvalidArgument(what + " has " + std::to_string(a.tensors.size()) +
                                   " tensors, expected " + std::to_string(b.tensors.size()));
  }
  for (size_t i = 0; i < a.tensors.size(); ++i) {
    if (a.tensors[i].name != b.tensors[i].name || a.tensors[i].shape != b.tensors[i].shape ||
        a.tensors[i].values.size() != b.tensors[i].values.size()) {
      return Status::InvalidArgument(what + ": tensor " + std::to_string(i) + " ('" +
                                     a.tensors[i].name + "') does not match '" + b.tensors[i].name +
                                     "' of the global model");
    }
  }
  return Status::OK();
}

}  // namespace

Result<ModelState> FedAvg(const FedAvgOptions& options) {
  if (options.global == nullptr || options.updates == nullptr) {
    return Status::InvalidArgument("FedAvg needs a global model and a list of updates");
  }
  const auto& updates = *options.updates;
  if (updates.empty()) return Status::InvalidArgument("FedAvg with no updates");
  for (size_t k = 0; k < updates.size(); ++k) {
    if (updates[k].num_examples <= 0) {
      return Status::InvalidArgument("update " + std::to_string(k) + " has weight " +
                                     std::to_string(updates[k].num_examples) + " (must be > 0)");
    }
    FL_RETURN_IF_ERROR(
        CheckSameLayout(updates[k].delta, *options.global, "update " + std::to_string(k)));
  }
  // Per kept value: S = sum_k n_k round(d_k 2^40), n = sum_k n_k.
  const ModelState& global = *options.global;
  std::vector<__int128> sum;
  __int128 total = 0;
  for (const auto& u : updates) {
    size_t j = 0;
    for (size_t t = 0; t < global.tensors.size(); ++t) {
      const auto& mask = global.tensors[t].mask;
      const auto& d = u.delta.tensors[t].values;
      for (size_t i = 0; i < d.size(); ++i) {
        if (!mask.empty() && !mask[i]) continue;
        if (j == sum.size()) sum.push_back(0);
        const double scaled = std::ldexp(static_cast<double>(d[i]), 40);  // exact
        sum[j++] += static_cast<__int128>(u.num_examples) *
                    static_cast<__int128>(std::nearbyint(scaled));  // ties to even
      }
    }
    total += u.num_examples;
  }
  ModelState out = global;
  size_t j = 0;
  for (auto& t : out.tensors) {
    for (size_t i = 0; i < t.values.size(); ++i) {
      if (!t.mask.empty() && !t.mask[i]) continue;
      const double mean =
          static_cast<double>(sum[j++]) / static_cast<double>(total) * std::ldexp(1.0, -40);
      t.values[i] = static_cast<float>(t.values[i] + options.server_lr * mean);
    }
  }
  return out;
}

Result<ModelState> Difference(const ModelState& after, const ModelState& before) {
  FL_RETURN_IF_ERROR(CheckSameLayout(after, before, "model"));
  ModelState out = after;
  for (size_t t = 0; t < out.tensors.size(); ++t) {
    auto& v = out.tensors[t].values;
    const auto& b = before.tensors[t].values;
    for (size_t i = 0; i < v.size(); ++i) v[i] -= b[i];
  }
  return out;
}

}  // namespace fl
