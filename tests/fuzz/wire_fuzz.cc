// libFuzzer target for everything that parses bytes from the network or disk:
// the envelope, every payload type, the compact model in a TASK, quantized
// deltas, relays' exact sums and model files. Each must return an error, never crash, hang or
// read out of bounds (AddressSanitizer).
//
//   cmake -S . -B build-fuzz -DCMAKE_CXX_COMPILER=clang++ -DFL_BUILD_FUZZERS=ON
//   cmake --build build-fuzz --target fl-fuzz-wire
//   build-fuzz/bin/fl-fuzz-wire -max_total_time=60
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>

#include "common/fixed_point.h"
#include "common/quant_codec.h"
#include "common/wire/compact.h"
#include "common/wire/envelope.h"
#include "common/wire/serialize.h"
#include "crypto/message.h"
#include "crypto/model_file.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  // Envelope + payload as the server receives them.
  if (size >= fl::wire::kEnvelopeBytes) {
    const std::string env = bytes.substr(0, fl::wire::kEnvelopeBytes);
    const std::string payload = bytes.substr(fl::wire::kEnvelopeBytes);
    (void)fl::OpenMessage(env, payload, 1 << 20);
    (void)fl::wire::DecodeEnvelope(env);
  }
  (void)fl::wire::DecodeEnvelope(bytes);
  // Every payload type.
  fl::wire::Hello hello;
  (void)fl::wire::Decode(bytes, &hello);
  fl::wire::Task task;
  if (fl::wire::Decode(bytes, &task).ok()) {
    fl::ModelState model;
    (void)fl::wire::Expand(task.model, &model);
  }
  fl::wire::Update update;
  if (fl::wire::Decode(bytes, &update).ok()) {
    std::vector<float> values;
    (void)fl::QuantDecode(update.data, update.data.size() / 2, &values);
  }
  fl::wire::Reply reply;
  (void)fl::wire::Decode(bytes, &reply);
  fl::wire::Done done;
  (void)fl::wire::Decode(bytes, &done);
  fl::wire::Ready ready;
  (void)fl::wire::Decode(bytes, &ready);
  fl::ModelState state;
  (void)fl::wire::Decode(bytes, &state);
  // A quantized delta on its own, with the count its header claims (bounded).
  // Whatever it accepts decodes to finite values.
  fl::QuantHeader header;
  if (fl::QuantPeek(bytes, &header).ok() && header.count < (1u << 22)) {
    std::vector<float> values;
    if (fl::QuantDecode(bytes, header.count, &values).ok()) {
      for (float v : values) {
        if (!std::isfinite(v)) __builtin_trap();
      }
    }
  }
  // A relay's exact sum on its own, with the count its header claims
  // (bounded). Whatever it accepts is within range: its mean of every value
  // is within +-2^23, and adding it to another such sum cannot overflow.
  if (size >= fl::kFixedSumHeaderBytes) {
    uint64_t count = 0;
    for (int i = 0; i < 8; ++i) count |= static_cast<uint64_t>(data[16 + i]) << (8 * i);
    fl::FixedSum sum;
    if (count < (1u << 22) && fl::DecodeFixedSum(bytes, count, &sum).ok()) {
      if (!fl::CheckSumRange(sum).ok()) __builtin_trap();
      for (fl::FixedInt x : sum.values) {
        if (!(std::fabs(fl::FixedMean(x, sum.weight)) <= fl::kFixedMaxAbs)) __builtin_trap();
      }
      fl::FixedSum twice = sum;
      if (!fl::AddSum(&twice, sum).ok() && sum.weight <= INT64_MAX / 2) __builtin_trap();
    }
  }
  // A model file (the digest gate is checked first; the fuzzer also reaches the
  // parser through inputs that carry a matching digest only by luck, so the
  // parser's own checks are exercised by the unit tests as well).
  (void)fl::DecodeModelFile("fuzz.flm", bytes);
  return 0;
}
