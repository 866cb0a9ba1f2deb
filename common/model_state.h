// A model's state as plain data, independent of LibTorch.
//
// An ordered list of named tensors (StateTensors() order: the parameters,
// then any BatchNorm running statistics), each with its shape, fp32 values in
// row-major order and, for pruned tensors, a mask. This is what moves between client and server and
// what aggregation works on, so the server's arithmetic and the wire format never need torch.
//
// The mask is shared state (DESIGN.md): a pruned value is exactly 0.0 and
// stays so through local training and aggregation. Deltas carry values only at
// kept positions, in canonical order: tensor order, then row-major, skipping
// pruned positions.
#ifndef FEDGE_COMMON_MODEL_STATE_H_
#define FEDGE_COMMON_MODEL_STATE_H_

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "common/status.h"

namespace fl {

struct TensorState {
  std::string name;            // e.g. "conv1.weight"
  std::vector<int64_t> shape;  // e.g. {32, 1, 5, 5}
  std::vector<float> values;   // product(shape) values, row-major
  // Empty: every value is kept (dense). Otherwise one byte per value, 1 = kept,
  // 0 = pruned (its value is 0.0).
  std::vector<uint8_t> mask;

  // Values kept by the mask (all of them when dense).
  int64_t KeptCount() const;
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
  // Parameters kept by the masks: the length of a delta.
  int64_t KeptCount() const {
    int64_t n = 0;
    for (const auto& t : tensors) n += t.KeptCount();
    return n;
  }
  // Fraction of parameters pruned.
  double Sparsity() const {
    const int64_t n = NumParameters();
    return n ? 1.0 - static_cast<double>(KeptCount()) / n : 0.0;
  }
};

// BatchNorm's running statistics: a tensor named "running_mean" or
// "running_var" (its last dotted part), as PyTorch names them. They are part
// of a model's state, federated like its weights: a client's delta carries
// how its training batches moved them, and FedAvg makes them the weighted
// mean of the clients'. They are never pruned (they have one dimension).
bool IsRunningStatistic(const std::string& name);

// Sets every negative value of a running variance to 0: a weighted mean of
// variances is never negative, but a quantized delta, a server optimizer's
// step or privacy noise can take one below zero, where BatchNorm would give
// NaN. Returns how many values it set.
int64_t ClampRunningVariances(ModelState* state);

// Checks that every tensor has a non-empty name, non-negative dimensions,
// exactly product(shape) values, a mask that is empty or of the same length
// with 0/1 bytes, and 0.0 at every pruned position. Corruption otherwise,
// naming the tensor.
Status CheckModelState(const ModelState& state);

// Returns true iff `a` and `b` have the same tensor names, order and shapes.
bool SameLayout(const ModelState& a, const ModelState& b);

// The kept values of `state` in canonical order (all values when dense).
std::vector<float> GatherKept(const ModelState& state);
// The kept values of one tensor, row-major.
std::vector<float> GatherKept(const TensorState& tensor);

// A mask as a bitmap, the form it takes on the wire and on disk: ceil(n / 8)
// bytes, bit k of byte k/8 (least significant first) = 1 when value k is kept,
// padding bits 0. Empty for an empty (dense) mask.
std::string PackMask(const std::vector<uint8_t>& mask);

// Reads a bitmap of `len` bytes for `n` values into `mask` (one byte per
// value) and returns how many are kept. Corruption when `len` is not
// ceil(n / 8) or a padding bit is set.
Result<size_t> UnpackMask(const char* bits, size_t len, size_t n, std::vector<uint8_t>* mask);

// `after - before` at the kept positions of `before`, in canonical order.
// InvalidArgument when the layouts differ.
Result<std::vector<float>> KeptDifference(const ModelState& after, const ModelState& before);

// On-device transfer learning (--trainable): which tensors of `state` train,
// one byte per tensor (1 = trains), from comma-separated shell patterns
// matched against tensor names ("fc2.*", "fc*,conv2.bias"). InvalidArgument
// naming a pattern that matches no tensor (with the tensor names), or when
// nothing would train.
Result<std::vector<uint8_t>> MatchTrainable(const ModelState& state, const std::string& patterns);

// The tensors of `state` with `which[i]` set, in order (all of them when
// `which` is empty): the part of a model a --trainable federation exchanges
// deltas of.
ModelState SelectTensors(const ModelState& state, const std::vector<uint8_t>& which);

// SelectTensors(state, which).KeptCount(), without the copy.
int64_t KeptCountOf(const ModelState& state, const std::vector<uint8_t>& which);

// Adds `scale * delta[i]` to the i-th kept value of `state` in canonical order;
// pruned values stay 0.0. InvalidArgument if delta.size() != state.KeptCount().
// All or nothing: InvalidArgument, and `state` untouched, when a new value would not
// be finite or would exceed `max_abs` in magnitude (65504 for a model sent as
// fp16, FLT_MAX otherwise).
Status AddScaledKept(ModelState* state, const std::vector<float>& delta, float scale = 1.0f,
                     float max_abs = std::numeric_limits<float>::max());
Status AddScaledKept(ModelState* state, const std::vector<double>& delta, double scale,
                     float max_abs = std::numeric_limits<float>::max());

// OK when every value of `state` is finite and at most `max_abs` in magnitude;
// otherwise InvalidArgument naming the first offending tensor and index.
Status CheckValueRange(const ModelState& state, float max_abs = std::numeric_limits<float>::max());

// Largest magnitude an fp16 value holds (the limit of a model sent as fp16).
constexpr float kMaxFp16Value = 65504.0f;

// Prunes `state` by magnitude to `sparsity` (fraction of prunable values set to
// zero and masked), counting values already pruned. Prunable tensors are those
// with 2 or more dimensions (weights); biases stay dense. `global` ranks all
// prunable values together (layers with many small weights lose more);
// otherwise each layer is pruned to `sparsity` on its own.
Status PruneByMagnitude(ModelState* state, double sparsity, bool global);

// Erdos-Renyi-Kernel layer-wise densities (Evci et al. 2020, "Rigging the
// Lottery"): a prunable tensor of shape [n_out, n_in, k...] keeps a fraction
// proportional to (n_out + n_in + sum k) / (n_out * n_in * prod k), scaled so
// that the model is `sparsity` sparse overall; a layer whose fraction would
// exceed 1 stays dense and the rest are scaled again. Returns one density per
// tensor (1 for tensors that are not prunable).
std::vector<double> ErkDensities(const ModelState& state, double sparsity);

// Prunes each prunable tensor by magnitude to its ERK density (counting
// values already pruned).
Status PruneErk(ModelState* state, double sparsity);

// The sparsity after round `round` on Zhu & Gupta's gradual schedule (2017):
// s = final + (initial - final) (1 - t / rounds)^3, t = min(round, rounds):
// fast at first, slow near the end; `final` from round `rounds` on.
double GradualSparsity(double initial, double final, int round, int rounds);

// Fraction of the prunable values (tensors of 2 or more dimensions) pruned.
double PrunableSparsity(const ModelState& state);

}  // namespace fl

#endif  // FEDGE_COMMON_MODEL_STATE_H_
