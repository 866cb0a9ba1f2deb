#include "common/fixed_point.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <utility>

#include "common/wire/reader.h"

namespace fl {
namespace {

constexpr double kScale = 1099511627776.0;  // 2^40
constexpr int64_t kMaxWeight = std::numeric_limits<int64_t>::max();

// x rounded to an integer, to nearest with ties to even, as a double. Below
// 2^52 in magnitude, adding and taking away 2^52 of x's sign rounds it in
// the default rounding mode (the sum lies where a double's unit is 1); from
// 2^52 on, every double is an integer already.
inline double RoundToIntegral(double x) {
  constexpr double kTwo52 = 4503599627370496.0;
  if (std::fabs(x) < kTwo52) {
    const double m = std::copysign(kTwo52, x);
    x = (x + m) - m;
  }
  return x;
}

// round(x) for an x that is v * 2^40 of a value with |v| < 2^23 (|x| < 2^63).
inline int64_t RoundToInt(double x) { return static_cast<int64_t>(RoundToIntegral(x)); }

inline bool InRange(float v) { return std::fabs(v) < static_cast<float>(kFixedMaxAbs); }

// |v|'s bits: the float's bits without the sign.
inline int32_t AbsBits(float f) {
  int32_t b;
  std::memcpy(&b, &f, 4);
  return b & 0x7fffffff;
}

// W * 2^63, the bound on |S_i| (W < 2^63, so it is below 2^126).
FixedInt SumBound(int64_t weight) { return static_cast<FixedInt>(weight) << 63; }

// Bytes of two's complement that hold x.
int WidthOf(FixedInt x) {
  int w = 1;
  while (w < 16) {
    const FixedInt lo = -(static_cast<FixedInt>(1) << (8 * w - 1));
    const FixedInt hi = (static_cast<FixedInt>(1) << (8 * w - 1)) - 1;
    if (x >= lo && x <= hi) break;
    ++w;
  }
  return w;
}

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "the exact-sum decoder loads little-endian bytes as they are");

// Decodes `count` values of W bytes each (little-endian two's complement,
// sign-extended). W is a constant here, so the loads are plain moves.
template <int W>
void DecodeWidth(const char* p, size_t count, FixedInt* out) {
  for (size_t i = 0; i < count; ++i, p += W) {
    if constexpr (W <= 8) {
      uint64_t u = 0;
      std::memcpy(&u, p, W);  // (little-endian machine: the low bytes)
      constexpr int shift = 64 - 8 * W;
      out[i] = static_cast<int64_t>(u << shift) >> shift;
    } else {
      uint64_t lo = 0, hi = 0;
      std::memcpy(&lo, p, 8);
      std::memcpy(&hi, p + 8, W - 8);
      constexpr int shift = 128 - 8 * W;
      const auto hi_signed = static_cast<int64_t>(hi << shift) >> shift;
      out[i] = static_cast<FixedInt>(
          (static_cast<unsigned __int128>(static_cast<uint64_t>(hi_signed)) << 64) | lo);
    }
  }
}

template <int... W>
void DecodeValuesOf(int width, const char* p, size_t count, FixedInt* out,
                    std::integer_sequence<int, W...>) {
  ((width == W + 1 ? DecodeWidth<W + 1>(p, count, out) : void()), ...);
}

void DecodeValues(int width, const char* p, size_t count, FixedInt* out) {
  DecodeValuesOf(width, p, count, out, std::make_integer_sequence<int, 16>());
}

}  // namespace

int64_t ToFixed(float v) { return RoundToInt(static_cast<double>(v) * kScale); }

int64_t DoubleToFixed(double v) { return RoundToInt(v * kScale); }

FixedInt RoundFixed(double x) { return static_cast<FixedInt>(RoundToIntegral(x)); }

double FixedMean(FixedInt sum, int64_t weight) {
  // A sum within 64 bits converts with one instruction (both conversions
  // round to the nearest double, so the result is the same); the scale by
  // 2^-40 is exact (the quotient of a nonzero sum is at least 2^-63).
  return FixedToDouble(sum) / static_cast<double>(weight) * 0x1p-40;
}

Status AddWeighted(FixedSum* sum, int64_t weight, const float* v, size_t n) {
  if (weight <= 0) {
    return Status::InvalidArgument("update weight " + std::to_string(weight) + " (must be > 0)");
  }
  if (!sum->values.empty() && sum->values.size() != n) {
    return Status::InvalidArgument("delta has " + std::to_string(n) + " values, the sum has " +
                                   std::to_string(sum->values.size()));
  }
  if (weight > kMaxWeight - sum->weight) {
    return Status::InvalidArgument("the total weight would exceed 2^63 - 1");
  }
  FL_RETURN_IF_ERROR(CheckFixedRange(v, n));
  constexpr int32_t kSmallBits = 0x45000000;  // 2^11
  if (sum->values.empty()) sum->values.assign(n, 0);
  FixedInt* s = sum->values.data();
  // In blocks: the terms first (vectorized for a block whose values are all
  // below 2^11, where v * 2^40 + 1.5 * 2^52 rounds to an integer whose low
  // bits are the term), then the 128-bit multiply-adds (64 x 64 bits).
  constexpr size_t kBlock = 256;
  int64_t q[kBlock];
  for (size_t b = 0; b < n; b += kBlock) {
    const size_t m = std::min(kBlock, n - b);
    const float* x = v + b;
    int32_t large = 0;
    for (size_t i = 0; i < m; ++i) large |= AbsBits(x[i]) >= kSmallBits;
    if (!large) {
      constexpr double kMagic = 6755399441055744.0;  // 1.5 * 2^52
      int64_t magic_bits;
      std::memcpy(&magic_bits, &kMagic, 8);
      for (size_t i = 0; i < m; ++i) {
        const double y = static_cast<double>(x[i]) * kScale + kMagic;
        int64_t bits;
        std::memcpy(&bits, &y, 8);
        q[i] = bits - magic_bits;
      }
    } else {
      for (size_t i = 0; i < m; ++i) q[i] = ToFixed(x[i]);
    }
    for (size_t i = 0; i < m; ++i) s[b + i] += static_cast<FixedInt>(weight) * q[i];
  }
  sum->weight += weight;
  return Status::OK();
}

Status CheckFixedRange(const float* v, size_t n) {
  // On the floats' bits, which the compiler vectorizes: |v| is the bits
  // without the sign, and an integer compare orders finite floats (infinity
  // and NaN, exponent all ones, above every finite one).
  constexpr int32_t kRangeBits = 0x4b000000;  // 2^23
  int32_t bad = 0;
  for (size_t i = 0; i < n; ++i) bad |= AbsBits(v[i]) >= kRangeBits;
  if (!bad) return Status::OK();
  for (size_t i = 0; i < n; ++i) {
    if (!InRange(v[i])) {
      return Status::InvalidArgument("delta value " + std::to_string(i) + " is " +
                                     std::to_string(v[i]) +
                                     ", outside the fixed-point range +-2^23 (8388608)");
    }
  }
  return Status::OK();
}

Status AddSum(FixedSum* sum, const FixedSum& part) {
  if (!sum->values.empty() && sum->values.size() != part.values.size()) {
    return Status::InvalidArgument("a partial sum of " + std::to_string(part.values.size()) +
                                   " values, the sum has " + std::to_string(sum->values.size()));
  }
  if (part.weight <= 0 || part.weight > kMaxWeight - sum->weight) {
    return Status::InvalidArgument("a partial sum of weight " + std::to_string(part.weight) +
                                   " (must be > 0, the total at most 2^63 - 1)");
  }
  if (sum->values.empty()) sum->values.assign(part.values.size(), 0);
  for (size_t i = 0; i < part.values.size(); ++i) sum->values[i] += part.values[i];
  sum->weight += part.weight;
  return Status::OK();
}

std::vector<double> MeanOf(const FixedSum& sum) {
  std::vector<double> out(sum.values.size());
  for (size_t i = 0; i < out.size(); ++i) out[i] = FixedMean(sum.values[i], sum.weight);
  return out;
}

Status CheckSumRange(const FixedSum& sum) {
  if (sum.weight <= 0) return Status::InvalidArgument("a sum of weight 0");
  const FixedInt bound = SumBound(sum.weight);
  for (size_t i = 0; i < sum.values.size(); ++i) {
    // (Compared from both sides: negating the most negative value would
    // overflow.)
    if (!(sum.values[i] > -bound && sum.values[i] < bound)) {
      return Status::InvalidArgument("value " + std::to_string(i) +
                                     " of the sum is beyond its weight times 2^63 (a mean "
                                     "outside the fixed-point range)");
    }
  }
  return Status::OK();
}

size_t FixedSumEncodedSize(size_t count, int width) {
  return kFixedSumHeaderBytes + count * static_cast<size_t>(width);
}

std::string EncodeFixedSum(const FixedSum& sum) {
  int width = 1;
  for (FixedInt x : sum.values) width = std::max(width, WidthOf(x));
  wire::Writer w;
  w.PutU8(kFixedSumMagic);
  w.PutU8(static_cast<uint8_t>(width));
  w.PutU8(static_cast<uint8_t>(kFixedFractionBits));
  w.PutU8(0);
  w.PutU32(0);
  w.PutU64(static_cast<uint64_t>(sum.weight));
  w.PutU64(sum.values.size());
  std::string out = w.Release();
  out.resize(FixedSumEncodedSize(sum.values.size(), width));
  char* p = out.data() + kFixedSumHeaderBytes;
  for (FixedInt x : sum.values) {
    // Little-endian two's complement: the low `width` bytes of the value.
    const auto u = static_cast<unsigned __int128>(x);
    const auto lo = static_cast<uint64_t>(u), hi = static_cast<uint64_t>(u >> 64);
    uint8_t bytes[16];
    for (int b = 0; b < 8; ++b) {
      bytes[b] = static_cast<uint8_t>(lo >> (8 * b));
      bytes[8 + b] = static_cast<uint8_t>(hi >> (8 * b));
    }
    std::memcpy(p, bytes, static_cast<size_t>(width));
    p += width;
  }
  return out;
}

bool LooksLikeFixedSum(std::string_view data) {
  return !data.empty() && static_cast<uint8_t>(data[0]) == kFixedSumMagic;
}

Status DecodeFixedSum(std::string_view data, size_t expected_count, FixedSum* out) {
  wire::Reader r(data.data(), data.size());
  uint8_t magic = 0, width = 0, fraction = 0, reserved8 = 0;
  uint32_t reserved32 = 0;
  uint64_t weight = 0, count = 0;
  if (!r.GetU8(&magic) || !r.GetU8(&width) || !r.GetU8(&fraction) || !r.GetU8(&reserved8) ||
      !r.GetU32(&reserved32) || !r.GetU64(&weight) || !r.GetU64(&count)) {
    return Status::Corruption("exact sum: truncated header (" + std::to_string(data.size()) +
                              " bytes)");
  }
  if (magic != kFixedSumMagic) return Status::Corruption("exact sum: bad magic");
  if (width < 1 || width > 16) {
    return Status::Corruption("exact sum: width " + std::to_string(width) + " not in 1..16");
  }
  if (fraction != kFixedFractionBits) {
    return Status::Corruption("exact sum: " + std::to_string(fraction) +
                              " fraction bits, this build sums with " +
                              std::to_string(kFixedFractionBits));
  }
  if (reserved8 != 0 || reserved32 != 0) return Status::Corruption("exact sum: reserved bytes");
  if (weight == 0 || weight > static_cast<uint64_t>(kMaxWeight)) {
    return Status::Corruption("exact sum: weight " + std::to_string(weight) +
                              " not in 1..2^63 - 1");
  }
  if (count != expected_count) {
    return Status::Corruption("exact sum of " + std::to_string(count) + " values, expected " +
                              std::to_string(expected_count));
  }
  if (data.size() != FixedSumEncodedSize(expected_count, width)) {
    return Status::Corruption("exact sum: " + std::to_string(data.size()) + " bytes, expected " +
                              std::to_string(FixedSumEncodedSize(expected_count, width)));
  }
  FixedSum s;
  s.weight = static_cast<int64_t>(weight);
  s.values.resize(expected_count);
  const char* p = data.data() + kFixedSumHeaderBytes;
  DecodeValues(width, p, expected_count, s.values.data());
  // Below 8 bytes every |S_i| < 2^55 < W * 2^63: nothing to check.
  if (width >= 8) {
    if (Status st = CheckSumRange(s); !st.ok()) {
      return Status::Corruption("exact sum: " + st.message());
    }
  }
  *out = std::move(s);
  return Status::OK();
}

}  // namespace fl
