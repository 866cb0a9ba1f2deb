#include "common/script_check.h"

#include <caffe2/serialize/inline_container.h>
#include <torch/csrc/jit/passes/inliner.h>
#include <torch/csrc/jit/runtime/graph_iterator.h>
#include <torch/script.h>

#include <algorithm>
#include <cstdint>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <unordered_set>

#include "common/model_zoo.h"

namespace fl {
namespace {

using torch::jit::Node;
using torch::jit::Value;

// Tensor and scalar operations a model may use, by name without overload
// (aten::add covers add.Tensor, add.Scalar and add.int). An in-place variant
// (relu_, add_) is allowed where its name is, on the function's own values.
const std::unordered_set<std::string>& AllowedAten() {
  static const auto* ops = new std::unordered_set<std::string>{
      // arithmetic and elementwise functions
      "add", "sub", "rsub", "mul", "div", "neg", "abs", "pow", "sqrt", "rsqrt", "exp", "log",
      "log2", "log10", "log1p", "expm1", "sin", "cos", "tan", "tanh", "sigmoid", "erf",
      "reciprocal", "square", "sign", "round", "floor", "ceil", "trunc", "frac", "remainder",
      "fmod", "floordiv", "floor_divide", "true_divide", "lerp", "clamp", "clamp_min", "clamp_max",
      "clip", "maximum", "minimum", "where", "masked_fill", "addcmul", "addcdiv",
      // activations
      "relu", "relu6", "leaky_relu", "elu", "selu", "celu", "gelu", "silu", "mish", "hardtanh",
      "hardsigmoid", "hardswish", "softplus", "softsign", "prelu", "glu", "threshold", "softmax",
      "log_softmax", "logsigmoid",
      // reductions and comparisons
      "sum", "mean", "prod", "max", "min", "amax", "amin", "argmax", "argmin", "std", "var", "norm",
      "linalg_vector_norm", "logsumexp", "cumsum", "cumprod", "topk", "sort", "all", "any", "eq",
      "ne", "lt", "gt", "le", "ge", "logical_and", "logical_or", "logical_not", "logical_xor",
      "isnan", "isfinite", "__and__", "__or__", "__xor__", "__not__", "__is__", "__isnot__",
      "__contains__", "is_floating_point",
      // linear algebra and layers
      "matmul", "mm", "bmm", "addmm", "addmv", "baddbmm", "linear", "bilinear", "einsum", "conv1d",
      "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "_convolution", "convolution",
      "batch_norm", "instance_norm", "layer_norm", "group_norm", "dropout", "feature_dropout",
      "alpha_dropout", "embedding", "one_hot", "max_pool1d", "max_pool2d", "max_pool3d",
      "avg_pool1d", "avg_pool2d", "avg_pool3d", "adaptive_avg_pool1d", "adaptive_avg_pool2d",
      "adaptive_avg_pool3d", "adaptive_max_pool1d", "adaptive_max_pool2d", "upsample_nearest1d",
      "upsample_nearest2d", "upsample_bilinear2d", "__interpolate", "pixel_shuffle", "pad",
      "constant_pad_nd", "reflection_pad2d", "replication_pad2d", "cross_entropy", "nll_loss",
      "mse_loss", "l1_loss", "smooth_l1_loss", "binary_cross_entropy",
      "binary_cross_entropy_with_logits", "upsample_nearest3d", "_upsample_nearest_exact1d",
      "_upsample_nearest_exact2d", "_upsample_nearest_exact3d", "upsample_linear1d",
      "upsample_trilinear3d", "upsample_bicubic2d", "_upsample_bilinear2d_aa",
      "_upsample_bicubic2d_aa", "lstm", "gru", "rnn_tanh", "rnn_relu",
      "_native_multi_head_attention", "is_grad_enabled", "warn",
      // shapes, views and copies
      "flatten", "unflatten", "view", "view_as", "reshape", "reshape_as", "permute", "transpose",
      "t", "contiguous", "squeeze", "unsqueeze", "expand", "expand_as", "repeat", "tile", "cat",
      "concat", "stack", "hstack", "vstack", "split", "split_with_sizes", "chunk", "unbind",
      "narrow", "select", "slice", "index", "index_select", "gather", "masked_select", "flip",
      "roll", "movedim", "detach", "clone", "to", "type_as", "float", "double", "half", "long",
      "int", "bool", "size", "dim", "numel", "len", "__getitem__", "_set_item", "list", "append",
      "__range_length", "__derive_index", "Int", "Float", "Bool", "ScalarImplicit", "format", "str",
      // new tensors (the model's generator draws; nothing reseeds it)
      "zeros", "ones", "full", "zeros_like", "ones_like", "full_like", "empty_like", "arange",
      "empty", "new_zeros", "new_ones", "new_full", "new_empty", "tensor", "scalar_tensor", "rand",
      "randn", "randint", "rand_like", "randn_like", "bernoulli", "normal", "multinomial",
      // in-place operations without an out-of-place name of their own
      "copy_", "fill_", "zero_", "uniform_", "normal_", "index_put_", "masked_fill_"};
  return *ops;
}

// Graph plumbing and control flow; prim::Print, prim::fork, prim::Enter,
// prim::PythonOp, every call that inlining left behind, and prim::data (a
// tensor on a parameter's memory that does not share its version counter,
// which ScriptModel::forward watches) are not here.
const std::unordered_set<std::string>& AllowedPrim() {
  static const auto* ops = new std::unordered_set<std::string>{
      "Constant", "GetAttr", "ListConstruct", "ListUnpack", "TupleConstruct", "TupleUnpack",
      "TupleIndex", "TupleSlice", "DictConstruct", "If", "Loop", "NumToTensor",
      "ImplicitTensorToNum", "device", "dtype", "layout", "unchecked_cast", "Uninitialized",
      "RaiseException", "min", "max", "abs", "shape", "is_cuda", "requires_grad", "isinstance",
      // the ends of an empty graph or block (a method that returns its input)
      "Param", "Return"};
  return *ops;
}

// A loop's trip count may be a constant up to this, or follow from the sizes
// of the values it runs on; loops nested in each other may not take more
// constant trips than this all together.
constexpr int64_t kMaxConstantTrips = int64_t{1} << 16;
// The most elements a tensor made from a constant shape may have (zeros,
// full, expand, repeat...): 2^26, 256 MiB of float32.
constexpr int64_t kMaxConstantElements = int64_t{1} << 26;

// " at line N: <the line>" of the script, when the node kept its source.
std::string Where(const Node* n) {
  // A node the file's code does not place (prim::SetAttr after loading) is
  // found by the value it takes.
  for (size_t i = 0; !n->sourceRange().source() && i < n->inputs().size(); ++i) {
    if (n->input(i)->node()->sourceRange().source()) n = n->input(i)->node();
  }
  const auto& range = n->sourceRange();
  const auto& source = range.source();
  if (!source) return "";
  const size_t line = source->lineno_for_offset(range.start());
  const std::string text = source->text_str().str();
  const size_t from = source->offset_for_line(line);
  size_t to = text.find('\n', from);
  if (to == std::string::npos) to = text.size();
  std::string code = text.substr(from, to - from);
  code.erase(0, code.find_first_not_of(" \t"));
  if (code.size() > 100) code = code.substr(0, 97) + "...";
  const auto file = range.file_line_col();
  const std::string name = file && !std::get<0>(*file).empty() ? " of " + std::get<0>(*file) : "";
  return " at line " + std::to_string(source->lineno_to_source_lineno(line) + 1) + name + ": " +
         code;
}

// The name of an operation with its namespace ("aten::save").
std::string OpName(const Node* n) { return n->kind().toQualString(); }

// The method's values that are the module's own state or views of it: self,
// what GetAttr reads from it, and what aliases those.
std::set<const Value*> StateValues(std::shared_ptr<torch::jit::Graph> graph) {
  std::set<const Value*> state;
  if (graph->inputs().empty()) return state;
  state.insert(graph->inputs()[0]);  // self
  // Block outputs feed their node's outputs after the node is visited:
  // repeat until nothing new is marked.
  for (bool changed = true; changed;) {
    changed = false;
    auto mark = [&](const Value* v) { changed |= state.insert(v).second; };
    torch::jit::DepthFirstGraphNodeIterator it(graph);
    for (Node* n = it.next(); n != nullptr; n = it.next()) {
      bool from_state = false;
      for (const Value* in : n->inputs()) from_state |= state.count(in) > 0;
      for (const auto* block : n->blocks()) {
        for (const Value* out : block->outputs()) from_state |= state.count(out) > 0;
      }
      if (!from_state) continue;
      const auto* schema = n->maybeSchema();
      for (size_t i = 0; i < n->outputs().size(); ++i) {
        // An operator's result is state when it may alias an input; a
        // graph node without a schema (lists, tuples, If) passes it on.
        const bool aliases = schema == nullptr || i >= schema->returns().size() ||
                             schema->returns()[i].alias_info() != nullptr;
        if (aliases) mark(n->outputs()[i]);
      }
      for (const auto* block : n->blocks()) {
        // A loop's carried values start as the node's inputs.
        for (size_t i = 0; i < block->inputs().size() && i + 1 < n->inputs().size(); ++i) {
          if (n->kind() == c10::prim::Loop && state.count(n->inputs()[i + 1])) {
            mark(block->inputs()[i]);
          }
        }
      }
    }
  }
  return state;
}

// The constant value of `v`, if it is one.
std::optional<int64_t> ConstantInt(const Value* v) {
  if (v->node()->kind() != c10::prim::Constant) return std::nullopt;
  auto c = torch::jit::toIValue(v);
  if (!c || !c->isInt()) return std::nullopt;
  return c->toInt();
}

// True when `v`, an int, is bounded by constants and the sizes of values.
bool Bounded(const Value* v, int depth = 0) {
  if (depth > 8) return false;
  const Node* n = v->node();
  const std::string op = OpName(n);
  if (n->kind() == c10::prim::Constant) {
    const auto c = ConstantInt(v);
    return c && *c >= 0 && *c <= kMaxConstantTrips;
  }
  if (op == "aten::size" || op == "aten::len" || op == "aten::dim" || op == "aten::numel") {
    return true;
  }
  if (op == "prim::ListUnpack" || op == "aten::__getitem__" || op == "prim::TupleIndex") {
    const std::string from = OpName(n->input(0)->node());
    return from == "aten::size" || from == "prim::shape";
  }
  static const std::set<std::string> arithmetic = {
      "aten::add",   "aten::sub",  "aten::mul", "aten::floordiv",  "aten::__range_length",
      "prim::min",   "prim::max",  "aten::Int", "aten::remainder", "aten::__derive_index",
      "aten::floor", "aten::ceil", "aten::div"};
  if (!arithmetic.count(op)) return false;
  for (const Value* in : n->inputs()) {
    if (!Bounded(in, depth + 1)) return false;
  }
  return true;
}

// `op` adds a constant to torch.nn.BatchNorm's own counter
// (self.num_batches_tracked.add_(1)): an int64 that stays on the device
// (common/model_zoo.h), never in a delta.
bool IsBatchCount(const Node* op, const Value* v) {
  const Node* n = v->node();
  return OpName(op) == "aten::add_" && op->inputs().size() >= 2 &&
         op->input(1)->node()->kind() == c10::prim::Constant && n->kind() == c10::prim::GetAttr &&
         n->s(c10::Symbol::attr("name")) == "num_batches_tracked";
}

Status Refuse(const std::string& what, const Node* n) {
  return Status::InvalidArgument(what + Where(n));
}

// The product of the constant trip counts of `loop` and the loops around it
// (a trip count from the data's sizes counts 1: the data bounds it).
int64_t ConstantTrips(const Node* loop) {
  int64_t trips = 1;
  for (const Node* n = loop; n != nullptr;
       n = n->owningBlock() ? n->owningBlock()->owningNode() : nullptr) {
    if (n->kind() != c10::prim::Loop) continue;
    const auto c = ConstantInt(n->input(0));
    if (c && *c > 0)
      trips = std::min(trips * std::min(*c, kMaxConstantTrips + 1), kMaxConstantTrips + 1);
  }
  return trips;
}

// Operations that make a tensor of a shape they are given.
bool TakesShape(const std::string& op) {
  static const std::set<std::string> ops = {
      "aten::zeros",    "aten::ones",     "aten::full",      "aten::empty",
      "aten::rand",     "aten::randn",    "aten::randint",   "aten::new_zeros",
      "aten::new_ones", "aten::new_full", "aten::new_empty", "aten::expand",
      "aten::repeat",   "aten::tile",     "aten::view",      "aten::reshape"};
  return ops.count(op) > 0;
}

// A tensor made from a shape of constants may not exceed kMaxConstantElements
// (the memory and time of what a model does with the data's own sizes are the
// data's).
Status CheckConstantShapes(const Node* n) {
  const std::string op = OpName(n);
  if (!TakesShape(op)) return Status::OK();
  for (const Value* in : n->inputs()) {
    const Node* list = in->node();
    int64_t elements = 1;
    bool constant = false;
    if (list->kind() == c10::prim::ListConstruct) {
      constant = !list->inputs().empty();
      for (const Value* d : list->inputs()) {
        const auto c = ConstantInt(d);
        if (!c) {
          constant = false;
          break;
        }
        elements = std::min(elements * std::max<int64_t>(*c, 1), kMaxConstantElements + 1);
      }
    } else if (list->kind() == c10::prim::Constant) {
      auto c = torch::jit::toIValue(in);
      if (c && c->isIntList()) {
        constant = true;
        for (int64_t d : c->toIntVector()) {
          elements = std::min(elements * std::max<int64_t>(d, 1), kMaxConstantElements + 1);
        }
      }
    }
    if (constant && elements > kMaxConstantElements) {
      return Refuse(op + " makes a tensor of more than " + std::to_string(kMaxConstantElements) +
                        " elements from a constant shape",
                    n);
    }
  }
  return Status::OK();
}

Status CheckNode(const Node* n, const std::set<const Value*>& state) {
  const std::string ns = n->kind().ns().toUnqualString();
  const std::string name = n->kind().toUnqualString();
  if (n->kind() == c10::prim::SetAttr) {
    const std::string attr = n->s(c10::Symbol::attr("name"));
    return Refuse("its code assigns '" + attr + "' (self." + attr +
                      " = ...): a model's code may not change the module; fedge trains and "
                      "federates the tensors the module holds, and BatchNorm's running "
                      "statistics move through torch.batch_norm",
                  n);
  }
  const bool in_place = name.size() > 1 && name.back() == '_' && name[name.size() - 2] != '_';
  const bool allowed =
      (ns == "prim" && AllowedPrim().count(name)) ||
      (ns == "aten" && (AllowedAten().count(name) ||
                        (in_place && AllowedAten().count(name.substr(0, name.size() - 1)))));
  if (!allowed) {
    return Refuse("it uses " + OpName(n) +
                      ", which a model may not: fedge runs tensor operations only (no file, "
                      "print, RPC, fork, process or random-seed operation, no call left "
                      "uninlined)",
                  n);
  }
  if (const auto* schema = n->maybeSchema()) {
    const auto& args = schema->arguments();
    for (size_t i = 0; i < args.size() && i < n->inputs().size(); ++i) {
      if (args[i].alias_info() && args[i].alias_info()->isWrite() && state.count(n->input(i)) &&
          !IsBatchCount(n, n->input(i))) {
        return Refuse("its code writes into the module's own state with " + OpName(n) +
                          ": a model's code may not change its parameters, buffers or "
                          "attributes (training does)",
                      n);
      }
    }
  }
  if (Status st = CheckConstantShapes(n); !st.ok()) return st;
  if (n->kind() == c10::prim::Loop && !Bounded(n->input(0))) {
    return Refuse(
        "a loop's trip count is not bounded by the sizes of the data (a while loop, "
        "or a range over more than " +
            std::to_string(kMaxConstantTrips) + ")",
        n);
  }
  if (n->kind() == c10::prim::Loop && ConstantTrips(n) > kMaxConstantTrips) {
    return Refuse("loops nested in each other take more than " + std::to_string(kMaxConstantTrips) +
                      " constant trips together",
                  n);
  }
  return Status::OK();
}

Status CheckGraph(std::shared_ptr<torch::jit::Graph> graph) {
  const std::set<const Value*> state = StateValues(graph);
  torch::jit::DepthFirstGraphNodeIterator it(graph);
  for (Node* n = it.next(); n != nullptr; n = it.next()) {
    FL_RETURN_IF_ERROR(CheckNode(n, state));
  }
  return Status::OK();
}

}  // namespace

Status CheckScriptCode(const torch::jit::Module& module) {
  try {
    for (const auto& m : module.modules()) {
      const std::string type = m.type()->name() ? m.type()->name()->qualifiedName() : "a module";
      for (const char* hook : {"__setstate__", "__getstate__"}) {
        if (m.type()->findMethod(hook) != nullptr) {
          return Status::InvalidArgument(type + " defines " + hook +
                                         ": code that runs while the file loads or saves");
        }
      }
      for (const auto& method : m.get_methods()) {
        auto graph = method.graph()->copy();
        torch::jit::Inline(*graph);
        if (Status st = CheckGraph(graph); !st.ok()) {
          return st.WithContext(type + "." + method.name());
        }
      }
    }
  } catch (const std::exception& e) {
    return Status::InvalidArgument("its code cannot be checked: " + TorchMessage(e));
  }
  return Status::OK();
}

Status CheckScriptArchive(const std::string& bytes) {
  try {
    std::istringstream in(bytes);
    caffe2::serialize::PyTorchStreamReader reader(&in);
    for (const std::string& name : reader.getAllRecords()) {
      // Record names are relative to the archive's folder: code/__torch__/....py
      const bool code = (name.rfind("code/", 0) == 0 || name.find("/code/") != std::string::npos) &&
                        name.size() > 3 && name.compare(name.size() - 3, 3, ".py") == 0;
      if (!code) continue;
      auto [data, size] = reader.getRecord(name);
      const std::string text(static_cast<const char*>(data.get()), size);
      if (text.find("__setstate__") != std::string::npos) {
        return Status::InvalidArgument(
            name +
            " defines __setstate__: code that torch::jit::load would run while the file "
            "loads; a model's file may hold tensor code only");
      }
    }
  } catch (const std::exception& e) {
    return Status::InvalidArgument("not a TorchScript model: " + TorchMessage(e));
  }
  return Status::OK();
}

}  // namespace fl
