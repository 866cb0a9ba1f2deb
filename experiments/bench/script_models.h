// TorchScript copies of the built-in models, built in C++ with
// torch::jit::Module::define (no Python): the same operations as the zoo's
// forward(), with the given weights. For the TorchScript tests and for
// fl-bench-train --script-copies (TorchScript against C++ throughput).
#ifndef FEDGE_EXPERIMENTS_BENCH_SCRIPT_MODELS_H_
#define FEDGE_EXPERIMENTS_BENCH_SCRIPT_MODELS_H_

#include <torch/script.h>

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "common/model_state.h"
#include "common/status.h"

namespace fl {

// A TorchScript module of class `name` running `source` (its forward) on
// `state`'s tensors: "conv1.weight" is parameter "weight" of submodule
// "conv1", BatchNorm running statistics are buffers.
inline torch::jit::Module ScriptModuleOf(const ModelState& state, const std::string& name,
                                         const char* source) {
  torch::jit::Module m(name);
  std::vector<std::pair<std::string, torch::jit::Module>> layers;  // in order of first use
  for (const auto& t : state.tensors) {
    const size_t dot = t.name.find('.');
    const std::string prefix = t.name.substr(0, dot);
    auto it = std::find_if(layers.begin(), layers.end(),
                           [&](const auto& l) { return l.first == prefix; });
    if (it == layers.end()) {
      layers.emplace_back(prefix, torch::jit::Module(name + "_" + prefix));
      it = layers.end() - 1;
    }
    const torch::Tensor value =
        torch::from_blob(const_cast<float*>(t.values.data()), t.shape).clone();
    if (IsRunningStatistic(t.name)) {
      it->second.register_buffer(t.name.substr(dot + 1), value);
    } else {
      it->second.register_parameter(t.name.substr(dot + 1), value, false);
    }
  }
  for (auto& [prefix, sub] : layers) m.register_module(prefix, sub);
  // `self.training`, as PyTorch's modules have it (train() and eval() set it).
  m.register_attribute("training", c10::BoolType::get(), true);
  m.define(source);
  return m;
}

// A TorchScript module computing what the zoo's `state.architecture`
// computes, with `state`'s weights. InvalidArgument for an architecture it has
// no script for.
inline Result<torch::jit::Module> ScriptCopyOf(const ModelState& state) {
  static const char* kCnn = R"(
def forward(self, x):
    x = torch.max_pool2d(torch.relu(torch.conv2d(x, self.conv1.weight, self.conv1.bias, [1, 1], [2, 2])), [2, 2])
    x = torch.max_pool2d(torch.relu(torch.conv2d(x, self.conv2.weight, self.conv2.bias, [1, 1], [2, 2])), [2, 2])
    x = torch.relu(torch.linear(torch.flatten(x, 1), self.fc1.weight, self.fc1.bias))
    return torch.linear(x, self.fc2.weight, self.fc2.bias)
)";
  static const char* k2nn = R"(
def forward(self, x):
    x = torch.relu(torch.linear(torch.flatten(x, 1), self.fc1.weight, self.fc1.bias))
    x = torch.relu(torch.linear(x, self.fc2.weight, self.fc2.bias))
    return torch.linear(x, self.fc3.weight, self.fc3.bias)
)";
  const char* source = state.architecture == "mnist_cnn"   ? kCnn
                       : state.architecture == "mnist_2nn" ? k2nn
                                                           : nullptr;
  if (!source) {
    return Status::InvalidArgument("no TorchScript copy of '" + state.architecture + "'");
  }
  return ScriptModuleOf(state, "ScriptCopy_" + state.architecture, source);
}

}  // namespace fl

#endif  // FEDGE_EXPERIMENTS_BENCH_SCRIPT_MODELS_H_
