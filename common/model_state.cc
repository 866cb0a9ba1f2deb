#include "common/model_state.h"

namespace fl {

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

std::vector<float> Flatten(const ModelState& state) {
  std::vector<float> out;
  out.reserve(state.NumParameters());
  for (const auto& t : state.tensors) out.insert(out.end(), t.values.begin(), t.values.end());
  return out;
}

Status AddScaled(ModelState* state, const std::vector<float>& delta, float scale) {
  if (static_cast<int64_t>(delta.size()) != state->NumParameters()) {
    return Status::InvalidArgument("delta has " + std::to_string(delta.size()) +
                                   " values, model has " +
                                   std::to_string(state->NumParameters()));
  }
  size_t k = 0;
  for (auto& t : state->tensors) {
    for (float& v : t.values) v += scale * delta[k++];
  }
  return Status::OK();
}

}  // namespace fl
