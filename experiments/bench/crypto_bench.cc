// Crypto speed on one core (Google Benchmark): Ed25519 sign and verify of an
// envelope (the 136 bytes before its signature slot), and SHA-256 throughput at payload sizes of a
// sparse 8-bit CNN update (169,525 B) and a dense fp32 one (6,653,504 B).
#include <benchmark/benchmark.h>

#include <string>

#include "common/wire/envelope.h"
#include "crypto/ed25519.h"
#include "crypto/sha256.h"

namespace {

constexpr size_t kSignedEnvelopeBytes = fl::wire::kEnvelopeBytes - fl::wire::kSignatureBytes;

void BM_Ed25519Sign(benchmark::State& state) {
  auto key = fl::SigningKey::Generate();
  const std::string msg(kSignedEnvelopeBytes, 'e');
  for (auto _ : state) {
    auto sig = key->Sign(msg.data(), msg.size());
    benchmark::DoNotOptimize(sig.data());
  }
  state.SetItemsProcessed(state.iterations());
}

void BM_Ed25519Verify(benchmark::State& state) {
  auto key = fl::SigningKey::Generate();
  const std::string msg(kSignedEnvelopeBytes, 'e');
  const auto sig = key->Sign(msg.data(), msg.size());
  for (auto _ : state) {
    fl::Status st = fl::Ed25519Verify(key->public_key(), msg.data(), msg.size(), sig);
    if (!st.ok()) state.SkipWithError("verify failed");
  }
  state.SetItemsProcessed(state.iterations());
}

// The same with the key prepared once (what the server does per enrolled device).
void BM_Ed25519VerifyPreparedKey(benchmark::State& state) {
  auto key = fl::SigningKey::Generate();
  auto verifier = fl::Ed25519Verifier::Create(key->public_key());
  const std::string msg(kSignedEnvelopeBytes, 'e');
  const auto sig = key->Sign(msg.data(), msg.size());
  for (auto _ : state) {
    fl::Status st = verifier->Verify(msg.data(), msg.size(), sig);
    if (!st.ok()) state.SkipWithError("verify failed");
  }
  state.SetItemsProcessed(state.iterations());
}

void BM_Sha256(benchmark::State& state) {
  const std::string data(static_cast<size_t>(state.range(0)), 'x');
  for (auto _ : state) {
    auto d = fl::Sha256(data);
    benchmark::DoNotOptimize(d.data());
  }
  state.SetBytesProcessed(state.iterations() * state.range(0));
}

}  // namespace

BENCHMARK(BM_Ed25519Sign);
BENCHMARK(BM_Ed25519Verify);
BENCHMARK(BM_Ed25519VerifyPreparedKey);
BENCHMARK(BM_Sha256)->Arg(169525)->Arg(6653504);

BENCHMARK_MAIN();
