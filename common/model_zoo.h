// The model zoo: classifiers by name.
//
//   mnist_2nn  784-200-200-10 MLP with ReLU (FedAvg paper "2NN"): 199,210 parameters.
//   mnist_cnn  5x5 conv 32 -> 2x2 max-pool -> 5x5 conv 64 -> 2x2 max-pool -> FC 512
//              -> FC 10, ReLU, "same" padding (FedAvg paper "CNN"): 1,663,370 parameters.
//
// Adding a model is one entry in the registry table in model_zoo.cc: a name, a
// one-line description and a factory. Or bring one as a TorchScript file
// (CreateModel("path/model.pt")).
#ifndef FEDGE_COMMON_MODEL_ZOO_H_
#define FEDGE_COMMON_MODEL_ZOO_H_

#include <torch/torch.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/model_state.h"
#include "common/status.h"

namespace fl {

// Logits for a batch, computed for inference only (no autograd graph).
using InferenceFn = std::function<torch::Tensor(const torch::Tensor&)>;

// A classifier over [N, 1, 28, 28] float images returning [N, classes] logits.
class Model : public torch::nn::Module {
 public:
  virtual torch::Tensor forward(torch::Tensor x) = 0;

  // A function computing the same logits as forward() for inference, prepared
  // once for the current weights and valid until they change. Call it with
  // gradients off (torch::NoGradGuard). The default is forward(); a model may
  // return a faster plan, e.g. one that keeps activations in oneDNN's blocked
  // layout between layers and converts its weights once instead of per batch.
  virtual InferenceFn PrepareInference();

  // Puts the modules holding the running statistics `names` (state tensor
  // names, "bn1.running_mean") in eval mode until the next train(): a frozen
  // BatchNorm normalises with its running statistics in training as it will
  // when the model serves, and leaves them as they are. The built-in models
  // have none.
  virtual void EvalModulesOf(const std::vector<std::string>& names) { (void)names; }

  // What this model's states carry as their architecture (ModelArchitecture
  // of the name it was created from), set by CreateModel.
  std::string architecture;
};

using ModelPtr = std::shared_ptr<Model>;

// One registered architecture.
struct ModelInfo {
  const char* name;
  const char* description;
};

// Returns the registered architectures, in registration order.
std::vector<ModelInfo> ListModels();

// Creates the model `name` with weights initialised deterministically from
// `seed` (the same name and seed give the same weights). NotFound for an unknown
// name, with the list of known ones in the message.
//
// A name ending in ".pt" is a TorchScript model file (scripted or traced in
// PyTorch, or built in C++ with torch::jit::Module::define); its weights are
// the file's and `seed` is not used. It must hold its state in float32
// parameters and BatchNorm's float32 running statistics (running_mean and
// running_var, federated with the parameters; num_batches_tracked stays
// local), with no tied weights; anything else is InvalidArgument
// naming the file and what is wrong. What it maps is checked against the data
// (CheckModelFitsData in common/trainer.h).
Result<ModelPtr> CreateModel(const std::string& name, uint64_t seed);

// The message of an exception from LibTorch (or any std::exception), without
// c10's C++ backtrace.
std::string TorchMessage(const std::exception& e);

// True when `name` names a TorchScript model file (it ends in ".pt").
bool IsScriptModelPath(const std::string& name);

// The architecture a model's state carries, which server and clients compare:
// the zoo name, or for a TorchScript file "torchscript:" and the first 16 hex
// digits of the file's SHA-256 (the same file on every machine, whatever its path).
Result<std::string> ModelArchitecture(const std::string& name);

// Number of scalar trainable parameters.
int64_t CountParameters(const torch::nn::Module& model);

// The tensors a model's state holds, in the state's order: its parameters,
// then its buffers (a TorchScript model's BatchNorm running statistics; the
// built-in models have none). Buffers are not trained by gradient: the
// forward pass in training mode updates them.
std::vector<torch::Tensor> StateTensors(const torch::nn::Module& model);
torch::OrderedDict<std::string, torch::Tensor> NamedStateTensors(const torch::nn::Module& model);

// Copies the state tensors of `model` out as plain data.
ModelState GetModelState(const std::string& architecture, const torch::nn::Module& model);

// Copies `state`'s values into `model` (masks are not part of a module; see
// MasksOf). InvalidArgument if names, order or shapes differ.
Status SetModelState(torch::nn::Module& model, const ModelState& state);

// Points `model`'s parameters at `state`'s values instead of copying them
// (for evaluation: one copy of the weights instead of two). `state` must stay
// alive and unchanged while the model is used, and the model must not be
// trained or given to SetModelState until it is bound again. Same checks as
// SetModelState.
Status BindModelState(torch::nn::Module& model, const ModelState& state);

// The masks of `state` as bool tensors for TrainOptions::masks (undefined for
// dense tensors): one byte an element, a quarter of a float mask.
std::vector<torch::Tensor> MasksOf(const ModelState& state);

}  // namespace fl

#endif  // FEDGE_COMMON_MODEL_ZOO_H_
