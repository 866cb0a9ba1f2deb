#include "common/model_zoo.h"

#include <torch/script.h>

#include <functional>
#include <map>
#include <mutex>
#include <sstream>

#include "common/content_id.h"
#include "common/file_util.h"
#include "common/script_check.h"

namespace fl {
namespace {

// FedAvg "2NN": two hidden layers of 200 units.
class Mnist2nn final : public Model {
 public:
  Mnist2nn() {
    fc1_ = register_module("fc1", torch::nn::Linear(784, 200));
    fc2_ = register_module("fc2", torch::nn::Linear(200, 200));
    fc3_ = register_module("fc3", torch::nn::Linear(200, 10));
  }
  torch::Tensor forward(torch::Tensor x) override {
    x = x.flatten(1);
    x = torch::relu(fc1_->forward(x));
    x = torch::relu(fc2_->forward(x));
    return fc3_->forward(x);
  }

 private:
  torch::nn::Linear fc1_{nullptr}, fc2_{nullptr}, fc3_{nullptr};
};

// FedAvg "CNN". Padding 2 keeps 28x28 through conv1 and 14x14 through conv2, so
// the flattened size is 7*7*64 = 3136 and the total is 1,663,370 parameters.
class MnistCnn final : public Model {
 public:
  MnistCnn() {
    conv1_ =
        register_module("conv1", torch::nn::Conv2d(torch::nn::Conv2dOptions(1, 32, 5).padding(2)));
    conv2_ =
        register_module("conv2", torch::nn::Conv2d(torch::nn::Conv2dOptions(32, 64, 5).padding(2)));
    fc1_ = register_module("fc1", torch::nn::Linear(7 * 7 * 64, 512));
    fc2_ = register_module("fc2", torch::nn::Linear(512, 10));
  }
  torch::Tensor forward(torch::Tensor x) override {
    x = torch::max_pool2d(torch::relu(conv1_->forward(x)), 2);
    x = torch::max_pool2d(torch::relu(conv2_->forward(x)), 2);
    x = torch::relu(fc1_->forward(x.flatten(1)));
    return fc2_->forward(x);
  }

  // oneDNN end to end through both conv blocks: one layout conversion in, one
  // out, weights reordered once per plan. ATen's NCHW path converts to and from
  // the blocked layout around every convolution and computes max-pool indices
  // it then throws away. fl-bench-eval on an AMD EPYC, 10k MNIST test images,
  // batch 100, one thread: 1.18 s with this plan, 2.21 s with forward().
  InferenceFn PrepareInference() override {
    // (--reproducible switches oneDNN off: its kernels follow the CPU.)
    if (!at::hasMKLDNN() || !at::globalContext().userEnabledMkldnn() ||
        conv1_->weight.scalar_type() != torch::kFloat32) {
      return Model::PrepareInference();
    }
    torch::NoGradGuard no_grad;
    const std::vector<int64_t> pad{2, 2}, stride{1, 1}, dilation{1, 1};
    torch::Tensor w1 = at::mkldnn_reorder_conv2d_weight(conv1_->weight.detach().to_mkldnn(), pad,
                                                        stride, dilation, 1);
    torch::Tensor w2 = at::mkldnn_reorder_conv2d_weight(conv2_->weight.detach().to_mkldnn(), pad,
                                                        stride, dilation, 1);
    return [this, w1, w2, pad, stride, dilation](const torch::Tensor& input) {
      torch::Tensor x = input.contiguous().to_mkldnn();
      x = at::mkldnn_convolution(x, w1, conv1_->bias, pad, stride, dilation, 1);
      x = at::max_pool2d(at::relu_(x), {2, 2});
      x = at::mkldnn_convolution(x, w2, conv2_->bias, pad, stride, dilation, 1);
      x = at::max_pool2d(at::relu_(x), {2, 2}).to_dense();
      x = torch::relu(fc1_->forward(x.flatten(1)));
      return fc2_->forward(x);
    };
  }

 private:
  torch::nn::Conv2d conv1_{nullptr}, conv2_{nullptr};
  torch::nn::Linear fc1_{nullptr}, fc2_{nullptr};
};

// A TorchScript module (scripted or traced in PyTorch, or defined in C++),
// trained through its parameters. Its parameters are registered, shared, on a
// tree of holder modules that mirrors the script's names ("fc1.weight" is
// parameter "weight" of child "fc1"), so named_parameters(), the optimizer,
// SetModelState and GetModelState see the script's own tensors.
class ScriptModel final : public Model {
 public:
  explicit ScriptModel(torch::jit::Module script) : script_(std::move(script)) {
    for (const auto& p : script_.named_parameters(/*recurse=*/true)) {
      Register(p.name, p.value, /*buffer=*/false);
    }
    // The running statistics, after every parameter (the state's order);
    // num_batches_tracked stays the script's own.
    for (const auto& b : script_.named_buffers(/*recurse=*/true)) {
      if (IsRunningStatistic(b.name)) Register(b.name, b.value, /*buffer=*/true);
    }
  }
  torch::Tensor forward(torch::Tensor x) override {
    // The input is a view of the caller's data set: a script that writes into
    // it would change the data under training and evaluation.
    const auto version = x._version();
    // Nor may it write into its own tensors (a way to hand the device's data
    // to the server in the delta): every in-place write, through any alias,
    // moves the tensor's version, which no forward of an honest model does
    // (torch.batch_norm moves running statistics without it).
    std::vector<int64_t> versions;
    versions.reserve(federated_.size());
    for (const auto& named : federated_) versions.push_back(named.second._version());
    torch::Tensor out = script_.forward({x}).toTensor();
    TORCH_CHECK(x._version() == version, "the script modifies its input in place");
    for (size_t i = 0; i < federated_.size(); ++i) {
      TORCH_CHECK(federated_[i].second._version() == versions[i],
                  "the script writes into its own '", federated_[i].first,
                  "': a model's code may not change its parameters or running statistics");
    }
    return out;
  }
  void train(bool on) override {
    torch::nn::Module::train(on);
    script_.train(on);
  }
  void EvalModulesOf(const std::vector<std::string>& names) override {
    for (const std::string& name : names) {
      torch::jit::Module owner = script_;
      size_t start = 0;
      for (size_t dot; (dot = name.find('.', start)) != std::string::npos; start = dot + 1) {
        owner = owner.attr(name.substr(start, dot - start)).toModule();
      }
      owner.train(false);
    }
  }

 private:
  void Register(const std::string& dotted, const torch::Tensor& value, bool buffer) {
    federated_.emplace_back(dotted, value);
    torch::nn::Module* at = this;
    size_t start = 0;
    for (size_t dot; (dot = dotted.find('.', start)) != std::string::npos; start = dot + 1) {
      const std::string child = dotted.substr(start, dot - start);
      const auto children = at->named_children();  // owns what find() points into
      const auto* found = children.find(child);
      at = found ? found->get()
                 : at->register_module(child, std::make_shared<torch::nn::Module>()).get();
    }
    if (buffer) {
      at->register_buffer(dotted.substr(start), value);
    } else {
      // Every parameter trains (a script saved with requires_grad off included).
      at->register_parameter(dotted.substr(start), value, /*requires_grad=*/true);
    }
  }

  torch::jit::Module script_;
  std::vector<std::pair<std::string, torch::Tensor>> federated_;  // the state, by name
};

// Loads and checks a TorchScript model file: float32 parameters, no tied
// weights, and no buffers but BatchNorm's (float32 running statistics,
// federated with the parameters, and an int64 num_batches_tracked, kept local).
Result<ModelPtr> LoadScriptModel(const std::string& path) {
  // Read once: the id and the module come from the same bytes.
  auto bytes = ReadFile(path);
  if (!bytes.ok()) return bytes.status();
  // Nothing of it runs before its code has been read (common/script_check.h).
  if (Status st = CheckScriptArchive(*bytes); !st.ok()) {
    return Status::InvalidArgument(path, st.message());
  }
  torch::jit::Module script;
  try {
    std::istringstream in(*bytes);
    script = torch::jit::load(in, torch::kCPU);
  } catch (const std::exception& e) {
    return Status::InvalidArgument(path, "not a TorchScript model: " + TorchMessage(e));
  }
  std::map<const void*, std::string> seen;  // tensor -> its first name
  for (const auto& p : script.named_parameters(/*recurse=*/true)) {
    auto [it, fresh] = seen.emplace(p.value.unsafeGetTensorImpl(), p.name);
    if (!fresh) {
      return Status::InvalidArgument(path, "parameters '" + it->second + "' and '" + p.name +
                                               "' are one tensor (tied weights), which fedge "
                                               "would train and send twice");
    }
    if (p.value.scalar_type() != torch::kFloat32) {
      return Status::InvalidArgument(path, "parameter '" + p.name + "' is " +
                                               std::string(c10::toString(p.value.scalar_type())) +
                                               "; fedge trains float32 parameters");
    }
  }
  for (const auto& b : script.named_buffers(/*recurse=*/true)) {
    const bool counter =
        b.name == "num_batches_tracked" ||
        (b.name.size() > 20 && b.name.compare(b.name.size() - 20, 20, ".num_batches_tracked") == 0);
    if (IsRunningStatistic(b.name) && b.value.scalar_type() == torch::kFloat32) {
      auto [it, fresh] = seen.emplace(b.value.unsafeGetTensorImpl(), b.name);
      if (!fresh) {
        return Status::InvalidArgument(path, "'" + it->second + "' and '" + b.name +
                                                 "' are one tensor, which fedge would send twice");
      }
    } else if (!(counter && b.value.scalar_type() == torch::kInt64)) {
      return Status::InvalidArgument(
          path, "buffer '" + b.name + "' (" + std::string(c10::toString(b.value.scalar_type())) +
                    ") would not be federated; fedge federates parameters and BatchNorm's float32 "
                    "running_mean and running_var");
    }
  }
  // Its code: tensor operations only, no writes to the module's own state,
  // bounded loops (common/script_check.h).
  if (Status st = CheckScriptCode(script); !st.ok()) {
    return Status::InvalidArgument(path, st.message());
  }
  if (!script.find_method("forward")) return Status::InvalidArgument(path, "no forward method");
  std::shared_ptr<ScriptModel> model;
  try {
    model = std::make_shared<ScriptModel>(script);
  } catch (const std::exception& e) {
    return Status::InvalidArgument(path, TorchMessage(e));
  }
  if (model->parameters().empty()) {
    return Status::InvalidArgument(path, "the module has no parameters");
  }
  // What it takes and gives is checked against the data (CheckModelFitsData).
  model->architecture = ScriptModelId(*bytes);
  return ModelPtr(model);
}

struct Registration {
  ModelInfo info;
  std::function<ModelPtr()> make;
};

// The registry. Add a model by adding a line.
const std::vector<Registration>& Registry() {
  static const std::vector<Registration> kModels = {
      {{"mnist_2nn", "MLP 784-200-200-10, ReLU (FedAvg 2NN), 199,210 params"},
       [] { return std::make_shared<Mnist2nn>(); }},
      {{"mnist_cnn",
        "CNN conv5x5x32-pool-conv5x5x64-pool-fc512-fc10 (FedAvg CNN), 1,663,370 params"},
       [] { return std::make_shared<MnistCnn>(); }},
  };
  return kModels;
}

}  // namespace

InferenceFn Model::PrepareInference() {
  return [this](const torch::Tensor& x) { return forward(x); };
}

std::vector<ModelInfo> ListModels() {
  std::vector<ModelInfo> out;
  for (const auto& r : Registry()) out.push_back(r.info);
  return out;
}

bool IsScriptModelPath(const std::string& name) {
  return name.size() > 3 && name.compare(name.size() - 3, 3, ".pt") == 0;
}

Result<std::string> ModelArchitecture(const std::string& name) {
  if (!IsScriptModelPath(name)) return name;
  auto bytes = ReadFile(name);
  if (!bytes.ok()) return bytes.status();
  return ScriptModelId(*bytes);
}

std::string TorchMessage(const std::exception& e) {
  const auto* c10 = dynamic_cast<const c10::Error*>(&e);
  return c10 ? c10->what_without_backtrace() : e.what();
}

Result<ModelPtr> CreateModel(const std::string& name, uint64_t seed) {
  if (IsScriptModelPath(name)) return LoadScriptModel(name);
  for (const auto& r : Registry()) {
    if (name != r.info.name) continue;
    // Torch's default initialisers draw from the global generator, so seeding it
    // and constructing must happen together; the lock keeps concurrent creations
    // (virtual clients on threads) from interleaving their draws.
    static std::mutex mu;
    std::lock_guard<std::mutex> lock(mu);
    try {
      torch::manual_seed(seed);
      ModelPtr m = r.make();
      m->architecture = name;
      return m;
    } catch (const c10::Error& e) {
      return Status::Internal("creating model " + name, e.what_without_backtrace());
    }
  }
  std::string known;
  for (const auto& r : Registry()) known += (known.empty() ? "" : ", ") + std::string(r.info.name);
  return Status::NotFound("unknown model '" + name + "'", "known models: " + known);
}

int64_t CountParameters(const torch::nn::Module& model) {
  int64_t n = 0;
  for (const auto& p : model.parameters()) n += p.numel();
  return n;
}

std::vector<torch::Tensor> MasksOf(const ModelState& state) {
  std::vector<torch::Tensor> masks;
  for (const auto& t : state.tensors) {
    if (t.mask.empty()) {
      masks.emplace_back();
    } else {
      masks.push_back(torch::from_blob(const_cast<uint8_t*>(t.mask.data()), t.shape, torch::kUInt8)
                          .to(torch::kBool));
    }
  }
  return masks;
}

torch::OrderedDict<std::string, torch::Tensor> NamedStateTensors(const torch::nn::Module& model) {
  torch::OrderedDict<std::string, torch::Tensor> out = model.named_parameters();
  for (const auto& b : model.named_buffers()) out.insert(b.key(), b.value());
  return out;
}

std::vector<torch::Tensor> StateTensors(const torch::nn::Module& model) {
  return NamedStateTensors(model).values();
}

ModelState GetModelState(const std::string& architecture, const torch::nn::Module& model) {
  torch::NoGradGuard no_grad;
  ModelState state;
  state.architecture = architecture;
  for (const auto& item : NamedStateTensors(model)) {
    TensorState t;
    t.name = item.key();
    t.shape = item.value().sizes().vec();
    torch::Tensor v = item.value().detach().to(torch::kCPU, torch::kFloat32).contiguous();
    t.values.assign(v.data_ptr<float>(), v.data_ptr<float>() + v.numel());
    state.tensors.push_back(std::move(t));
  }
  return state;
}

namespace {

// Checks that `state` matches `model` tensor by tensor, then calls
// apply(parameter, values as a tensor over the state's memory).
template <typename F>
Status ForEachMatchingTensor(torch::nn::Module& model, const ModelState& state, F&& apply) {
  torch::NoGradGuard no_grad;
  auto params = NamedStateTensors(model);
  if (params.size() != state.tensors.size()) {
    return Status::InvalidArgument("model has " + std::to_string(params.size()) +
                                   " tensors, state has " + std::to_string(state.tensors.size()));
  }
  size_t i = 0;
  for (auto& item : params) {
    const TensorState& t = state.tensors[i++];
    if (item.key() != t.name) {
      return Status::InvalidArgument("tensor " + std::to_string(i - 1) + " is '" + item.key() +
                                     "' in the model but '" + t.name + "' in the state");
    }
    if (item.value().sizes().vec() != t.shape ||
        static_cast<int64_t>(t.values.size()) != item.value().numel()) {
      return Status::InvalidArgument("shape mismatch for tensor '" + t.name + "'");
    }
    apply(item.value(), torch::from_blob(const_cast<float*>(t.values.data()), item.value().sizes(),
                                         torch::kFloat32));
  }
  return Status::OK();
}

}  // namespace

Status SetModelState(torch::nn::Module& model, const ModelState& state) {
  return ForEachMatchingTensor(
      model, state, [](torch::Tensor& param, const torch::Tensor& src) { param.copy_(src); });
}

Status BindModelState(torch::nn::Module& model, const ModelState& state) {
  return ForEachMatchingTensor(
      model, state, [](torch::Tensor& param, const torch::Tensor& src) { param.set_data(src); });
}

}  // namespace fl
