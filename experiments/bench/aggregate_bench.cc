// fl-bench-aggregate: what each aggregation strategy costs at a round's end.
//
// For every strategy (server/aggregator.h), K deltas of the FedAvg CNN's kept
// values (1,663,370 dense, or 10% of them at 90% sparsity) are added and the
// step applied, as the server does from its round log. Google Benchmark
// reports time per round and updates/s (items_per_second). DP variants add the
// Gaussian noise and the accountant. Memory: the mean rules hold one 128-bit
// integer (exact sum) per kept value, the robust ones K floats per kept value, the adaptive
// optimizers two more floats.
//
//   fl-bench-aggregate [--benchmark_filter=...]
#include <benchmark/benchmark.h>

#include <string>
#include <vector>

#include "common/random.h"
#include "experiments/bench/bench_util.h"
#include "server/aggregator.h"

namespace fl {
namespace {

constexpr int64_t kDenseCnn = 1663370;  // parameters of mnist_cnn

ModelState Model(int64_t n) {
  ModelState s;
  s.architecture = "bench";
  s.tensors.push_back({"w", {n}, std::vector<float>(static_cast<size_t>(n), 0.01f), {}});
  return s;
}

void Run(benchmark::State& state, const std::string& name, bool dp) {
  const int k = static_cast<int>(state.range(0));
  const int64_t n = state.range(1);
  StrategyOptions o;
  o.name = name;
  o.krum_f = std::max(1, k / 10);
  PrivacyOptions p;
  if (dp) {
    p.noise_multiplier = 1.0;
    p.clip = 1.0;
  }
  auto agg = MakeAggregator(o, p, 0.1);
  if (!agg.ok()) {
    state.SkipWithError(agg.status().ToString().c_str());
    return;
  }
  // K distinct deltas, made once; each round adds copies (robust rules keep
  // what they are given).
  std::vector<std::vector<float>> deltas(static_cast<size_t>(k));
  Random rng(1);
  for (auto& d : deltas) {
    d.resize(static_cast<size_t>(n));
    for (float& x : d) x = static_cast<float>(1e-3 * rng.Normal());
  }
  ModelState model = Model(n);
  std::vector<float> buffer;
  uint64_t round = 0;
  for (auto _ : state) {
    (*agg)->Begin(static_cast<size_t>(n), {static_cast<double>(k), ++round});
    for (const auto& d : deltas) {
      state.PauseTiming();
      buffer = d;  // the server decodes each delta into a buffer like this
      state.ResumeTiming();
      Status st = (*agg)->Add(1, &buffer);
      if (!st.ok()) state.SkipWithError(st.ToString().c_str());
    }
    Status st = (*agg)->Finish(&model, 1e30f);
    if (!st.ok()) state.SkipWithError(st.ToString().c_str());
  }
  state.SetItemsProcessed(state.iterations() * k);
  state.SetLabel(bench::CpuModel());
}

void Args(benchmark::internal::Benchmark* b) {
  for (int k : {10, 100}) {
    for (int64_t n : {kDenseCnn / 10, kDenseCnn}) {
      if (k == 100 && n == kDenseCnn) continue;  // 665 MB of deltas: not a bench
      b->Args({k, n});
    }
  }
  b->ArgNames({"K", "kept"})->Unit(benchmark::kMillisecond);
}

#define STRATEGY_BENCH(name)                                    \
  void BM_##name(benchmark::State& s) { Run(s, #name, false); } \
  BENCHMARK(BM_##name)->Apply(Args)

STRATEGY_BENCH(fedavg);
STRATEGY_BENCH(fedavgm);
STRATEGY_BENCH(fedadam);
STRATEGY_BENCH(fedyogi);
STRATEGY_BENCH(median);
STRATEGY_BENCH(trimmed_mean);
STRATEGY_BENCH(krum);
STRATEGY_BENCH(multikrum);

void BM_fedavg_dp(benchmark::State& s) { Run(s, "fedavg", true); }
BENCHMARK(BM_fedavg_dp)->Apply(Args);

}  // namespace
}  // namespace fl

BENCHMARK_MAIN();
