// Block-quantized delta codec ("q", the default of common/codec.h): values at
// 8, 4 or 2 bits with one fp32 scale per block, stochastic (unbiased) or
// nearest rounding. 32 bits means no quantization (raw fp32) and keeps the
// same header, so every encoded delta is self-describing.
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

#include "common/codec.h"
#include "common/status.h"

namespace fl {

constexpr size_t kQuantHeaderBytes = 24;
constexpr uint8_t kQuantMagic = 'Q';

// The codec's parameters (common/codec.h), 8 bits by default.
struct QuantOptions : CodecParams {
  QuantOptions(int bits_ = 8, uint32_t block_ = 256, bool stochastic_ = true, uint64_t seed_ = 1)
      : CodecParams{bits_, block_, stochastic_, seed_} {}
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

}  // namespace fl

#endif  // FEDGE_COMMON_QUANT_CODEC_H_
