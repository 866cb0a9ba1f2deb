// Codec speed (Google Benchmark): values encoded / decoded per second on one
// core. The argument is the value count: 166,337 is mnist_cnn's kept values at
// 90% sparsity, 1,663,370 its dense parameter count.
#include <benchmark/benchmark.h>

#include "common/quant_codec.h"
#include "common/random.h"

namespace {

std::vector<float> Values(size_t n) {
  fl::Random r(1);
  std::vector<float> v(n);
  for (auto& x : v) x = static_cast<float>(r.Normal() * 1e-2);
  return v;
}

void BM_Encode(benchmark::State& state, int bits, bool stochastic) {
  const auto v = Values(state.range(0));
  fl::QuantOptions o{bits, 256, stochastic, 1};
  for (auto _ : state) {
    std::string enc = fl::QuantEncode(v.data(), v.size(), o);
    benchmark::DoNotOptimize(enc.data());
    o.seed++;
  }
  state.SetItemsProcessed(state.iterations() * state.range(0));
  state.SetBytesProcessed(state.iterations() * fl::QuantEncodedSize(v.size(), bits, 256));
}

void BM_Decode(benchmark::State& state, int bits) {
  const auto v = Values(state.range(0));
  fl::QuantOptions o{bits, 256, true, 1};
  const std::string enc = fl::QuantEncode(v.data(), v.size(), o);
  std::vector<float> out;
  for (auto _ : state) {
    auto st = fl::QuantDecode(enc, v.size(), &out);
    benchmark::DoNotOptimize(out.data());
    if (!st.ok()) state.SkipWithError(st.ToString().c_str());
  }
  state.SetItemsProcessed(state.iterations() * state.range(0));
  state.SetBytesProcessed(state.iterations() * enc.size());
}

}  // namespace

BENCHMARK_CAPTURE(BM_Encode, q8_stochastic, 8, true)->Arg(166337)->Arg(1663370);
BENCHMARK_CAPTURE(BM_Encode, q8_nearest, 8, false)->Arg(166337);
BENCHMARK_CAPTURE(BM_Encode, q4_stochastic, 4, true)->Arg(166337);
BENCHMARK_CAPTURE(BM_Encode, q2_stochastic, 2, true)->Arg(166337);
BENCHMARK_CAPTURE(BM_Encode, fp32, 32, false)->Arg(166337);
BENCHMARK_CAPTURE(BM_Decode, q8, 8)->Arg(166337)->Arg(1663370);
BENCHMARK_CAPTURE(BM_Decode, q4, 4)->Arg(166337);
BENCHMARK_CAPTURE(BM_Decode, q2, 2)->Arg(166337);
BENCHMARK_CAPTURE(BM_Decode, fp32, 32)->Arg(166337);

BENCHMARK_MAIN();
