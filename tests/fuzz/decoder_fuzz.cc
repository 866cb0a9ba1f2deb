// One libFuzzer target per decoder of bytes from the network or disk, chosen
// at compile time (FL_FUZZ_<NAME>, see tests/fuzz/CMakeLists.txt), each with a
// seed corpus of valid encodings (fl-fuzz-seeds). Every decoder must return an
// error, never crash, hang, or read or allocate out of bounds
// (AddressSanitizer; libFuzzer's -rss_limit_mb catches an allocation that
// grows with a claimed count instead of the bytes received).
//
//   bash tests/fuzz/campaign.sh 360     # every target 6 minutes
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "common/quant_codec.h"
#include "common/wire/compact.h"
#include "common/wire/envelope.h"
#include "common/wire/serialize.h"
#include "crypto/message.h"
#include "crypto/model_file.h"
#include "server/aggregator.h"
#include "server/checkpoint.h"
#include "server/wal.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
#if defined(FL_FUZZ_ENVELOPE)
  // Envelope + payload as a receiver checks them.
  (void)fl::wire::DecodeEnvelope(bytes);
  if (size >= fl::wire::kEnvelopeBytes) {
    (void)fl::OpenMessage(bytes.substr(0, fl::wire::kEnvelopeBytes),
                          bytes.substr(fl::wire::kEnvelopeBytes), 1 << 20);
  }
#elif defined(FL_FUZZ_HELLO)
  fl::wire::Hello m;
  (void)fl::wire::Decode(bytes, &m);
#elif defined(FL_FUZZ_TASK)
  fl::wire::Task m;
  if (fl::wire::Decode(bytes, &m).ok()) {
    fl::ModelState model;
    (void)fl::wire::Expand(m.model, &model);
  }
#elif defined(FL_FUZZ_UPDATE)
  fl::wire::Update m;
  if (fl::wire::Decode(bytes, &m).ok()) {
    fl::QuantHeader h;
    if (fl::QuantPeek(m.data, &h).ok() && h.count < (1u << 22)) {
      std::vector<float> values;
      (void)fl::QuantDecode(m.data, h.count, &values);
    }
  }
#elif defined(FL_FUZZ_READY)
  fl::wire::Ready ready;
  (void)fl::wire::Decode(bytes, &ready);
#elif defined(FL_FUZZ_REPLY)
  // The server's small payloads: ACK/REJECT and DONE.
  fl::wire::Reply reply;
  (void)fl::wire::Decode(bytes, &reply);
  fl::wire::Done done;
  (void)fl::wire::Decode(bytes, &done);
#elif defined(FL_FUZZ_QUANT)
  // Whatever the quantized codec accepts decodes to finite values.
  fl::QuantHeader h;
  if (fl::QuantPeek(bytes, &h).ok() && h.count < (1u << 22)) {
    std::vector<float> values;
    if (fl::QuantDecode(bytes, h.count, &values).ok()) {
      for (float v : values) {
        if (!std::isfinite(v)) __builtin_trap();
      }
    }
  }
#elif defined(FL_FUZZ_MODEL_FILE)
  (void)fl::DecodeModelFile("fuzz.flm", bytes);
#elif defined(FL_FUZZ_CHECKPOINT)
  auto c = fl::DecodeCheckpoint("fuzz.fl", bytes);
  if (c.ok()) {
    // What it accepts holds only finite values.
    for (const auto& t : c->model.tensors) {
      for (float v : t.values) {
        if (!std::isfinite(v)) __builtin_trap();
      }
    }
  }
#elif defined(FL_FUZZ_WAL)
  // Unkeyed, and keyed with the key of the seed corpus's keyed log.
  (void)fl::ParseWal(bytes, std::nullopt);
  fl::WalKey key = std::array<uint8_t, 32>{};
  key->fill(0x42);
  (void)fl::ParseWal(bytes, key);
#elif defined(FL_FUZZ_STRATEGY_STATE)
  // A checkpoint's strategy state (momentum, moments, the privacy accountant),
  // as each kind of aggregator reads it back for a model of 4 values.
  static const auto aggregators = [] {
    std::vector<std::unique_ptr<fl::Aggregator> > all;
    fl::PrivacyOptions dp;
    dp.noise_multiplier = 1;
    for (const char* name : {"fedavg", "fedavgm", "fedadam", "fedyogi", "median"}) {
      fl::StrategyOptions o;
      o.name = name;
      all.push_back(std::move(fl::MakeAggregator(o)).value());
      if (std::string(name) != "median")
        all.push_back(std::move(fl::MakeAggregator(o, dp)).value());
    }
    return all;
  }();
  for (const auto& a : aggregators) {
    if (a->LoadState(bytes, 4).ok()) {
      // What it accepts steps to a finite model, or refuses the step.
      fl::ModelState m;
      m.tensors.push_back({"w", {4}, {0, 0, 0, 0}, {}});
      a->Begin(4, {1.0, 1});
      std::vector<float> d = {1, -1, 0.5f, 0};
      (void)a->Add(1, &d);
      if (a->Finish(&m, 1e30f).ok()) {
        for (float v : m.tensors[0].values) {
          if (!std::isfinite(v)) __builtin_trap();
        }
      }
    }
  }
#else
#error "define one FL_FUZZ_<NAME>"
#endif
  return 0;
}
