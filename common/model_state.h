// A model's parameters as plain data, independent of LibTorch.
//
// An ordered list of named tensors (the order of Module::named_parameters()),
// each with its shape and fp32 values in row-major order. This is what moves
// between client and server and what aggregation works on, so the server's
// arithmetic and the wire format never need torch headers.
#ifndef FEDGE_COMMON_MODEL_STATE_H_
#define FEDGE_COMMON_MODEL_STATE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"

namespace fl {

struct TensorState {
  std::string name;             // e.g. "conv1.weight"
  std::vector<int64_t> shape;   // e.g. {32, 1, 5, 5}
  std::vector<float> values;    // product(shape) values, row-major
};

struct ModelState {
  std::string architecture;          // model zoo name, e.g. "mnist_cnn"
  std::vector<TensorState> tensors;  // in canonical (registration) order

  // Total number of scalar parameters.
  int64_t NumParameters() const {
    int64_t n = 0;
    for (const auto& t : tensors) n += static_cast<int64_t>(t.values.size());
    return n;
  }
};

// Checks that every tensor has a non-empty name, non-negative dimensions, and
// exactly product(shape) values. Corruption otherwise, naming the tensor.
Status CheckModelState(const ModelState& state);

// Returns true iff `a` and `b` have the same tensor names, order and shapes.
bool SameLayout(const ModelState& a, const ModelState& b);

// All values of `state`, concatenated in canonical order (tensor order, row-major).
std::vector<float> Flatten(const ModelState& state);

// Adds `scale * delta[i]` to the i-th value of `state` in canonical order.
// InvalidArgument if delta.size() != state.NumParameters().
Status AddScaled(ModelState* state, const std::vector<float>& delta, float scale = 1.0f);

}  // namespace fl

#endif  // FEDGE_COMMON_MODEL_STATE_H_
