// Block-quantized delta codec: values at 8, 4 or 2 bits with one fp32 scale per
// block, stochastic (unbiased) or nearest rounding. 32 bits means no
// quantization (raw fp32) and keeps the same header, so every encoded delta is
// self-describing.
//
// Layout (little-endian), as LevelDB's log_format.h:
//   header (24 bytes): magic 'Q' (1) | bits u8 (1) | flags u8 (1) | reserved u8 (1)
//                      | block u32 (4) | value count u64 (8) | block count u64 (8)
//   scales: block count x fp32        (absent when bits = 32)
//   data:   ceil(count * bits / 8) bytes, values packed little-endian within bytes
// Encoded size = 24 + 4 * blocks + ceil(count * bits / 8), blocks = ceil(count / block);
// the decoder checks the payload against it exactly, and the header against the
// value count the receiver expects.
//
// Quantization is symmetric per block: L = 2^(bits-1) - 1 levels each side
// (127, 7, 1), scale = max|v| / L, q = round(v / scale) in [-L, L], stored as q + L.
// Stochastic rounding uses floor(v / scale + u), u ~ U[0, 1) from a seeded
// generator, so E[decode(encode(v))] = v. Nearest rounding is within half a step
// (scale / 2) of v.
#ifndef FEDGE_COMMON_QUANT_CODEC_H_
#define FEDGE_COMMON_QUANT_CODEC_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace fl {

constexpr size_t kQuantHeaderBytes = 24;
constexpr uint8_t kQuantMagic = 'Q';

struct QuantOptions {
  // 32 (raw fp32), 8, 4 or 2.
  int bits{8};
  // Values per scale.
  uint32_t block{256};
  // Stochastic (unbiased) rounding; false = round to nearest.
  bool stochastic{true};
  // Seed of the rounding noise.
  uint64_t seed{1};
};

// Checks bits in {32, 8, 4, 2} and block >= 1.
Status ValidateQuantOptions(const QuantOptions& options);

// The exact encoded size for `count` values.
size_t QuantEncodedSize(size_t count, int bits, uint32_t block);

// Encodes `count` values. Requires ValidateQuantOptions(options).ok() and finite values.
std::string QuantEncode(const float* values, size_t count, const QuantOptions& options);

// Decodes `data` into exactly `expected_count` values (`out` is resized).
// Corruption when the header is malformed, the count differs from
// expected_count, the size differs from QuantEncodedSize, a scale is negative,
// not finite or above QuantMaxScale(bits), a stored level is out of range, or
// (32 bits) a value is not finite. Every decoded value is therefore finite:
// |value| <= levels * scale <= FLT_MAX.
Status QuantDecode(std::string_view data, size_t expected_count, std::vector<float>* out);

// The largest scale a block may carry at `bits`: FLT_MAX / levels, so that the
// top level times the scale is still a finite float.
float QuantMaxScale(int bits);

// What the header of an encoded delta says.
struct QuantHeader {
  int bits{0};
  uint32_t block{0};
  bool stochastic{false};
  uint64_t count{0};
};

// Reads just the header. Corruption when it is truncated, has a bad magic, or
// names bits or a block ValidateQuantOptions refuses.
Status QuantPeek(std::string_view data, QuantHeader* header);

// Error feedback (Seide et al. 2014; Karimireddy et al. 2019): a client keeps
// what quantization dropped and adds it to its next delta, so the error does
// not accumulate over rounds: the sum of what was sent equals the sum of the
// true deltas minus the current residual.
class ErrorFeedback final {
 public:
  // Encodes delta + residual and keeps (delta + residual) - decode(result) as the
  // new residual. A delta of a different length than the residual resets it.
  std::string Encode(const std::vector<float>& delta, const QuantOptions& options);

  const std::vector<float>& residual() const { return residual_; }
  void Reset() { residual_.clear(); }
  // Continues from a residual kept across a restart (fl-client --state-dir).
  void Restore(std::vector<float> residual) { residual_ = std::move(residual); }

 private:
  std::vector<float> residual_;
};

}  // namespace fl

#endif  // FEDGE_COMMON_QUANT_CODEC_H_
