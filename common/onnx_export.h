// ONNX export of a model for on-device inference (fl-compress export).
//
// The model is written as a standard ONNX graph (opset kOnnxOpset) from a
// list of standard layers (Linear, Conv2d, BatchNorm in eval mode, ReLU,
// MaxPool2d, Flatten), so any
// ONNX runtime runs it. The graph takes raw pixel values (0..255, float) and
// applies the input normalisation itself, the same float operations fedge's
// trainer applies (x / 255, then (x - mean) / std); the constants are also
// recorded in the model's metadata (fedge.normalize_*).
//
// Pruned weights are stored compactly: a tensor with a mask becomes a
// Constant with a sparse value (its kept values and their flat int64
// positions), which runtimes densify at load. With `int8`, weights of rank >= 2 are stored as
// int8 with one fp32 scale per output channel (symmetric, nearest rounding)
// and dequantized in the graph by DequantizeLinear.
//
// Torch-free: this reads a ModelState, so the server side can export what it
// holds without LibTorch.
#ifndef FEDGE_COMMON_ONNX_EXPORT_H_
#define FEDGE_COMMON_ONNX_EXPORT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "common/dataset.h"
#include "common/model_state.h"
#include "common/status.h"

namespace fl {

// The ONNX operator set the export targets (DequantizeLinear with a
// per-channel axis needs 13).
constexpr int kOnnxOpset = 13;

// One layer of an architecture's forward pass, in order.
enum class OnnxLayer { kFlatten, kLinear, kConv, kBatchNorm, kRelu, kMaxPool2, kIdentity };

struct OnnxLayerSpec {
  OnnxLayer kind;
  std::string name;     // tensor prefix ("fc1") for Linear, Conv and BatchNorm
  int64_t outputs{0};   // Linear: features out; Conv: channels out; BatchNorm: channels
  int64_t kernel{0};    // Conv: square kernel size (stride 1)
  int64_t pad{0};       // Conv: zero padding on every side
  double epsilon{0.0};  // BatchNorm: added to the running variance
};

// A model's forward pass as a chain of layers: the built-in architectures'
// are known; a TorchScript model's is read from its code by the caller
// (fl-compress, which links LibTorch).
struct OnnxGraph {
  std::string name;            // the architecture
  std::vector<int64_t> input;  // one example: [C, H, W] or [F]
  int64_t classes{0};
  std::vector<OnnxLayerSpec> layers;
};

struct OnnxExportOptions {
  // The layer graph of the model, for an architecture the export does not
  // know itself (a TorchScript model); nullptr: a built-in one.
  const OnnxGraph* graph{nullptr};
  // Input bytes 0..255 ('pixels', divided by 255 in the graph), or floats as
  // they are ('features', CSV data).
  bool byte_input{true};
  // Tensors with a mask as sparse constants (kept values + positions).
  // Off: every tensor dense.
  bool sparse{true};
  // Weights of rank >= 2 as int8 with per-output-channel scales.
  bool int8{false};
  // The input normalisation the graph applies after scaling by 1/255 (the
  // federation's: a run's `normalize` in its config.toml), recorded in the
  // metadata as "fedge.normalize". One pair, or one per input channel.
  Normalization normalization{MnistNormalization()};
  // The classes by logit index, recorded in the metadata as "fedge.classes"
  // (comma-separated) when not empty.
  std::vector<std::string> class_names;
  // Recorded in the model: producer version and the source model's version
  // (e.g. the .flm digest), free text.
  std::string producer_version;
  std::string model_version;
};

// What an export holds, for the caller's report.
struct OnnxExportStats {
  int64_t parameters{0};
  int64_t stored_values{0};  // values written (kept values for sparse tensors)
  int64_t bytes{0};          // size of the serialized model
};

// The architectures the export knows the layer graph of.
std::vector<std::string> OnnxExportableArchitectures();

// Serializes `model` as an ONNX ModelProto. InvalidArgument naming the
// architecture when its graph is not known, or the tensor when a tensor is
// missing, has an unexpected shape, or is left over.
Result<std::string> ExportOnnx(const ModelState& model, const OnnxExportOptions& options,
                               OnnxExportStats* stats = nullptr);

// Runs the ONNX checker and strict shape inference on a serialized model;
// InvalidArgument with the checker's message when it fails.
Status CheckOnnxModel(const std::string& bytes);

}  // namespace fl

#endif  // FEDGE_COMMON_ONNX_EXPORT_H_
