// The LibTorch side of the aggregator: the model zoo's initial models and an
// evaluator on an MNIST-format test set. In fl_server_torch, so that fl_server
// itself stays free of LibTorch (a relay, or a server of models built
// elsewhere, links only what it uses).
#ifndef FEDGE_SERVER_TORCH_RUNTIME_H_
#define FEDGE_SERVER_TORCH_RUNTIME_H_

#include "server/evaluator.h"

namespace fl {

// Initial models from common/model_zoo.h; evaluation with common/trainer.h's
// Evaluate in batches of 50.
ModelRuntime TorchRuntime();

}  // namespace fl

#endif  // FEDGE_SERVER_TORCH_RUNTIME_H_
