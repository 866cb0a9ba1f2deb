#include "common/onnx_export.h"

#include <onnx/checker.h>
#include <onnx/onnx_pb.h>
#include <onnx/shape_inference/implementation.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <set>

#include "common/dataset.h"

namespace fl {
namespace {

using Layer = OnnxLayer;
using LayerSpec = OnnxLayerSpec;
using ArchitectureGraph = OnnxGraph;

// The built-in architectures (common/model_zoo.cc), layer by layer. Every
// parameter's shape follows from these, and a model's tensors must match it
// exactly: nothing about the graph is taken from the model file.
const std::vector<ArchitectureGraph>& Graphs() {
  static const std::vector<ArchitectureGraph> kGraphs = {
      {"mnist_2nn",
       {1, 28, 28},
       10,
       {{Layer::kFlatten, ""},
        {Layer::kLinear, "fc1", 200},
        {Layer::kRelu, ""},
        {Layer::kLinear, "fc2", 200},
        {Layer::kRelu, ""},
        {Layer::kLinear, "fc3", 10}}},
      {"mnist_cnn",
       {1, 28, 28},
       10,
       {{Layer::kConv, "conv1", 32, 5, 2},
        {Layer::kRelu, ""},
        {Layer::kMaxPool2, ""},
        {Layer::kConv, "conv2", 64, 5, 2},
        {Layer::kRelu, ""},
        {Layer::kMaxPool2, ""},
        {Layer::kFlatten, ""},
        {Layer::kLinear, "fc1", 512},
        {Layer::kRelu, ""},
        {Layer::kLinear, "fc2", 10}}},
  };
  return kGraphs;
}

void SetRaw(onnx::TensorProto* t, const void* data, size_t bytes) {
  t->set_raw_data(std::string(static_cast<const char*>(data), bytes));
}

onnx::AttributeProto* Attr(onnx::NodeProto* node, const std::string& name) {
  onnx::AttributeProto* a = node->add_attribute();
  a->set_name(name);
  return a;
}

void IntsAttr(onnx::NodeProto* node, const std::string& name, std::vector<int64_t> values) {
  onnx::AttributeProto* a = Attr(node, name);
  a->set_type(onnx::AttributeProto::INTS);
  for (int64_t v : values) a->add_ints(v);
}

void FloatAttr(onnx::NodeProto* node, const std::string& name, float value) {
  onnx::AttributeProto* a = Attr(node, name);
  a->set_type(onnx::AttributeProto::FLOAT);
  a->set_f(value);
}

void IntAttr(onnx::NodeProto* node, const std::string& name, int64_t value) {
  onnx::AttributeProto* a = Attr(node, name);
  a->set_type(onnx::AttributeProto::INT);
  a->set_i(value);
}

class GraphBuilder {
 public:
  GraphBuilder(const ModelState& model, const OnnxExportOptions& options, onnx::GraphProto* graph,
               OnnxExportStats* stats)
      : options_(options), graph_(graph), stats_(stats) {
    for (const auto& t : model.tensors) tensors_[t.name] = &t;
  }

  onnx::NodeProto* Node(const std::string& op, std::vector<std::string> inputs,
                        const std::string& output) {
    onnx::NodeProto* n = graph_->add_node();
    n->set_op_type(op);
    n->set_name(op + "_" + std::to_string(graph_->node_size()));
    for (const auto& in : inputs) n->add_input(in);
    n->add_output(output);
    return n;
  }

  // A fresh value name.
  std::string Value(const std::string& hint) { return hint + "_" + std::to_string(++values_); }

  // A float32 scalar constant initializer.
  std::string Scalar(const std::string& name, float v) {
    onnx::TensorProto* t = graph_->add_initializer();
    t->set_name(name);
    t->set_data_type(onnx::TensorProto::FLOAT);
    SetRaw(t, &v, sizeof(v));
    return name;
  }

  // One value per channel, shaped [C, 1, ..., 1] (`rank` dimensions) to
  // broadcast over [N, C, ...]; a scalar when there is one value.
  std::string PerChannel(const std::string& name, const std::vector<float>& v, size_t rank) {
    if (v.size() == 1) return Scalar(name, v[0]);
    onnx::TensorProto* t = graph_->add_initializer();
    t->set_name(name);
    t->set_data_type(onnx::TensorProto::FLOAT);
    t->add_dims(static_cast<int64_t>(v.size()));
    for (size_t i = 1; i < rank; ++i) t->add_dims(1);
    SetRaw(t, v.data(), v.size() * sizeof(float));
    return name;
  }

  // The parameter `name` with the expected shape, stored per the options;
  // returns the graph value that holds it as float.
  Result<std::string> Parameter(const std::string& name, const std::vector<int64_t>& shape) {
    auto it = tensors_.find(name);
    if (it == tensors_.end()) {
      return Status::InvalidArgument("ONNX export: the model has no tensor '" + name + "'");
    }
    const TensorState& t = *it->second;
    if (t.shape != shape) {
      std::string want, got;
      for (int64_t d : shape) want += (want.empty() ? "" : "x") + std::to_string(d);
      for (int64_t d : t.shape) got += (got.empty() ? "" : "x") + std::to_string(d);
      return Status::InvalidArgument("ONNX export: tensor '" + name + "' is " + got +
                                     ", the architecture needs " + want);
    }
    used_.insert(name);
    const bool quantize = options_.int8 && shape.size() >= 2;
    stats_->parameters += static_cast<int64_t>(t.values.size());
    // Sparse when it is smaller: a kept value costs its value and an 8-byte
    // position, a dense one its value alone.
    const int64_t kept = t.KeptCount(), n = static_cast<int64_t>(t.values.size());
    const int64_t value_bytes = quantize ? 1 : 4;
    const bool sparse =
        options_.sparse && !t.mask.empty() && kept * (value_bytes + 8) < n * value_bytes;
    std::vector<float> scales;
    std::vector<int8_t> q;
    if (quantize) Quantize(t, &q, &scales);
    const std::string stored = quantize ? name + ".int8" : name;
    const int type = quantize ? onnx::TensorProto::INT8 : onnx::TensorProto::FLOAT;
    const size_t elem = quantize ? 1 : sizeof(float);
    const void* data = quantize ? static_cast<const void*>(q.data()) : t.values.data();
    if (sparse) {
      // A Constant with a sparse value: its output is the dense tensor, so
      // every operator takes it (a sparse initializer is typed sparse).
      onnx::NodeProto* c = Node("Constant", {}, stored);
      onnx::AttributeProto* attr = Attr(c, "sparse_value");
      attr->set_type(onnx::AttributeProto::SPARSE_TENSOR);
      onnx::SparseTensorProto* s = attr->mutable_sparse_tensor();
      for (int64_t d : shape) s->add_dims(d);
      std::vector<int64_t> positions;
      std::string values;
      for (size_t i = 0; i < t.mask.size(); ++i) {
        if (!t.mask[i]) continue;
        positions.push_back(static_cast<int64_t>(i));
        values.append(static_cast<const char*>(data) + i * elem, elem);
      }
      onnx::TensorProto* v = s->mutable_values();
      v->set_name(stored);
      v->set_data_type(type);
      v->add_dims(static_cast<int64_t>(positions.size()));
      v->set_raw_data(values);
      onnx::TensorProto* idx = s->mutable_indices();
      idx->set_data_type(onnx::TensorProto::INT64);
      idx->add_dims(static_cast<int64_t>(positions.size()));
      SetRaw(idx, positions.data(), positions.size() * sizeof(int64_t));
      stats_->stored_values += static_cast<int64_t>(positions.size());
    } else {
      onnx::TensorProto* v = graph_->add_initializer();
      v->set_name(stored);
      v->set_data_type(type);
      for (int64_t d : shape) v->add_dims(d);
      SetRaw(v, data, t.values.size() * elem);
      stats_->stored_values += static_cast<int64_t>(t.values.size());
    }
    if (!quantize) return name;
    onnx::TensorProto* sc = graph_->add_initializer();
    sc->set_name(name + ".scale");
    sc->set_data_type(onnx::TensorProto::FLOAT);
    sc->add_dims(static_cast<int64_t>(scales.size()));
    SetRaw(sc, scales.data(), scales.size() * sizeof(float));
    onnx::NodeProto* dq = Node("DequantizeLinear", {stored, name + ".scale"}, name);
    IntAttr(dq, "axis", 0);
    return name;
  }

  // Tensors of the model no layer used.
  std::vector<std::string> Unused() const {
    std::vector<std::string> out;
    for (const auto& [name, t] : tensors_) {
      if (!used_.count(name)) out.push_back(name);
    }
    return out;
  }

 private:
  // Symmetric int8 per output channel: scale = max |w| / 127 (1 for an
  // all-zero channel), q = round(w / scale).
  static void Quantize(const TensorState& t, std::vector<int8_t>* q, std::vector<float>* scales) {
    const int64_t channels = t.shape[0];
    const size_t per = t.values.size() / static_cast<size_t>(channels);
    q->resize(t.values.size());
    scales->resize(static_cast<size_t>(channels));
    for (int64_t c = 0; c < channels; ++c) {
      const float* w = t.values.data() + c * per;
      double max_abs = 0;
      for (size_t i = 0; i < per; ++i) max_abs = std::max(max_abs, std::fabs(double{w[i]}));
      // A channel too small for a float scale (or all zero) is stored as zeros.
      const double scale = max_abs / 127.0;
      const bool zero = !(scale >= std::numeric_limits<float>::min());
      (*scales)[c] = zero ? 1.0f : static_cast<float>(scale);
      for (size_t i = 0; i < per; ++i) {
        const double r = zero ? 0.0 : std::nearbyint(w[i] / scale);
        (*q)[c * per + i] = static_cast<int8_t>(std::clamp(r, -127.0, 127.0));
      }
    }
  }

  const OnnxExportOptions& options_;
  onnx::GraphProto* graph_;
  OnnxExportStats* stats_;
  std::map<std::string, const TensorState*> tensors_;
  std::set<std::string> used_;
  int values_{0};
};

void SetShape(onnx::ValueInfoProto* v, const std::string& name, std::vector<int64_t> dims) {
  v->set_name(name);
  auto* tt = v->mutable_type()->mutable_tensor_type();
  tt->set_elem_type(onnx::TensorProto::FLOAT);
  auto* shape = tt->mutable_shape();
  shape->add_dim()->set_dim_param("N");
  for (int64_t d : dims) shape->add_dim()->set_dim_value(d);
}

void Metadata(onnx::ModelProto* m, const std::string& key, const std::string& value) {
  auto* p = m->add_metadata_props();
  p->set_key(key);
  p->set_value(value);
}

std::string Number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.9g", v);
  return buf;
}

}  // namespace

std::vector<std::string> OnnxExportableArchitectures() {
  std::vector<std::string> out;
  for (const auto& g : Graphs()) out.push_back(g.name);
  return out;
}

namespace {

// The layer graph of `model`'s architecture: the one given, or the known one.
Result<const ArchitectureGraph*> GraphOf(const ModelState& model,
                                         const OnnxExportOptions& options) {
  FL_RETURN_IF_ERROR(CheckModelState(model));
  FL_RETURN_IF_ERROR(CheckValueRange(model));
  for (size_t i = 0; i < model.tensors.size(); ++i) {
    for (size_t j = 0; j < i; ++j) {
      if (model.tensors[i].name == model.tensors[j].name) {
        return Status::InvalidArgument("ONNX export: two tensors are named '" +
                                       model.tensors[i].name + "'");
      }
    }
  }
  const ArchitectureGraph* arch = options.graph;
  if (arch && arch->name != model.architecture) {
    return Status::InvalidArgument("ONNX export: the layer graph given is of '" + arch->name +
                                   "', the model is '" + model.architecture + "'");
  }
  for (const auto& g : Graphs()) {
    if (!arch && g.name == model.architecture) arch = &g;
  }
  if (!arch) {
    std::string known;
    for (const auto& n : OnnxExportableArchitectures()) known += (known.empty() ? "" : ", ") + n;
    return Status::InvalidArgument(
        "ONNX export does not know the layers of architecture '" + model.architecture + "'",
        "it exports " + known);
  }
  return arch;
}

// Normalisation, as the trainer does it in float: x / 255 (byte samples),
// - mean, / std. Returns the normalised value's name.
Result<std::string> AddNormalization(GraphBuilder* b, const std::string& input,
                                     const ArchitectureGraph& arch, const ModelState& model,
                                     const OnnxExportOptions& options) {
  std::string x = input;
  if (options.byte_input) {
    x = b->Value("scaled");
    b->Node("Div", {input, b->Scalar("norm.scale", 255.0f)}, x);
  }
  std::string y = b->Value("centred");
  const Normalization& norm = options.normalization;
  if (norm.mean.size() != 1 && static_cast<int64_t>(norm.mean.size()) != arch.input[0]) {
    return Status::InvalidArgument("ONNX export: --normalize gives " +
                                   std::to_string(norm.mean.size()) + " mean/std pairs; '" +
                                   model.architecture + "' takes " +
                                   std::to_string(arch.input[0]) + " channel(s)");
  }
  b->Node("Sub", {x, b->PerChannel("norm.mean", norm.mean, arch.input.size())}, y);
  x = b->Value("input");
  b->Node("Div", {y, b->PerChannel("norm.std", norm.std, arch.input.size())}, x);
  return x;
}

// A layer with parameters: its node from `x` into `out`, and the shape (per
// example) after it in `*shape`.
Status AddLinear(GraphBuilder* b, const LayerSpec& layer, const std::string& x, const std::string& out,
                 std::vector<int64_t>* shape) {
  const int64_t outs = layer.outputs;
  auto w = b->Parameter(layer.name + ".weight", {outs, (*shape)[0]});
  if (!w.ok()) return w.status();
  auto bias = b->Parameter(layer.name + ".bias", {outs});
  if (!bias.ok()) return bias.status();
  IntAttr(b->Node("Gemm", {x, *w, *bias}, out), "transB", 1);
  *shape = {outs};
  return Status::OK();
}

// Eval mode: (x - running_mean) / sqrt(running_var + eps) * weight + bias per
// channel (dimension 1 of [N, C] or [N, C, H, W]).
Status AddBatchNorm(GraphBuilder* b, const LayerSpec& layer, const std::string& x,
                    const std::string& out, const std::vector<int64_t>& shape) {
  const std::vector<int64_t> c = {shape[0]};
  if (layer.outputs != shape[0]) {
    return Status::InvalidArgument("ONNX export: BatchNorm '" + layer.name + "' has " +
                                   std::to_string(layer.outputs) + " channels, its input " +
                                   std::to_string(shape[0]));
  }
  std::vector<std::string> inputs = {x};
  for (const char* role : {".weight", ".bias", ".running_mean", ".running_var"}) {
    auto t = b->Parameter(layer.name + role, c);
    if (!t.ok()) return t.status();
    inputs.push_back(*t);
  }
  FloatAttr(b->Node("BatchNormalization", inputs, out), "epsilon",
            static_cast<float>(layer.epsilon));
  return Status::OK();
}

Status AddConv(GraphBuilder* b, const LayerSpec& layer, const std::string& x, const std::string& out,
               std::vector<int64_t>* shape) {
  const int64_t outs = layer.outputs, kh = layer.kernel, kw = layer.kernel;
  auto w = b->Parameter(layer.name + ".weight", {outs, (*shape)[0], kh, kw});
  if (!w.ok()) return w.status();
  auto bias = b->Parameter(layer.name + ".bias", {outs});
  if (!bias.ok()) return bias.status();
  onnx::NodeProto* n = b->Node("Conv", {x, *w, *bias}, out);
  IntsAttr(n, "kernel_shape", {kh, kw});
  IntsAttr(n, "pads", {layer.pad, layer.pad, layer.pad, layer.pad});
  const std::vector<int64_t> in = *shape;
  *shape = {outs, in[1] + 2 * layer.pad - kh + 1, in[2] + 2 * layer.pad - kw + 1};
  return Status::OK();
}

// One layer's node from `x` into `out`; `*shape` follows it.
Status AddLayer(GraphBuilder* b, const LayerSpec& layer, const std::string& x, const std::string& out,
                std::vector<int64_t>* shape) {
  switch (layer.kind) {
    case Layer::kFlatten: {
      int64_t n = 1;
      for (int64_t d : *shape) n *= d;
      *shape = {n};
      IntAttr(b->Node("Flatten", {x}, out), "axis", 1);
      return Status::OK();
    }
    case Layer::kRelu:
      b->Node("Relu", {x}, out);
      return Status::OK();
    case Layer::kIdentity:
      b->Node("Identity", {x}, out);
      return Status::OK();
    case Layer::kMaxPool2: {
      onnx::NodeProto* n = b->Node("MaxPool", {x}, out);
      IntsAttr(n, "kernel_shape", {2, 2});
      IntsAttr(n, "strides", {2, 2});
      *shape = {(*shape)[0], (*shape)[1] / 2, (*shape)[2] / 2};
      return Status::OK();
    }
    case Layer::kLinear:
      return AddLinear(b, layer, x, out, shape);
    case Layer::kBatchNorm:
      return AddBatchNorm(b, layer, x, out, *shape);
    case Layer::kConv:
      return AddConv(b, layer, x, out, shape);
  }
  return Status::Internal("ONNX export: a layer of unknown kind");
}

// What the model is, for whoever loads the file.
void AddMetadata(onnx::ModelProto* m, const ModelState& model, const OnnxExportOptions& options) {
  Metadata(m, "fedge.architecture", model.architecture);
  Metadata(m, "fedge.input",
           options.byte_input ? "pixels: raw values 0..255 as float; normalised in the graph"
                              : "features: raw float values; normalised in the graph");
  if (options.byte_input) Metadata(m, "fedge.normalize_scale", "255");
  Metadata(m, "fedge.normalize", options.normalization.ToString());
  if (!options.class_names.empty()) {
    std::string classes;
    for (const auto& c : options.class_names) classes += (classes.empty() ? "" : ",") + c;
    Metadata(m, "fedge.classes", classes);
  }
  Metadata(m, "fedge.sparsity", Number(model.Sparsity()));
  Metadata(m, "fedge.weights",
           options.int8 ? "int8 weights, one scale per output channel; fp32 biases" : "fp32");
  if (!options.model_version.empty()) Metadata(m, "fedge.model_version", options.model_version);
}

}  // namespace

Result<std::string> ExportOnnx(const ModelState& model, const OnnxExportOptions& options,
                               OnnxExportStats* stats) {
  auto found = GraphOf(model, options);
  if (!found.ok()) return found.status();
  const ArchitectureGraph* arch = *found;
  OnnxExportStats local;
  if (!stats) stats = &local;
  *stats = OnnxExportStats{};

  onnx::ModelProto m;
  m.set_ir_version(onnx::IR_VERSION);
  m.set_producer_name("fedge");
  m.set_producer_version(options.producer_version);
  m.set_model_version(1);
  m.set_doc_string(model.architecture + ": input '" +
                   (options.byte_input ? "pixels' raw values 0..255" : "features' raw floats") +
                   ", output 'logits' [N, classes]; the graph normalises its input");
  auto* opset = m.add_opset_import();
  opset->set_domain("");
  opset->set_version(kOnnxOpset);
  onnx::GraphProto* graph = m.mutable_graph();
  graph->set_name(model.architecture);
  const std::string input = options.byte_input ? "pixels" : "features";
  SetShape(graph->add_input(), input, arch->input);
  GraphBuilder b(model, options, graph, stats);
  auto normalized = AddNormalization(&b, input, *arch, model, options);
  if (!normalized.ok()) return normalized.status();
  // Shapes through the layers, to know each parameter's expected shape.
  std::string x = *normalized;
  std::vector<int64_t> shape = arch->input;  // per example
  for (const auto& layer : arch->layers) {
    const std::string out = b.Value(layer.name.empty() ? "x" : layer.name);
    FL_RETURN_IF_ERROR(AddLayer(&b, layer, x, out, &shape));
    x = out;
  }
  if (shape != std::vector<int64_t>{arch->classes}) {
    return Status::Internal("ONNX export: the graph of '" + model.architecture +
                            "' does not end in its classes");
  }
  if (auto unused = b.Unused(); !unused.empty()) {
    return Status::InvalidArgument("ONNX export: tensor '" + unused.front() +
                                   "' is not used by the layers of '" + model.architecture + "'");
  }
  // The graph's output is the last layer's value, renamed.
  graph->mutable_node(graph->node_size() - 1)->set_output(0, "logits");
  SetShape(graph->add_output(), "logits", {arch->classes});
  AddMetadata(&m, model, options);
  std::string bytes;
  if (!m.SerializeToString(&bytes)) return Status::Internal("ONNX export: serialization failed");
  stats->bytes = static_cast<int64_t>(bytes.size());
  return bytes;
}

Status CheckOnnxModel(const std::string& bytes) {
  onnx::ModelProto m;
  if (!m.ParseFromString(bytes)) return Status::InvalidArgument("not an ONNX model");
  try {
    onnx::checker::check_model(m);
    onnx::ShapeInferenceOptions strict{/*check_type=*/true, /*error_mode=*/1};
    onnx::shape_inference::InferShapes(m, onnx::OpSchemaRegistry::Instance(), strict);
  } catch (const std::exception& e) {
    return Status::InvalidArgument("ONNX checker", e.what());
  }
  return Status::OK();
}

}  // namespace fl
