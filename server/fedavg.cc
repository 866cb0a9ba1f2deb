#include "server/fedavg.h"

#include <limits>
#include <string>

#include "server/aggregator.h"

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
  // The same arithmetic as a round on the server: its fedavg aggregator, fed
  // each delta's values at the global model's kept positions.
  const ModelState& global = *options.global;
  StrategyOptions so;
  so.server_lr = options.server_lr;
  auto agg = MakeAggregator(so);
  if (!agg.ok()) return agg.status();
  (*agg)->Begin(static_cast<size_t>(global.KeptCount()));
  std::vector<float> kept;
  for (const auto& u : updates) {
    kept.clear();
    for (size_t t = 0; t < global.tensors.size(); ++t) {
      const auto& mask = global.tensors[t].mask;
      const auto& d = u.delta.tensors[t].values;
      for (size_t i = 0; i < d.size(); ++i) {
        if (mask.empty() || mask[i]) kept.push_back(d[i]);
      }
    }
    FL_RETURN_IF_ERROR((*agg)->Add(u.num_examples, &kept));
  }
  ModelState out = global;
  FL_RETURN_IF_ERROR((*agg)->Finish(&out, std::numeric_limits<float>::max()));
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
