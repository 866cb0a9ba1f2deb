// fl-bench-train: local training throughput of the model zoo.
//
// Prints, for each model, training samples/s at batch size 10 on one intra-op
// thread, and the wall time of one FedAvg client round (E=5 epochs over 600
// samples, the per-client share of MNIST with 100 clients). Results go in
// experiments/BENCHMARKS.md with the date.
#include <torch/torch.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "common/clock.h"
#include "common/dataset.h"
#include "common/model_zoo.h"
#include "common/reproducible.h"
#include "common/trainer.h"
#include "experiments/bench/bench_util.h"
#include "experiments/bench/script_models.h"

namespace {

// Batch size of the throughput measurement (FedAvg's B=10).
const int64_t kBatch = 10;
// Samples in the client-round measurement (60,000 / 100 clients).
const int64_t kRoundSamples = 600;
// Epochs in the client-round measurement.
const int kRoundEpochs = 5;

// Which BLAS the process actually loaded, read from its memory map.
std::string LoadedBlas() {
  std::ifstream in("/proc/self/maps");
  std::string line;
  while (std::getline(in, line)) {
    if (line.find("openblas") != std::string::npos) return line.substr(line.find('/'));
  }
  in.clear();
  in.seekg(0);
  while (std::getline(in, line)) {
    if (line.find("libblas") != std::string::npos) return line.substr(line.find('/'));
  }
  return "unknown";
}

// One model's line: throughput on `samples` samples, and the time of a round
// of E=5 on 600. False (said why) when training failed.
bool Measure(const std::string& name, const fl::TensorDataset& all, int64_t samples,
             int threads) {
  auto model = fl::CreateModel(name, 1);
  if (!model.ok()) {
    std::fprintf(stderr, "error: %s\n", model.status().ToString().c_str());
    return false;
  }
  std::vector<int64_t> idx(samples);
  for (int64_t i = 0; i < samples; ++i) idx[i] = i;
  auto subset = fl::Subset(all, idx);
  std::vector<int64_t> round_idx(idx.begin(), idx.begin() + kRoundSamples);
  auto round_set = fl::Subset(all, round_idx);
  if (!subset.ok() || !round_set.ok()) return false;

  fl::TrainOptions opts;
  opts.batch_size = kBatch;
  opts.lr = 0.01;
  opts.threads = threads;
  // Warm-up: first-touch allocations and lazy initialisation.
  auto warm = fl::Subset(all, std::vector<int64_t>(idx.begin(), idx.begin() + 200));
  if (!fl::TrainLocal(**model, *warm, opts).ok()) return false;

  const double t0 = fl::NowSeconds();
  auto s = fl::TrainLocal(**model, *subset, opts);
  const double secs = fl::NowSeconds() - t0;
  if (!s.ok()) {
    std::fprintf(stderr, "error: %s\n", s.status().ToString().c_str());
    return false;
  }

  opts.epochs = kRoundEpochs;
  const double r0 = fl::NowSeconds();
  auto r = fl::TrainLocal(**model, *round_set, opts);
  const double round_secs = fl::NowSeconds() - r0;
  if (!r.ok()) return false;
  std::printf("%-10s %8lld %12lld %14.0f %18.2f\n", name.c_str(), static_cast<long long>(kBatch),
              static_cast<long long>(samples), samples / secs, round_secs);
  std::fflush(stdout);
  return true;
}

// The TorchScript copy of each zoo model in `models` (same weights and
// operations), added to the list.
bool AddScriptCopies(std::vector<std::string>* models) {
  const std::vector<std::string> zoo = *models;
  for (const auto& name : zoo) {
    if (fl::IsScriptModelPath(name)) continue;
    auto m = fl::CreateModel(name, 1);
    if (!m.ok()) return false;
    auto script = fl::ScriptCopyOf(fl::GetModelState(name, **m));
    if (!script.ok()) continue;
    const std::string path = "/tmp/fl-bench-train-" + name + ".pt";
    script->save(path);
    models->push_back(path);
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  std::string data_dir = FL_DEFAULT_DATA_DIR;
  int64_t samples = 3000;
  int threads = 1;
  CLI::App app{"fl-bench-train: local training throughput of the model zoo"};
  app.add_option("--data", data_dir, "Folder with MNIST-format IDX files")->capture_default_str();
  app.add_option("--samples", samples, "Samples per throughput measurement")
      ->capture_default_str()
      ->check(CLI::Range(100, 60000));
  app.add_option("--threads", threads, "Intra-op threads")->capture_default_str();
  std::vector<std::string> models;
  for (const auto& info : fl::ListModels()) models.push_back(info.name);
  app.add_option("--model", models, "Models to measure: zoo names or TorchScript files (.pt)")
      ->capture_default_str();
  bool reproducible = false;
  app.add_flag("--reproducible", reproducible,
               "Train as fl-sim --reproducible does (pinned kernels, oneDNN off, deterministic "
               "algorithms): what reproducibility costs");
  bool script_copies = false;
  app.add_flag("--script-copies", script_copies,
               "Also measure a TorchScript copy of each zoo model (same weights and operations), "
               "to compare TorchScript with C++ modules");
  CLI11_PARSE(app, argc, argv);
  if (reproducible) {
    if (const fl::Status st = fl::BecomeReproducible(argv); !st.ok()) {
      std::fprintf(stderr, "error: %s\n", st.ToString().c_str());
      return 2;
    }
  }
  if (script_copies && !AddScriptCopies(&models)) return 1;

  auto train = fl::LoadMnistFolder(data_dir, fl::Split::kTrain);
  if (train.ok()) train->normalization = fl::MnistNormalization();
  if (!train.ok()) {
    std::fprintf(stderr, "error: %s\n", train.status().ToString().c_str());
    return 1;
  }
  const fl::TensorDataset all = fl::ToTensors(*train);
  torch::set_num_threads(threads);

  std::printf("fl-bench-train\n");
  std::printf("CPU:        %s (%u logical cores)\n", fl::bench::CpuModel().c_str(),
              std::thread::hardware_concurrency());
  std::printf("LibTorch:   %s, intra-op threads %d\n", TORCH_VERSION, torch::get_num_threads());
  std::printf("BLAS:       %s\n", LoadedBlas().c_str());
  std::printf("Kernels:    %s\n", reproducible ? fl::DescribeReproducibleSettings().c_str()
                                               : "as the libraries picked them");
#ifndef NDEBUG
  std::printf("WARNING: Assertions are enabled; benchmarks unnecessarily slow\n");
#endif
  std::printf("\n%-10s %8s %12s %14s %18s\n", "model", "batch", "samples", "samples/s",
              "round E=5,n=600 s");

  for (const auto& name : models) {
    if (!Measure(name, all, samples, threads)) return 1;
  }
  return 0;
}
