// The layer graph of a TorchScript model, read from its forward code for the
// ONNX export: a chain of standard layers (Linear, Conv2d with stride 1 and
// square kernels, BatchNorm, ReLU, MaxPool2d 2x2, Flatten, Dropout) as
// torch.nn modules or torch functions compile to, read as the model runs in
// eval mode (BatchNorm on its running statistics, Dropout the identity).
// Anything else is refused by name.
#ifndef FEDGE_EXPERIMENTS_COMPRESS_SCRIPT_GRAPH_H_
#define FEDGE_EXPERIMENTS_COMPRESS_SCRIPT_GRAPH_H_

#include <string>
#include <vector>

#include "common/model_state.h"
#include "common/onnx_export.h"
#include "common/status.h"

namespace fl {

// Reads the TorchScript file `path` (whose weights `model` holds, named as
// Module::named_parameters() names them) for inputs of one example of shape
// `input` ([C, H, W] or [F]). InvalidArgument naming the operation or the
// argument the export cannot represent.
Result<OnnxGraph> ReadScriptGraph(const std::string& path, const std::vector<int64_t>& input,
                                  const ModelState& model);

}  // namespace fl

#endif  // FEDGE_EXPERIMENTS_COMPRESS_SCRIPT_GRAPH_H_
