// fl-bench-eval: central evaluation speed, the server's per-round cost.
//
// Evaluates each model of the zoo on the 10k MNIST test images on one
// intra-op thread, and prints the median of --repeats passes:
//   1. "before": the evaluation fedge shipped until 2026-11-28 (module
//      forward, batches of 1,000, float copy of the whole set, the C
//      library's default return of freed memory to the kernel), measured
//      first, before anything in this process changes the allocator;
//   2. fl::Evaluate at several batch sizes, on the float set and on the raw
//      bytes (the server's path), with the model's inference plan;
//   3. module forward at fl::Evaluate's batch size with the allocator tuned,
//      so the inference plan's own share shows.
// Results go in experiments/BENCHMARKS.md with the date and the CPU.
#include <sys/resource.h>
#include <torch/torch.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "common/clock.h"
#include "common/dataset.h"
#include "common/model_zoo.h"
#include "common/trainer.h"
#include "experiments/bench/bench_util.h"

namespace {

double PeakRssMiB() {
  struct rusage u;
  getrusage(RUSAGE_SELF, &u);
  return u.ru_maxrss / 1024.0;
}

// The evaluation loop as it was before the inference plan: kept here as the
// baseline this benchmark compares against.
double LegacyEvaluate(fl::Model& model, const fl::TensorDataset& data, int64_t batch) {
  torch::NoGradGuard no_grad;
  model.eval();
  int64_t correct = 0;
  for (int64_t begin = 0; begin < data.size(); begin += batch) {
    const int64_t end = std::min(begin + batch, data.size());
    auto logits = model.forward(data.images.slice(0, begin, end));
    correct += logits.argmax(1).eq(data.labels.slice(0, begin, end)).sum().item<int64_t>();
  }
  model.train();
  return static_cast<double>(correct) / data.size();
}

template <typename F>
double Median(int repeats, F&& f) {
  std::vector<double> t;
  for (int i = 0; i < repeats; ++i) {
    const double t0 = fl::NowSeconds();
    f();
    t.push_back(fl::NowSeconds() - t0);
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

// The three measurements, model by model: the old path first (before
// fl::Evaluate tunes the allocator), fl::Evaluate at each batch size, and the
// module's forward alone at fl::Evaluate's batch. False when one failed.
bool MeasureAll(const std::vector<fl::ModelPtr>& models, const std::vector<std::string>& names,
                const fl::Dataset& test, const fl::TensorDataset& tensors, int repeats) {
  // 1. The old path first, before fl::Evaluate tunes the allocator.
  std::printf("\n%-10s %-34s %8s %10s %9s\n", "model", "path", "batch", "seconds", "accuracy");
  for (size_t i = 0; i < models.size(); ++i) {
    LegacyEvaluate(*models[i], tensors, 1000);  // warm-up
    double acc = 0;
    const double s = Median(repeats, [&] { acc = LegacyEvaluate(*models[i], tensors, 1000); });
    std::printf("%-10s %-34s %8d %10.3f %8.2f%%\n", names[i].c_str(), "before (forward, float set)",
                1000, s, 100 * acc);
    std::fflush(stdout);
  }
  // 2. fl::Evaluate.
  for (size_t i = 0; i < models.size(); ++i) {
    for (int64_t batch : {50, 100, 200, 500, 1000}) {
      for (int raw = 0; raw < 2; ++raw) {
        double acc = 0;
        bool ok = true;
        auto run = [&] {
          auto r = raw ? fl::Evaluate(*models[i], test, batch)
                       : fl::Evaluate(*models[i], tensors, batch);
          ok = ok && r.ok();
          if (r.ok()) acc = r->accuracy;
        };
        run();  // warm-up
        const double s = Median(repeats, run);
        if (!ok) return false;
        std::printf("%-10s %-34s %8lld %10.3f %8.2f%%\n", names[i].c_str(),
                    raw ? "fl::Evaluate (raw bytes, server)" : "fl::Evaluate (float set)",
                    static_cast<long long>(batch), s, 100 * acc);
        std::fflush(stdout);
      }
    }
  }
  // 3. What the inference plan alone is worth: module forward at the same
  // batch size, with the allocator already tuned by the calls above.
  for (size_t i = 0; i < models.size(); ++i) {
    double acc = 0;
    const double s =
        Median(repeats, [&] { acc = LegacyEvaluate(*models[i], tensors, fl::kEvalBatch); });
    std::printf("%-10s %-34s %8lld %10.3f %8.2f%%\n", names[i].c_str(),
                "module forward (float set)", static_cast<long long>(fl::kEvalBatch), s, 100 * acc);
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  std::string data_dir = FL_DEFAULT_DATA_DIR;
  int repeats = 3;
  std::string only;
  CLI::App app{"fl-bench-eval: evaluation time of the 10k MNIST test images"};
  app.add_option("--data", data_dir, "Folder with MNIST-format IDX files")->capture_default_str();
  app.add_option("--repeats", repeats, "Passes per measurement (the median is printed)")
      ->capture_default_str()
      ->check(CLI::Range(1, 50));
  app.add_option("--model", only, "Only this model (default: every model of the zoo)");
  CLI11_PARSE(app, argc, argv);

  auto test = fl::LoadMnistFolder(data_dir, fl::Split::kTest);
  if (test.ok()) test->normalization = fl::MnistNormalization();
  if (!test.ok()) {
    std::fprintf(stderr, "error: %s\n", test.status().ToString().c_str());
    return 1;
  }
  const fl::TensorDataset tensors = fl::ToTensors(*test);
  torch::set_num_threads(1);
  std::printf("fl-bench-eval: %lld test images, one intra-op thread, median of %d\n",
              static_cast<long long>(test->count), repeats);
  std::printf("CPU:      %s\n", fl::bench::CpuModel().c_str());
  std::printf("LibTorch: %s, oneDNN %s\n", TORCH_VERSION, at::hasMKLDNN() ? "yes" : "no");
#ifndef NDEBUG
  std::printf("WARNING: assertions are enabled; benchmarks unnecessarily slow\n");
#endif

  std::vector<fl::ModelPtr> models;
  std::vector<std::string> names;
  for (const auto& info : fl::ListModels()) {
    if (!only.empty() && only != info.name) continue;
    auto m = fl::CreateModel(info.name, 1);
    if (!m.ok()) return 1;
    models.push_back(*m);
    names.push_back(info.name);
  }
  if (!MeasureAll(models, names, *test, tensors, repeats)) return 1;
  std::printf("\npeak RSS of this process: %.0f MiB\n", PeakRssMiB());
  return 0;
}
