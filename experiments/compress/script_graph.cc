#include "experiments/compress/script_graph.h"

#include <torch/csrc/jit/passes/constant_propagation.h>
#include <torch/csrc/jit/passes/dead_code_elimination.h>
#include <torch/csrc/jit/passes/inliner.h>
#include <torch/csrc/jit/runtime/graph_iterator.h>
#include <torch/script.h>

#include <map>
#include <set>

namespace fl {
namespace {

std::string Ints(const std::vector<int64_t>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
  return s + "]";
}

// The forward graph as it runs in eval mode: inlined, every `self.training`
// (of any module) replaced by false and the branches on it folded away, so
// BatchNorm normalises with its running statistics and Dropout passes
// through, as the export does.
std::shared_ptr<torch::jit::Graph> EvalGraph(const torch::jit::Module& module) {
  auto graph = module.get_method("forward").graph()->copy();
  torch::jit::Inline(*graph);
  std::vector<torch::jit::Node*> training;
  for (torch::jit::DepthFirstGraphNodeIterator it(graph);;) {
    torch::jit::Node* n = it.next();
    if (n == nullptr) break;
    if (n->kind() == c10::prim::GetAttr && n->s(c10::Symbol::attr("name")) == "training") {
      training.push_back(n);
    }
  }
  for (torch::jit::Node* n : training) {
    torch::jit::WithInsertPoint at(n);
    n->output()->replaceAllUsesWith(graph->insertConstant(false));
  }
  torch::jit::ConstantPropagation(graph);
  torch::jit::EliminateDeadCode(graph);
  return graph;
}

// The top-level nodes the graph's output is computed from. What else is left
// must be an input check that raises (BatchNorm's on the input's rank) and
// what it is computed from: OutsideSliceIsChecksOnly.
std::set<const torch::jit::Node*> OutputSlice(const torch::jit::Graph& graph) {
  std::set<const torch::jit::Node*> slice;
  std::vector<const torch::jit::Node*> todo;
  for (const torch::jit::Value* v : graph.outputs()) todo.push_back(v->node());
  while (!todo.empty()) {
    const torch::jit::Node* n = todo.back();
    todo.pop_back();
    if (n->kind() == c10::prim::Param || !slice.insert(n).second) continue;
    for (const torch::jit::Value* v : n->inputs()) todo.push_back(v->node());
  }
  return slice;
}

// True when `n` (outside the output's slice) only checks: reads the input's
// rank or size, compares, formats a message or raises. Anything else there,
// an in-place operation above all, would change what the model computes
// without being in the chain the export writes.
bool OnlyChecks(const torch::jit::Node* n) {
  static const std::set<std::string> kChecks = {"prim::Constant",
                                                "prim::GetAttr",
                                                "prim::ListConstruct",
                                                "prim::RaiseException",
                                                "prim::If",
                                                "aten::dim",
                                                "aten::size",
                                                "aten::len",
                                                "aten::format",
                                                "aten::eq",
                                                "aten::ne",
                                                "aten::lt",
                                                "aten::le",
                                                "aten::gt",
                                                "aten::ge",
                                                "aten::__not__",
                                                "aten::__and__",
                                                "aten::__or__",
                                                "prim::NumToTensor",
                                                "aten::Int",
                                                "aten::Bool",
                                                "aten::Float",
                                                "prim::Uninitialized"};
  if (!kChecks.count(n->kind().toQualString())) return false;
  for (const torch::jit::Block* b : n->blocks()) {
    for (const torch::jit::Node* inner : b->nodes()) {
      if (!OnlyChecks(inner)) return false;
    }
  }
  return true;
}

}  // namespace

namespace {

// Reads the chain of layers of an eval graph, node by node.
class ChainReader {
 public:
  ChainReader(std::string path, const ModelState& model) : path_(std::move(path)) {
    for (const auto& t : model.tensors) shapes_[t.name] = t.shape;
  }

  // The node `n` as a layer of `g`, when it is one; `*x` follows the chain.
  Status Node(torch::jit::Node* n, const std::set<const torch::jit::Node*>& slice,
              const torch::jit::Value** x, OnnxGraph* g) {
    const std::string kind = n->kind().toQualString();
    if (!slice.count(n)) {
      if (OnlyChecks(n)) return Status::OK();
      return Refuse(kind,
                    "an operation whose result the output does not use (an in-place "
                    "operation?), which the export cannot represent");
    }
    if (kind == "prim::GetAttr") {
      auto it = attr_.find(n->input(0));
      if (it == attr_.end()) return Status::OK();
      const std::string name = n->s(c10::Symbol::attr("name"));
      attr_[n->output()] = it->second.empty() ? name : it->second + "." + name;
      return Status::OK();
    }
    if (kind == "prim::Constant" || kind == "prim::ListConstruct") return Status::OK();
    if (n->inputs().empty() || n->input(0) != *x) {
      if (kind == "aten::dropout" || kind == "aten::eq" || kind == "prim::NumToTensor") {
        return Status::OK();
      }
      return Refuse(kind, "an operation outside the chain from the input");
    }
    FL_RETURN_IF_ERROR(Layer(kind, n, g));
    *x = n->output();
    return Status::OK();
  }

  void SetSelf(const torch::jit::Value* self) { attr_[self] = ""; }

 private:
  Status Layer(const std::string& kind, torch::jit::Node* n, OnnxGraph* g) {
    if (kind == "aten::linear") return Linear(kind, n, g);
    if (kind == "aten::conv2d") return Conv(kind, n, g);
    if (kind == "aten::batch_norm") return BatchNorm(kind, n, g);
    if (kind == "aten::relu" || kind == "aten::relu_") {
      g->layers.push_back({OnnxLayer::kRelu, ""});
    } else if (kind == "aten::max_pool2d") {
      const auto k = IntsOf(n->input(1)), s = IntsOf(n->input(2)), p = IntsOf(n->input(3));
      const auto d = IntsOf(n->input(4));
      const bool two = k == std::vector<int64_t>{2, 2};
      if (!two || !(s.empty() || s == k) || p != std::vector<int64_t>{0, 0} ||
          d != std::vector<int64_t>{1, 1}) {
        return Refuse(kind, "kernel " + Ints(k) + ", stride " + Ints(s));
      }
      g->layers.push_back({OnnxLayer::kMaxPool2, ""});
    } else if (kind == "aten::flatten") {
      if (IntsOf(n->input(1)) != std::vector<int64_t>{1} ||
          IntsOf(n->input(2)) != std::vector<int64_t>{-1}) {
        return Refuse(kind, "a flatten other than from dimension 1");
      }
      g->layers.push_back({OnnxLayer::kFlatten, ""});
    } else if (kind == "aten::dropout") {
      g->layers.push_back({OnnxLayer::kIdentity, ""});
    } else {
      return Refuse(kind, "not a layer the export knows");
    }
    return Status::OK();
  }

  Status Linear(const std::string& kind, torch::jit::Node* n, OnnxGraph* g) {
    auto w = Param(n->input(1), "the weight of a linear layer");
    if (!w.ok()) return w.status();
    const std::string prefix = w->substr(0, w->rfind('.'));
    if (!shapes_.count(prefix + ".bias")) return Refuse(kind, "a linear layer without a bias");
    g->layers.push_back({OnnxLayer::kLinear, prefix, shapes_[*w][0]});
    return Status::OK();
  }

  Status Conv(const std::string& kind, torch::jit::Node* n, OnnxGraph* g) {
    auto w = Param(n->input(1), "the weight of a convolution");
    if (!w.ok()) return w.status();
    const std::string prefix = w->substr(0, w->rfind('.'));
    const auto& ws = shapes_[*w];
    const auto stride = IntsOf(n->input(3)), pad = IntsOf(n->input(4)), dil = IntsOf(n->input(5));
    const auto groups = IntsOf(n->input(6));
    if (ws.size() != 4 || ws[2] != ws[3]) return Refuse(kind, "a kernel that is not square");
    if (stride != std::vector<int64_t>{1, 1}) return Refuse(kind, "stride " + Ints(stride));
    if (dil != std::vector<int64_t>{1, 1}) return Refuse(kind, "dilation " + Ints(dil));
    if (groups != std::vector<int64_t>{1}) return Refuse(kind, "groups " + Ints(groups));
    if (pad.size() != 2 || pad[0] != pad[1]) return Refuse(kind, "padding " + Ints(pad));
    if (!shapes_.count(prefix + ".bias")) return Refuse(kind, "a convolution without a bias");
    g->layers.push_back({OnnxLayer::kConv, prefix, ws[0], ws[2], pad[0]});
    return Status::OK();
  }

  // (input, weight, bias, running_mean, running_var, training, momentum, eps, cudnn)
  Status BatchNorm(const std::string& kind, torch::jit::Node* n, OnnxGraph* g) {
    auto w = Param(n->input(1), "the weight of a BatchNorm");
    const std::string prefix = w.ok() ? w->substr(0, w->rfind('.')) : "";
    const char* roles[] = {".weight", ".bias", ".running_mean", ".running_var"};
    for (int i = 0; i < 4; ++i) {
      auto t = Param(n->input(1 + i), "a tensor of a BatchNorm");
      if (!t.ok() || *t != prefix + roles[i]) {
        return Refuse(kind,
                      "a BatchNorm whose weight, bias, running_mean and running_var are not the "
                      "tensors of one module (affine=False or track_running_stats=False)");
      }
    }
    auto training = torch::jit::toIValue(n->input(5));
    auto eps = torch::jit::toIValue(n->input(7));
    if (!training || !training->isBool() || training->toBool()) {
      return Refuse(kind, "a BatchNorm that normalises with batch statistics in eval mode");
    }
    if (!eps || !eps->isDouble()) return Refuse(kind, "an epsilon that is not a constant");
    g->layers.push_back({OnnxLayer::kBatchNorm, prefix, shapes_[*w][0], 0, 0, eps->toDouble()});
    return Status::OK();
  }

  // Attribute paths: self.fc1.weight -> "fc1.weight".
  Result<std::string> Param(const torch::jit::Value* v, const std::string& what) const {
    auto it = attr_.find(v);
    if (it == attr_.end() || !shapes_.count(it->second)) {
      return Status::InvalidArgument(path_, what + " is not one of the model's parameters");
    }
    return it->second;
  }

  // A list built in the code ([1, 1]) is a ListConstruct of constants; {-1}
  // for anything that is not constant integers.
  static std::vector<int64_t> IntsOf(const torch::jit::Value* v) {
    if (v->node()->kind() == c10::prim::ListConstruct) {
      std::vector<int64_t> out;
      for (const torch::jit::Value* e : v->node()->inputs()) {
        auto iv = torch::jit::toIValue(e);
        if (!iv || !iv->isInt()) return {-1};
        out.push_back(iv->toInt());
      }
      return out;
    }
    auto iv = torch::jit::toIValue(v);
    if (!iv) return {-1};
    if (iv->isIntList()) return iv->toIntVector();
    if (iv->isInt()) return {iv->toInt()};
    return {-1};
  }

  Status Refuse(const std::string& op, const std::string& why) const {
    return Status::InvalidArgument(path_, op + ": " + why +
                                              "; the ONNX export knows Linear, Conv2d (stride 1, "
                                              "square kernel), BatchNorm, ReLU, MaxPool2d 2x2, "
                                              "Flatten and Dropout in a chain");
  }

  const std::string path_;
  std::map<std::string, std::vector<int64_t>> shapes_;
  std::map<const torch::jit::Value*, std::string> attr_;
};

}  // namespace

Result<OnnxGraph> ReadScriptGraph(const std::string& path, const std::vector<int64_t>& input,
                                  const ModelState& model) {
  OnnxGraph g;
  g.name = model.architecture;
  g.input = input;
  ChainReader reader(path, model);
  try {
    const auto graph = EvalGraph(torch::jit::load(path, torch::kCPU));
    const auto slice = OutputSlice(*graph);
    reader.SetSelf(graph->inputs()[0]);
    const torch::jit::Value* x = graph->inputs().size() > 1 ? graph->inputs()[1] : nullptr;
    for (torch::jit::Node* n : graph->nodes()) FL_RETURN_IF_ERROR(reader.Node(n, slice, &x, &g));
    if (graph->outputs().size() != 1 || graph->outputs()[0] != x) {
      return Status::InvalidArgument(path, "its forward does not return the chain's last value");
    }
  } catch (const c10::Error& e) {
    return Status::InvalidArgument(path, e.what_without_backtrace());
  }
  if (g.layers.empty() || g.layers.back().kind != OnnxLayer::kLinear) {
    return Status::InvalidArgument(path, "its forward does not end in a linear layer");
  }
  g.classes = g.layers.back().outputs;
  return g;
}

}  // namespace fl
