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

}  // namespace fl

#endif  // FEDGE_COMMON_MODEL_STATE_H_
