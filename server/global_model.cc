#include "server/global_model.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "common/wire/compact.h"
#include "crypto/message.h"
#include "server/aggregator.h"

namespace fl {

double KeptNorm(const ModelState& m) {
  double sq = 0;
  for (const auto& t : m.tensors) {
    for (float v : t.values) sq += static_cast<double>(v) * v;
  }
  return std::sqrt(sq);
}

void GlobalModel::Set(ModelState state, std::vector<uint8_t> trainable,
                      wire::ValueFormat downlink) {
  state_ = std::move(state);
  trainable_ = std::move(trainable);
  downlink_ = downlink;
  Changed();
}

void GlobalModel::SetTrainable(std::vector<uint8_t> trainable) {
  trainable_ = std::move(trainable);
  Changed();
}

void GlobalModel::Changed() {
  version_ = ModelVersion(wire::Compact(state_, downlink_));
  kept_count_ = static_cast<size_t>(KeptCountOf(state_, trainable_));
  max_abs_ = 0;
  for (const auto& t : state_.tensors) {
    for (float v : t.values) max_abs_ = std::max(max_abs_, std::fabs(double{v}));
  }
}

float GlobalModel::ValueLimit(double max_param_value) const {
  const float limit = static_cast<float>(max_param_value);
  return downlink_ == wire::ValueFormat::kFp16 ? std::min(limit, kMaxFp16Value) : limit;
}

void GlobalModel::InitReferenceNorm() {
  // Deltas cover the trainable tensors: their norm is the reference.
  if (reference_norm_ == 0) reference_norm_ = KeptNorm(SelectTensors(state_, trainable_));
}

Status GlobalModel::Step(Aggregator* aggregator, float max_abs) {
  if (trainable_.empty()) return aggregator->Finish(&state_, max_abs);
  // The step moves the trainable tensors only.
  ModelState view = SelectTensors(state_, trainable_);
  Status st = aggregator->Finish(&view, max_abs);
  for (size_t i = 0, v = 0; st.ok() && i < state_.tensors.size(); ++i) {
    if (trainable_[i]) state_.tensors[i].values = std::move(view.tensors[v++].values);
  }
  return st;
}

std::string PruningSchedule::Describe() const {
  if (!(to > 0)) return "";
  char text[160];
  std::snprintf(text, sizeof(text), "from %.9g to %.9g over rounds 1..%d, %s", from, to, rounds,
                erk ? "erk" : (global ? "global" : "per layer"));
  return text;
}

bool PruningSchedule::Tighten(uint64_t r, GlobalModel* model, Aggregator* aggregator) const {
  // The schedule reaches its end at round `rounds`: later rounds keep the
  // mask (pruning to a count rounded down would "tighten" it again).
  if (!(to > 0) || r > static_cast<uint64_t>(rounds)) return false;
  ModelState& state = model->state();
  const double target = GradualSparsity(from, to, static_cast<int>(r), rounds);
  if (target <= PrunableSparsity(state) + 1e-9) return false;
  const ModelState before = state;
  Status st = erk ? PruneErk(&state, target) : PruneByMagnitude(&state, target, this->global);
  if (!st.ok()) {
    spdlog::error("round {}: pruning to {:.1f}% failed, the mask stays: {}", r, 100 * target,
                  st.message());
    state = before;
    return false;
  }
  // Which of the previously kept values remain: the strategy's per-value
  // state follows them.
  std::vector<uint8_t> still_kept;
  still_kept.reserve(model->kept_count());
  for (size_t t = 0; t < before.tensors.size(); ++t) {
    const auto& old_mask = before.tensors[t].mask;
    const auto& new_mask = state.tensors[t].mask;
    for (size_t i = 0; i < before.tensors[t].values.size(); ++i) {
      if (!old_mask.empty() && !old_mask[i]) continue;
      still_kept.push_back(new_mask.empty() || new_mask[i] ? 1 : 0);
    }
  }
  if (std::find(still_kept.begin(), still_kept.end(), 0) == still_kept.end()) {
    state = before;  // nothing pruned: the mask stays as it was
    return false;
  }
  aggregator->KeepOnly(still_kept);
  const size_t before_kept = model->kept_count();
  model->Changed();
  spdlog::info(
      "round {}: mask tightened to {:.1f}% sparsity ({} -> {} kept values); the next TASK "
      "carries it",
      r, 100 * PrunableSparsity(state), before_kept, model->kept_count());
  return true;
}

}  // namespace fl
