// fl-compress: prepares a compressed model once, on the server side.
//
//   fl-compress prune --model mnist_cnn --sparsity 0.9 --schedule gradual --steps 5
//               --distill --temperature 4 --alpha 0.7 --data data/mnist --out cnn90.flm
//   fl-compress prune ... --compare     # with and without distillation, same teacher
//   fl-compress inspect cnn90.flm       # JSON: shapes, kept counts, sparsity, version
//   fl-compress prune ... --key server.key           # sign the file
//   fl-compress inspect global.flm --signer server.pub   # refuse unless that key signed it
//
// Pruning is by weight magnitude, global across layers by default (--per-layer
// prunes each layer to the target on its own); biases stay dense. The gradual
// schedule is Zhu & Gupta 2017: sparsity s_t = s_f * (1 - (1 - t/n)^3) at steps
// t = 1..n, with masked fine-tuning after each step. Distillation (Hinton et al.
// 2015) mixes the loss on the dense teacher's soft targets at temperature T with
// the hard-label loss: alpha * T^2 * KL + (1 - alpha) * CE.
#include <CLI/CLI.hpp>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common/clock.h"
#include "common/data_flags.h"
#include "common/dataset.h"
#include "common/file_util.h"
#include "common/model_zoo.h"
#include "common/onnx_export.h"
#include "common/process_exit.h"
#include "common/progress.h"
#include "common/text.h"
#include "common/trainer.h"
#include "crypto/identity.h"
#include "crypto/model_code.h"
#include "crypto/model_file.h"
#include "crypto/sha256.h"
#include "experiments/compress/script_graph.h"

namespace fl {
namespace {

struct PruneOptions {
  // Architecture of the dense teacher and the pruned student.
  std::string model = "mnist_cnn";
  // Final fraction of prunable weights set to zero.
  double sparsity = 0.9;
  // "gradual" (Zhu & Gupta) or "oneshot".
  std::string schedule = "gradual";
  // Pruning steps of the gradual schedule.
  int steps = 5;
  // Rank weights within each layer instead of across all layers.
  bool per_layer = false;
  // Distil from the dense teacher while fine-tuning, and its parameters.
  bool distill = false;
  double temperature = 4.0;
  double alpha = 0.7;
  // Train and report both with and without distillation.
  bool compare = false;
  // Dense teacher: a model file to load, or trained here for teacher_epochs.
  std::string teacher;
  int teacher_epochs = 1;
  // Fine-tuning epochs after each pruning step.
  int finetune_epochs = 1;
  // Training samples used (the first N of the training split; 0 = all).
  int64_t train_samples = 0;
  // SGD settings for teacher training and fine-tuning.
  double lr = 0.05;
  double momentum = 0.9;
  int64_t batch = 64;
  uint64_t seed = 1;
  DataOptions data = DataAt(FL_DEFAULT_DATA_DIR);
  std::string out;
  // Identity (NAME.key) to sign the written file with; empty = unsigned.
  std::string key;
  // Store kept values as int8 with per-block scales instead of fp32.
  bool int8 = false;
};

void Fail(const Status& st) { std::fprintf(stderr, "error: %s\n", st.ToString().c_str()); }

// Prunes a copy of `dense` by the schedule, fine-tuning after each step, and
// returns the final sparse state with its test accuracy.
Result<std::pair<ModelState, double>> PruneAndFinetune(const PruneOptions& o,
                                                       const ModelState& dense, Model* teacher,
                                                       bool distill, const TensorDataset& train,
                                                       const TensorDataset& test) {
  auto student = CreateModel(o.model, o.seed);
  if (!student.ok()) return student.status();
  const std::string& arch = (*student)->architecture;
  ModelState state = dense;
  const int steps = o.schedule == "oneshot" ? 1 : o.steps;
  double acc = 0;
  for (int t = 1; t <= steps; ++t) {
    const double frac = static_cast<double>(t) / steps;
    const double s = o.sparsity * (1 - std::pow(1 - frac, 3));
    FL_RETURN_IF_ERROR(PruneByMagnitude(&state, s, !o.per_layer));
    FL_RETURN_IF_ERROR(SetModelState(**student, state));
    TrainOptions to;
    to.epochs = o.finetune_epochs;
    to.batch_size = o.batch;
    to.lr = o.lr;
    to.momentum = o.momentum;
    to.seed = o.seed + t;
    to.masks = MasksOf(state);
    if (distill) {
      to.teacher = teacher;
      to.temperature = o.temperature;
      to.distill_alpha = o.alpha;
    }
    // Fine-tuning epochs of minutes show where they are, every 5 s: this
    // step's share and the whole schedule's.
    Progress progress;
    to.on_epoch = [&](const EpochStats& e) {
      std::printf("    step %d/%d epoch %d/%d: train loss %.4f, %.0f s\n", t, steps, e.epoch,
                  o.finetune_epochs, e.mean_loss, e.seconds);
      std::fflush(stdout);
    };
    to.on_step = [&](double done) {
      std::string line;
      if (progress.Due(done, &line)) {
        std::printf("    step %d/%d: fine-tuning %s (schedule %.0f%% done)\n", t, steps,
                    line.c_str(), 100 * ((t - 1) + done) / steps);
        std::fflush(stdout);
      }
    };
    const double t0 = NowSeconds();
    auto st = TrainLocal(**student, train, to);
    if (!st.ok()) return st.status();
    ModelState trained = GetModelState(arch, **student);
    for (size_t i = 0; i < trained.tensors.size(); ++i)
      trained.tensors[i].mask = state.tensors[i].mask;
    state = std::move(trained);
    auto e = Evaluate(**student, test);
    if (!e.ok()) return e.status();
    acc = e->accuracy;
    std::printf(
        "  %s step %d/%d: sparsity %.1f%%, fine-tuned %d epoch(s) in %.0f s, "
        "test accuracy %.2f%%\n",
        distill ? "[distill]" : "[plain]  ", t, steps, 100 * state.Sparsity(), o.finetune_epochs,
        NowSeconds() - t0, 100 * acc);
    std::fflush(stdout);
  }
  return std::make_pair(std::move(state), acc);
}

// The dense teacher: the zoo model of --model, loaded from --teacher or
// trained. 0, or the exit code when it cannot be had.
int MakeTeacher(const PruneOptions& o, const Dataset& train_raw, const TensorDataset& train,
                ModelPtr* teacher) {
  auto made = CreateModel(o.model, o.seed);
  if (!made.ok()) return Fail(made.status()), 2;
  *teacher = *made;
  if (Status st = CheckModelFitsData(**teacher, o.model, train_raw, o.data.path); !st.ok()) {
    return Fail(st), 2;
  }
  if (!o.teacher.empty()) {
    auto t = ReadModelFile(o.teacher);
    if (!t.ok()) return Fail(t.status()), 1;
    if (Status st = SetModelState(**teacher, *t); !st.ok()) {
      return Fail(st.WithContext(o.teacher)), 1;
    }
    std::printf("teacher: loaded %s\n", o.teacher.c_str());
    return 0;
  }
  TrainOptions to;
  to.epochs = o.teacher_epochs;
  to.batch_size = o.batch;
  to.lr = o.lr;
  to.momentum = o.momentum;
  to.seed = o.seed;
  to.on_epoch = [&](const EpochStats& e) {
    std::printf("  teacher epoch %d/%d: train loss %.4f, %.0f s\n", e.epoch, o.teacher_epochs,
                e.mean_loss, e.seconds);
    std::fflush(stdout);
  };
  Progress progress;
  to.on_step = [&](double done) {
    std::string line;
    if (progress.Due(done, &line)) {
      std::printf("  teacher: %s\n", line.c_str());
      std::fflush(stdout);
    }
  };
  auto st = TrainLocal(**teacher, train, to);
  if (!st.ok()) return Fail(st.status()), 1;
  return 0;
}

// Writes the chosen model to --out, signed with --key when given, with what
// it was trained with (its normalisation and classes).
Status SavePruned(const PruneOptions& o, const ModelState& chosen, const Dataset& train_raw) {
  ModelFileOptions fo;
  fo.value_bits = o.int8 ? 8 : 32;
  fo.meta.normalization = train_raw.normalization;
  fo.meta.class_names = train_raw.class_names;
  std::unique_ptr<SigningKey> signer;
  if (!o.key.empty()) {
    auto id = LoadIdentity(o.key);
    if (!id.ok()) return id.status();
    signer = std::make_unique<SigningKey>(std::move(id->signing));
  }
  return WriteModelFile(o.out, chosen, fo, signer.get());
}

void PrintPruned(const PruneOptions& o, double dense, double plain, double kd,
                 const ModelState& chosen) {
  auto bytes = ReadFile(o.out);
  const std::string pruned = "pruned " + std::to_string(static_cast<int>(100 * o.sparsity)) + "%";
  std::printf("\n%-34s %8s\n", "model", "test acc");
  std::printf("%-34s %7.2f%%\n", "dense teacher", 100 * dense);
  if (!std::isnan(plain)) std::printf("%-34s %7.2f%%\n", pruned.c_str(), 100 * plain);
  if (!std::isnan(kd)) {
    std::printf("%-34s %7.2f%%\n", (pruned + " + distillation").c_str(), 100 * kd);
  }
  std::printf("wrote %s: %lld of %lld parameters kept (%.1f%% sparse), %zu bytes%s\n",
              o.out.c_str(), static_cast<long long>(chosen.KeptCount()),
              static_cast<long long>(chosen.NumParameters()), 100 * chosen.Sparsity(),
              bytes.ok() ? bytes->size() : 0, o.int8 ? ", int8 values" : "");
}

int RunPrune(const PruneOptions& o) {
  if (!(o.sparsity > 0 && o.sparsity < 1)) {
    return Fail(Status::InvalidArgument("--sparsity must be in (0, 1)")), 2;
  }
  if (o.schedule != "gradual" && o.schedule != "oneshot") {
    return Fail(Status::InvalidArgument("--schedule must be gradual or oneshot")), 2;
  }
  if (o.out.empty()) return Fail(Status::InvalidArgument("--out FILE is required")), 2;
  auto splits = LoadData(o.data, /*need_train=*/true, /*need_test=*/true);
  if (!splits.ok()) return Fail(splits.status()), 1;
  std::printf("data %s: %s\n", o.data.path.c_str(), DescribeData(*splits).c_str());
  const Dataset& train_raw = splits->train;
  TensorDataset train = ToTensors(train_raw);
  if (o.train_samples > 0 && o.train_samples < train.size()) {
    train.images = train.images.slice(0, 0, o.train_samples).contiguous();
    train.labels = train.labels.slice(0, 0, o.train_samples).contiguous();
  }
  const TensorDataset test = ToTensors(splits->test);
  std::printf(
      "fl-compress prune: %s to %.0f%% sparsity (%s, %s%s), %lld training samples, seed %llu\n",
      o.model.c_str(), 100 * o.sparsity, o.schedule.c_str(), o.per_layer ? "per layer" : "global",
      o.distill || o.compare ? ", distillation" : "", static_cast<long long>(train.size()),
      static_cast<unsigned long long>(o.seed));
  // 1. The dense teacher.
  ModelPtr teacher;
  if (const int code = MakeTeacher(o, train_raw, train, &teacher); code != 0) return code;
  auto dense_eval = Evaluate(*teacher, test);
  if (!dense_eval.ok()) return Fail(dense_eval.status()), 1;
  const ModelState dense = GetModelState(teacher->architecture, *teacher);
  std::printf("dense teacher: test accuracy %.2f%% (%lld parameters)\n", 100 * dense_eval->accuracy,
              static_cast<long long>(dense.NumParameters()));
  // 2. Prune + fine-tune, with and/or without distillation.
  const std::vector<bool> variants =
      o.compare ? std::vector<bool>{false, true} : std::vector<bool>{o.distill};
  ModelState chosen;
  double acc_plain = std::nan(""), acc_kd = std::nan("");
  for (bool kd : variants) {
    auto r = PruneAndFinetune(o, dense, teacher.get(), kd, train, test);
    if (!r.ok()) return Fail(r.status()), 1;
    (kd ? acc_kd : acc_plain) = r->second;
    if (kd == (o.distill || o.compare)) chosen = std::move(r->first);
  }
  // 3. Save.
  if (Status st = SavePruned(o, chosen, train_raw); !st.ok()) return Fail(st), 1;
  PrintPruned(o, dense_eval->accuracy, acc_plain, acc_kd, chosen);
  return 0;
}

// Reads and verifies a model file: its digest, and its signature against
// `signer_pub` (NAME.pub) when one is given. Writes the file's bytes too.
Result<ModelState> LoadVerified(const std::string& path, const std::string& signer_pub,
                                std::string* bytes, ModelFileMeta* meta = nullptr) {
  auto read = ReadFile(path);
  if (!read.ok()) return read.status();
  *bytes = std::move(read).value();
  std::optional<Ed25519PublicKey> trusted;
  if (!signer_pub.empty()) {
    auto pub = LoadPublicIdentity(signer_pub);
    if (!pub.ok()) return pub.status();
    trusted = pub->signing;
  }
  return DecodeModelFile(path, *bytes, trusted ? &*trusted : nullptr, meta);
}

struct ExportArgs {
  std::string model_path, format{"onnx"}, out, signer_pub, normalize, script, input_shape;
  bool int8{false};
  bool dense{false};
  bool float_input{false};
};

// fl-compress export: a model file as ONNX for on-device runtimes.
// A TorchScript model's layers, read from the file it was federated as
// (--script, which must be the one the model file names), for an example of
// --input-shape. InvalidArgument naming what is missing or wrong.
Result<OnnxGraph> ScriptGraphOf(const ExportArgs& a, const ModelState& m,
                                const std::string& normalize) {
  if (normalize.empty()) {
    return Status::InvalidArgument(a.model_path,
                                   "is a TorchScript model and records no normalisation: give the "
                                   "one its federation used with --normalize mean,std[,...] (the "
                                   "server logs it; '0,1' for none)");
  }
  if (a.script.empty() || a.input_shape.empty()) {
    return Status::InvalidArgument(
        a.model_path, "is a TorchScript model (" + m.architecture +
                          "): give its file with --script FILE.pt and one example's shape "
                          "with --input-shape C,H,W (or F)");
  }
  auto code = ReadFile(a.script);
  if (!code.ok()) return code.status();
  if (ModelCodeId(*code) != m.architecture) {
    return Status::InvalidArgument(
        a.script, "is " + ModelCodeId(*code) + ", the model file is " + m.architecture);
  }
  std::vector<int64_t> shape;
  for (const std::string& size : SplitList(a.input_shape, ',')) {
    shape.push_back(std::atoll(size.c_str()));
    if (shape.back() <= 0) {
      return Status::InvalidArgument("--input-shape " + a.input_shape, "needs positive sizes");
    }
  }
  return ReadScriptGraph(a.script, shape, m);
}

void PrintExported(const ExportArgs& a, const ModelState& m, const OnnxExportOptions& o,
                   const OnnxExportStats& stats, const OnnxExportStats& dense_stats,
                   const std::string& normalize) {
  std::printf(
      "wrote %s: ONNX opset %d, %s, %.1f%% sparse (%lld of %lld values stored%s), %lld bytes; "
      "the dense fp32 export is %lld bytes (%.2fx); ONNX checker passed\n",
      a.out.c_str(), kOnnxOpset, m.architecture.c_str(), 100 * m.Sparsity(),
      static_cast<long long>(stats.stored_values), static_cast<long long>(stats.parameters),
      a.int8 ? ", weights int8 per output channel" : "", static_cast<long long>(stats.bytes),
      static_cast<long long>(dense_stats.bytes),
      static_cast<double>(dense_stats.bytes) / std::max<int64_t>(stats.bytes, 1));
  std::string in = "1, 28, 28", classes = "10";
  if (o.graph) {
    in.clear();
    for (int64_t d : o.graph->input) in += (in.empty() ? "" : ", ") + std::to_string(d);
    classes = std::to_string(o.graph->classes);
  }
  std::printf(
      "input '%s' [N, %s]: %s, normalised in the graph with mean,std %s%s; output "
      "'logits' [N, %s]\n",
      o.byte_input ? "pixels" : "features", in.c_str(),
      o.byte_input ? "raw values 0..255 (divided by 255 first)" : "raw floats",
      o.normalization.ToString().c_str(),
      !a.normalize.empty() ? ""
      : normalize.empty()  ? " (MNIST's published statistics: pass the federation's with "
                             "--normalize)"
                           : " (recorded in the model file)",
      classes.c_str());
}

int RunExport(const ExportArgs& a) {
  if (a.format != "onnx") {
    return Fail(Status::InvalidArgument("--format " + a.format + " is not supported (onnx)")), 2;
  }
  std::string bytes;
  ModelFileMeta meta;
  auto m = LoadVerified(a.model_path, a.signer_pub, &bytes, &meta);
  if (!m.ok()) return Fail(m.status()), 1;
  auto version = ModelFileVersion(bytes);
  OnnxExportOptions o;
  o.class_names = meta.class_names;
  // The normalisation: --normalize, else the one the model file records (a
  // run's global.flm, fl-compress prune's output), else MNIST's.
  const std::string normalize = !a.normalize.empty() || meta.normalization.empty()
                                    ? a.normalize
                                    : meta.normalization.ToString();
  o.byte_input = !a.float_input;
  Result<OnnxGraph> script_graph = Status::NotFound("none");
  if (m->architecture.rfind("torchscript:", 0) == 0) {
    script_graph = ScriptGraphOf(a, *m, normalize);
    if (!script_graph.ok()) {
      // (The script's file unreadable: 1; anything the user must fix: 2.)
      const Status& st = script_graph.status();
      return Fail(st), st.IsIOError() || st.IsNotFound() ? 1 : 2;
    }
    o.graph = &*script_graph;
  }
  if (!normalize.empty()) {
    auto n = ParseNormalization(normalize);
    if (!n.ok()) return Fail(n.status()), 2;
    o.normalization = *n;
  }
  o.sparse = !a.dense;
  o.int8 = a.int8;
  o.producer_version = "fl-compress";
  o.model_version = version.ok() ? ToHex(*version) : "";
  OnnxExportStats stats, dense_stats;
  auto onnx = ExportOnnx(*m, o, &stats);
  OnnxExportOptions plain = o;
  plain.sparse = false;
  plain.int8 = false;
  auto dense = ExportOnnx(*m, plain, &dense_stats);
  if (!onnx.ok() || !dense.ok()) return Fail(onnx.ok() ? dense.status() : onnx.status()), 1;
  if (Status st = CheckOnnxModel(*onnx); !st.ok()) return Fail(st), 1;
  if (Status st = WriteFileAtomic(a.out, *onnx); !st.ok()) return Fail(st), 1;
  PrintExported(a, *m, o, stats, dense_stats, normalize);
  return 0;
}

int RunInspect(const std::string& path, const std::string& signer_pub) {
  std::string file;
  ModelFileMeta meta;
  auto m = LoadVerified(path, signer_pub, &file, &meta);
  if (!m.ok()) {
    Fail(m.status());
    return 1;
  }
  auto version = ModelFileVersion(file);
  auto signer = ModelFileSigner(file);
  nlohmann::ordered_json j;
  j["file"] = path;
  j["architecture"] = m->architecture;
  j["version"] = version.ok() ? ToHex(*version) : "";
  j["signed_by"] = signer.ok() && signer->has_value() ? nlohmann::ordered_json(NodeId(**signer))
                                                      : nlohmann::ordered_json(nullptr);
  j["bytes_on_disk"] = file.size();
  j["parameters"] = m->NumParameters();
  j["kept"] = m->KeptCount();
  j["sparsity"] = m->Sparsity();
  j["normalize"] = meta.normalization.empty()
                       ? nlohmann::ordered_json(nullptr)
                       : nlohmann::ordered_json(meta.normalization.ToString());
  j["classes"] = meta.class_names;
  j["tensors"] = nlohmann::ordered_json::array();
  for (const auto& t : m->tensors) {
    const int64_t n = static_cast<int64_t>(t.values.size());
    j["tensors"].push_back({{"name", t.name},
                            {"shape", t.shape},
                            {"kept", t.KeptCount()},
                            {"sparsity", n ? 1.0 - static_cast<double>(t.KeptCount()) / n : 0.0}});
  }
  const std::string js = j.dump(2) + "\n";
  std::fputs(js.c_str(), stdout);
  return 0;
}

}  // namespace
}  // namespace fl

static int CompressMain(int argc, char** argv) {
  fl::PruneOptions o;
  std::string inspect_path;
  CLI::App app{
      "fl-compress: prune (with distillation), inspect and export (ONNX) compressed models"};
  app.require_subcommand(1);
  auto* prune =
      app.add_subcommand("prune", "Train or load a dense teacher, prune, fine-tune, save");
  prune->add_option("--model", o.model, "Architecture: zoo name or TorchScript file (.pt)")
      ->capture_default_str();
  prune->add_option("--sparsity", o.sparsity, "Target sparsity")->capture_default_str();
  prune->add_option("--schedule", o.schedule, "gradual | oneshot")->capture_default_str();
  prune->add_option("--steps", o.steps, "Steps of the gradual schedule")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  prune->add_flag("--per-layer", o.per_layer, "Prune each layer to the target (default: global)");
  prune->add_flag("--distill", o.distill, "Distil from the dense teacher while fine-tuning");
  prune->add_option("--temperature", o.temperature, "Distillation temperature T")
      ->capture_default_str();
  prune->add_option("--alpha", o.alpha, "Weight of the soft-target loss")->capture_default_str();
  prune->add_flag("--compare", o.compare, "Report with and without distillation");
  prune->add_option("--teacher", o.teacher, "Dense model file to use as teacher");
  prune->add_option("--teacher-epochs", o.teacher_epochs, "Epochs to train the teacher")
      ->capture_default_str();
  prune->add_option("--finetune-epochs", o.finetune_epochs, "Epochs of fine-tuning per step")
      ->capture_default_str();
  prune
      ->add_option("--train-samples", o.train_samples, "Use the first N training samples (0 = all)")
      ->capture_default_str();
  prune->add_option("--lr", o.lr, "SGD learning rate")->capture_default_str();
  prune->add_option("--momentum", o.momentum, "SGD momentum")->capture_default_str();
  prune->add_option("--batch", o.batch, "Batch size")->capture_default_str();
  prune->add_option("--seed", o.seed, "Seed")->capture_default_str();
  prune
      ->add_option("--data", o.data.path,
                   "Server-side data: an IDX folder (MNIST's file names), a CSV file or class "
                   "folders of images")
      ->capture_default_str();
  AddDataFormatFlags(*prune, &o.data);
  prune->add_option("--out", o.out, "Model file to write")->required();
  prune->add_flag("--int8", o.int8, "Store kept values as int8 with per-block scales");
  prune->add_option("--key", o.key, "Sign the file with this identity (NAME.key from fl-keygen)");
  std::string signer_pub;
  auto* inspect = app.add_subcommand(
      "inspect", "Check a model file (digest; signature if signed) and print it as JSON");
  inspect->add_option("file", inspect_path, "Model file")->required();
  inspect->add_option("--signer", signer_pub,
                      "Refuse the file unless it is signed by this identity (NAME.pub), e.g. "
                      "the server's for the global.flm it writes");
  fl::ExportArgs ex;
  auto* exp = app.add_subcommand(
      "export", "Write a model file (e.g. a run's global.flm) as ONNX for on-device inference");
  exp->add_option("file", ex.model_path, "Model file (.flm)")->required();
  exp->add_option("--format", ex.format, "Output format")->capture_default_str();
  exp->add_option("--out", ex.out, "File to write")->required();
  exp->add_option("--signer", ex.signer_pub,
                  "Refuse the model file unless it is signed by this identity (NAME.pub)");
  exp->add_option("--normalize", ex.normalize,
                  "mean,std[,mean,std...] the federation normalised its input with (default: "
                  "the one the model file records, as a run's global.flm and fl-compress prune's "
                  "output do; else MNIST's 0.1307,0.3081)");
  exp->add_option("--script", ex.script,
                  "A TorchScript model's file (the one it was federated as): its layers are read "
                  "from it");
  exp->add_option("--input-shape", ex.input_shape,
                  "With --script: one example's shape, C,H,W (images) or F (feature vectors)");
  exp->add_flag("--float-input", ex.float_input,
                "The input is raw floats (CSV features), not bytes 0..255");
  exp->add_flag("--int8", ex.int8,
                "Weights as int8 with one scale per output channel (DequantizeLinear)");
  exp->add_flag(
      "--dense", ex.dense,
      "Store pruned tensors densely (default: sparse constants, kept values + positions)");
  CLI11_PARSE(app, argc, argv);
  if (*prune) return fl::RunPrune(o);
  if (*exp) return fl::RunExport(ex);
  return fl::RunInspect(inspect_path, signer_pub);
}

// LibTorch's static teardown is skipped: common/process_exit.h.
int main(int argc, char** argv) { fl::ExitWithoutStaticTeardown(CompressMain(argc, argv)); }
