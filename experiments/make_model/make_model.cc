// fl-make-model: writes a TorchScript model file (.pt) for --model, without
// Python: an MLP for feature vectors (CSV data) or a small CNN for images,
// initialised as PyTorch initialises nn.Linear and nn.Conv2d (uniform in
// +-1/sqrt(fan_in)), from a seed.
//
//   fl-make-model --mlp 64,128,10 --out digits_mlp.pt
//   fl-make-model --cnn 3,32,32,10 --out cifar_cnn.pt
//
// A model scripted or traced in PyTorch works the same way; this is for
// teams (and tests) without it.
#include <torch/script.h>
#include <torch/torch.h>

#include <CLI/CLI.hpp>
#include <cmath>
#include <cstdio>
#include <sstream>
#include <string>
#include <vector>

namespace {

std::vector<int64_t> ParseInts(const std::string& text, const char* flag) {
  std::vector<int64_t> out;
  std::stringstream in(text);
  std::string field;
  while (std::getline(in, field, ',')) {
    char* end = nullptr;
    const long long v = std::strtoll(field.c_str(), &end, 10);
    if (field.empty() || *end != '\0' || v <= 0) {
      throw CLI::ValidationError(flag, "'" + field + "' is not a positive integer");
    }
    out.push_back(v);
  }
  return out;
}

// A layer `name` holding weight `shape` and bias [shape[0]], PyTorch's
// default initialisation.
void AddLayer(torch::jit::Module* m, const std::string& name, const std::vector<int64_t>& shape) {
  int64_t fan_in = 1;
  for (size_t i = 1; i < shape.size(); ++i) fan_in *= shape[i];
  const double bound = 1.0 / std::sqrt(static_cast<double>(fan_in));
  torch::jit::Module layer("Layer_" + name);
  layer.register_parameter("weight", torch::empty(shape).uniform_(-bound, bound), false);
  layer.register_parameter("bias", torch::empty({shape[0]}).uniform_(-bound, bound), false);
  m->register_module(name, layer);
}

}  // namespace

int main(int argc, char** argv) {
  std::string mlp, cnn, out;
  uint64_t seed = 1;
  CLI::App app{"fl-make-model: write a TorchScript model (.pt) for --model, without Python"};
  auto* o_mlp = app.add_option("--mlp", mlp,
                               "Inputs, hidden widths, classes: e.g. 64,128,10 (ReLU between "
                               "layers; inputs flattened, so [N, F] or any [N, ...] of F values)");
  auto* o_cnn = app.add_option(
      "--cnn", cnn,
      "Channels,height,width,classes of the images: e.g. 3,32,32,10 (conv3x3-32, pool, "
      "conv3x3-64, pool, fc-128, fc-classes; height and width divisible by 4)");
  o_mlp->excludes(o_cnn);
  app.add_option("--out", out, "File to write (.pt)")->required();
  app.add_option("--seed", seed, "Seed of the initial weights")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  if (mlp.empty() == cnn.empty()) {
    std::fprintf(stderr, "fl-make-model: give --mlp or --cnn\n");
    return 2;
  }
  torch::manual_seed(seed);
  torch::jit::Module m(mlp.empty() ? "Cnn" : "Mlp");
  std::string source = "def forward(self, x):\n";
  std::string what;
  try {
    if (!mlp.empty()) {
      const auto widths = ParseInts(mlp, "--mlp");
      if (widths.size() < 2) throw CLI::ValidationError("--mlp", "needs inputs and classes");
      source += "    x = torch.flatten(x, 1)\n";
      for (size_t i = 0; i + 1 < widths.size(); ++i) {
        const std::string name = "fc" + std::to_string(i + 1);
        AddLayer(&m, name, {widths[i + 1], widths[i]});
        const bool last = i + 2 == widths.size();
        source += std::string("    x = ") + (last ? "" : "torch.relu(") + "torch.linear(x, self." +
                  name + ".weight, self." + name + ".bias)" + (last ? "" : ")") + "\n";
      }
      what = "MLP " + mlp;
    } else {
      const auto d = ParseInts(cnn, "--cnn");
      if (d.size() != 4 || d[1] % 4 != 0 || d[2] % 4 != 0) {
        throw CLI::ValidationError("--cnn",
                                   "needs channels,height,width,classes with height and "
                                   "width divisible by 4");
      }
      AddLayer(&m, "conv1", {32, d[0], 3, 3});
      AddLayer(&m, "conv2", {64, 32, 3, 3});
      AddLayer(&m, "fc1", {128, 64 * (d[1] / 4) * (d[2] / 4)});
      AddLayer(&m, "fc2", {d[3], 128});
      source +=
          "    x = torch.max_pool2d(torch.relu(torch.conv2d(x, self.conv1.weight, "
          "self.conv1.bias, [1, 1], [1, 1])), [2, 2])\n"
          "    x = torch.max_pool2d(torch.relu(torch.conv2d(x, self.conv2.weight, "
          "self.conv2.bias, [1, 1], [1, 1])), [2, 2])\n"
          "    x = torch.relu(torch.linear(torch.flatten(x, 1), self.fc1.weight, self.fc1.bias))\n"
          "    return torch.linear(x, self.fc2.weight, self.fc2.bias)\n";
      what = "CNN " + cnn;
    }
    if (!mlp.empty()) source += "    return x\n";
    m.define(source);
    m.save(out);
  } catch (const CLI::Error& e) {
    std::fprintf(stderr, "fl-make-model: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fl-make-model: %s\n", e.what());
    return 1;
  }
  int64_t params = 0;
  for (const auto& p : m.parameters()) params += p.numel();
  std::printf("wrote %s: %s, %lld parameters, seed %llu\n", out.c_str(), what.c_str(),
              static_cast<long long>(params), static_cast<unsigned long long>(seed));
  return 0;
}
