// ONNX export: the checker accepts every export, what cannot be exported is
// refused by name, and an export run in ONNX Runtime (a runtime fedge did not
// write: onnxruntime-node) predicts what fedge's own evaluation predicts.
#include "common/onnx_export.h"

#include <gtest/gtest.h>
#include <onnx/onnx_pb.h>

#include <cmath>
#include <cstring>

#include "common/file_util.h"
#include "common/model_zoo.h"
#include "common/trainer.h"
#include "crypto/identity.h"
#include "crypto/model_code.h"
#include "crypto/model_file.h"
#include "experiments/bench/script_models.h"
#include "tests/process_util.h"
#include "tests/test_util.h"

namespace fl {
namespace {

ModelState Initial(const std::string& arch, double sparsity) {
  auto model = CreateModel(arch, 7);
  EXPECT_FL_OK(model);
  ModelState m = GetModelState(arch, **model);
  if (sparsity > 0) EXPECT_FL_OK(PruneByMagnitude(&m, sparsity, /*global=*/true));
  return m;
}

TEST(OnnxExportTest, CheckerPassesForEveryArchitectureAndStorage) {
  for (const std::string& arch : OnnxExportableArchitectures()) {
    const ModelState m = Initial(arch, 0.9);
    int64_t dense_bytes = 0;
    for (bool sparse : {false, true}) {
      for (bool int8 : {false, true}) {
        SCOPED_TRACE(arch + (sparse ? " sparse" : " dense") + (int8 ? " int8" : " fp32"));
        OnnxExportOptions o;
        o.sparse = sparse;
        o.int8 = int8;
        OnnxExportStats stats;
        auto bytes = ExportOnnx(m, o, &stats);
        ASSERT_FL_OK(bytes);
        EXPECT_FL_OK(CheckOnnxModel(*bytes));
        EXPECT_EQ(stats.parameters, m.NumParameters());
        EXPECT_EQ(stats.bytes, static_cast<int64_t>(bytes->size()));
        if (!sparse && !int8) dense_bytes = stats.bytes;
        // The payload: 4 B (fp32) or 1 B (int8 weights, plus a 4 B scale per
        // output channel) per stored value, and 8 B per position of a tensor
        // stored sparsely (when that is smaller); the graph is a few kB.
        double payload = 0;
        int64_t stored = 0;
        for (const auto& t : m.tensors) {
          const bool q = int8 && t.shape.size() >= 2;
          const int64_t vb = q ? 1 : 4, n = static_cast<int64_t>(t.values.size());
          const bool s = sparse && !t.mask.empty() && t.KeptCount() * (vb + 8) < n * vb;
          const int64_t kept = s ? t.KeptCount() : n;
          stored += kept;
          payload += static_cast<double>(kept * (vb + (s ? 8 : 0))) + (q ? 4.0 * t.shape[0] : 0);
        }
        EXPECT_EQ(stats.stored_values, stored);
        if (sparse) EXPECT_LT(stored, m.NumParameters());
        EXPECT_GE(static_cast<double>(stats.bytes), payload);
        EXPECT_LT(static_cast<double>(stats.bytes), payload * 1.02 + 4096);
        if (sparse || int8) EXPECT_LT(stats.bytes, dense_bytes);
      }
    }
  }
  // A dense model has nothing to store sparsely: the export is the dense one.
  OnnxExportStats stats;
  ASSERT_FL_OK(ExportOnnx(Initial("mnist_2nn", 0), OnnxExportOptions{}, &stats));
  EXPECT_EQ(stats.stored_values, stats.parameters);
}

TEST(OnnxExportTest, RefusesWhatItCannotExportByName) {
  ModelState m = Initial("mnist_2nn", 0);
  m.architecture = "keyword_spotter";
  auto r = ExportOnnx(m, OnnxExportOptions{});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().ToString().find("'keyword_spotter'"), std::string::npos)
      << r.status().ToString();
  EXPECT_NE(r.status().ToString().find("mnist_cnn"), std::string::npos) << r.status().ToString();

  m = Initial("mnist_2nn", 0);
  m.tensors[2].shape = {100, 400};  // fc2.weight, same size, another shape
  r = ExportOnnx(m, OnnxExportOptions{});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().ToString().find("'fc2.weight' is 100x400"), std::string::npos)
      << r.status().ToString();

  m = Initial("mnist_2nn", 0);
  m.tensors.push_back({"fc4.weight", {1, 1}, {0.5f}, {}});
  r = ExportOnnx(m, OnnxExportOptions{});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().ToString().find("'fc4.weight' is not used"), std::string::npos)
      << r.status().ToString();

  m = Initial("mnist_2nn", 0);
  m.tensors.erase(m.tensors.begin() + 5);  // fc3.bias
  r = ExportOnnx(m, OnnxExportOptions{});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().ToString().find("'fc3.bias'"), std::string::npos) << r.status().ToString();

  m = Initial("mnist_2nn", 0);
  m.tensors[1].name = "fc1.weight";  // fc1.bias renamed: two of one name
  r = ExportOnnx(m, OnnxExportOptions{});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().ToString().find("two tensors are named 'fc1.weight'"), std::string::npos)
      << r.status().ToString();

  m = Initial("mnist_2nn", 0);
  m.tensors[0].values[3] = std::nanf("");
  EXPECT_FALSE(ExportOnnx(m, OnnxExportOptions{}).ok());

  EXPECT_FALSE(CheckOnnxModel("not a model").ok());
}

// int8: a channel whose weights are too small for a float scale (subnormal)
// is stored as zeros with scale 1, not divided by a zero scale.
TEST(OnnxExportTest, Int8StoresAChannelOfTinyWeightsAsZeros) {
  ModelState m = Initial("mnist_2nn", 0);
  auto& w = m.tensors[0];  // fc1.weight, 200 x 784
  for (size_t i = 0; i < 784; ++i) w.values[i] = i % 2 ? 1e-44f : 0.0f;
  OnnxExportOptions o;
  o.int8 = true;
  auto bytes = ExportOnnx(m, o);
  ASSERT_FL_OK(bytes);
  EXPECT_FL_OK(CheckOnnxModel(*bytes));
  onnx::ModelProto proto;
  ASSERT_TRUE(proto.ParseFromString(*bytes));
  bool seen_scale = false, seen_values = false;
  for (const auto& t : proto.graph().initializer()) {
    if (t.name() == "fc1.weight.scale") {
      float first;
      std::memcpy(&first, t.raw_data().data(), sizeof(first));
      EXPECT_EQ(first, 1.0f);
      seen_scale = true;
    }
    if (t.name() == "fc1.weight.int8") {
      EXPECT_EQ(t.raw_data().substr(0, 784), std::string(784, '\0'));
      seen_values = true;
    }
  }
  EXPECT_TRUE(seen_scale && seen_values);
}

// fl-compress export --signer exports a run's global.flm only when the
// server's key signed it.
TEST(OnnxExportTest, ExportChecksTheSignatureItIsGiven) {
  test::TempDir dir;
  auto server = SigningKey::Generate();
  auto other = SigningKey::Generate();
  ASSERT_FL_OK(server);
  ASSERT_FL_OK(other);
  auto curve = GenerateCurveKeyPair();
  ASSERT_FL_OK(curve);
  ASSERT_FL_OK(
      SaveIdentity(dir.path() + "/server.key", dir.path() + "/server.pub", *server, *curve));
  const ModelState m = Initial("mnist_2nn", 0.5);
  const std::string good = dir.path() + "/global.flm", forged = dir.path() + "/forged.flm";
  ASSERT_FL_OK(WriteModelFile(good, m, ModelFileOptions{}, &*server));
  ASSERT_FL_OK(WriteModelFile(forged, m, ModelFileOptions{}, &*other));
  const std::string bin = std::string(FL_TEST_BIN_DIR) + "/fl-compress";
  for (const auto& [file, ok] : {std::pair{good, true}, std::pair{forged, false}}) {
    test::Process p(
        bin,
        {"export", file, "--signer", dir.path() + "/server.pub", "--out", dir.path() + "/out.onnx"},
        dir.path() + "/export.log");
    EXPECT_EQ(p.Wait(60) == 0, ok) << p.Log();
    if (!ok) EXPECT_NE(p.Log().find("forged.flm"), std::string::npos) << p.Log();
  }
}

// Logits of `model` on `images` through fedge's evaluation path (the model's
// inference plan on the trainer's normalised tensors), [N, 10].
torch::Tensor FedgeLogits(Model& model, const Dataset& images) {
  torch::NoGradGuard no_grad;
  model.eval();
  const TensorDataset t = ToTensors(images);
  InferenceFn infer = model.PrepareInference();
  std::vector<torch::Tensor> out;
  for (int64_t start = 0; start < t.size(); start += kEvalBatch) {
    const int64_t end = std::min(t.size(), start + kEvalBatch);
    out.push_back(infer(t.images.slice(0, start, end)));
  }
  return torch::cat(out);
}

// A CNN trained for one epoch on 6,000 MNIST images, pruned to 90% and
// trained one more epoch on the mask, written as a .flm (as fl-compress or a
// federation would), exported with fl-compress export (sparse, --dense and
// --int8), and run in ONNX Runtime on the 10,000 test images. fp32: the same
// class on at least 99.9% of images and logits within 1e-4. int8 (per-channel weights): the same
// class on at least 99% and the accuracy within 0.5 points.
TEST(OnnxExportTest, OnnxRuntimePredictsWhatFedgePredicts) {
  auto train = test::LoadMnist(Split::kTrain);
  auto t10k = test::LoadMnist(Split::kTest);
  ASSERT_FL_OK(train);
  ASSERT_FL_OK(t10k);
  std::vector<int64_t> head(6000);
  for (int64_t i = 0; i < 6000; ++i) head[i] = i;
  auto shard = Subset(ToTensors(*train), head);
  ASSERT_FL_OK(shard);
  auto model = CreateModel("mnist_cnn", 3);
  ASSERT_FL_OK(model);
  TrainOptions to;
  to.lr = 0.05;
  ASSERT_FL_OK(TrainLocal(**model, *shard, to).status());
  ModelState state = GetModelState("mnist_cnn", **model);
  ASSERT_FL_OK(PruneByMagnitude(&state, 0.9, /*global=*/true));
  ASSERT_FL_OK(SetModelState(**model, state));
  to.masks = MasksOf(state);
  ASSERT_FL_OK(TrainLocal(**model, *shard, to).status());
  // The trained values on the pruned state's masks.
  const ModelState trained = GetModelState("mnist_cnn", **model);
  for (size_t i = 0; i < state.tensors.size(); ++i)
    state.tensors[i].values = trained.tensors[i].values;
  ASSERT_FL_OK(CheckModelState(state));
  const torch::Tensor fedge = FedgeLogits(**model, *t10k);
  const torch::Tensor labels =
      torch::from_blob(t10k->labels.data(), {t10k->count}, torch::kUInt8).to(torch::kLong);
  const double fedge_accuracy = fedge.argmax(1).eq(labels).to(torch::kDouble).mean().item<double>();
  ASSERT_GT(fedge_accuracy, 0.9);

  test::TempDir dir;
  const std::string flm = dir.path() + "/model.flm";
  ASSERT_FL_OK(WriteModelFile(flm, state, ModelFileOptions{}));
  // The same weights federated as a TorchScript copy of the CNN: the export
  // reads its layers from the script's code (--script).
  const std::string pt = dir.path() + "/cnn.pt";
  {
    auto script = ScriptCopyOf(state);
    ASSERT_FL_OK(script);
    script->save(pt);
  }
  auto pt_bytes = ReadFile(pt);
  ASSERT_FL_OK(pt_bytes);
  ModelState as_script = state;
  as_script.architecture = ModelCodeId(*pt_bytes);
  const std::string script_flm = dir.path() + "/script.flm";
  ASSERT_FL_OK(WriteModelFile(script_flm, as_script, ModelFileOptions{}));
  for (const std::string flag : {"", "--dense", "--int8", "--script"}) {
    const bool int8 = flag == "--int8";
    const std::string variant = flag.empty() ? "sparse fp32" : flag.substr(2);
    SCOPED_TRACE(variant);
    const std::string onnx = dir.path() + "/model" + flag + ".onnx";
    std::vector<std::string> args = {"export", flag == "--script" ? script_flm : flm, "--out",
                                     onnx};
    if (flag == "--script") {
      args.insert(args.end(),
                  {"--script", pt, "--input-shape", "1,28,28", "--normalize", "0.1307,0.3081"});
    } else if (!flag.empty()) {
      args.push_back(flag);
    }
    test::Process exporter(std::string(FL_TEST_BIN_DIR) + "/fl-compress", args,
                           dir.path() + "/export.log");
    ASSERT_EQ(exporter.Wait(60), 0) << exporter.Log();
    EXPECT_NE(exporter.Log().find("ONNX checker passed"), std::string::npos) << exporter.Log();

    const std::string out = onnx + ".logits";
    test::Process ort(FL_TEST_NODE,
                      {FL_TEST_ORT_SCRIPT, onnx, test::MnistDir() + "/t10k-images-idx3-ubyte", out},
                      dir.path() + "/ort.log");
    ASSERT_EQ(ort.Wait(120), 0) << "ONNX Runtime (node " << FL_TEST_NODE << "): " << ort.Log();
    auto bytes = ReadFile(out);
    ASSERT_FL_OK(bytes);
    ASSERT_EQ(bytes->size(), static_cast<size_t>(t10k->count) * 10 * sizeof(float));
    const torch::Tensor theirs =
        torch::from_blob(bytes->data(), {t10k->count, 10}, torch::kFloat32).clone();
    const double agree =
        theirs.argmax(1).eq(fedge.argmax(1)).to(torch::kDouble).mean().item<double>();
    const double max_diff = (theirs - fedge).abs().max().item<double>();
    const double accuracy = theirs.argmax(1).eq(labels).to(torch::kDouble).mean().item<double>();
    std::printf(
        "%s: same class on %.2f%% of images, largest logit difference %.3g, accuracy "
        "%.2f%% (fedge %.2f%%)\n",
        variant.c_str(), 100 * agree, max_diff, 100 * accuracy, 100 * fedge_accuracy);
    if (int8) {
      EXPECT_GE(agree, 0.99);
      EXPECT_NEAR(accuracy, fedge_accuracy, 0.005);
    } else {
      EXPECT_GE(agree, 0.999);
      EXPECT_LE(max_diff, 1e-4);
    }
  }
}

}  // namespace
}  // namespace fl
