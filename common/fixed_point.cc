#include "common/fixed_point.h"

#include <algorithm>
#include <cmath>
#include <limits>

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

// W * 2^63, the bound on |S_i| (W < 2^63, so it is below 2^126).
FixedInt SumBound(int64_t weight) { return static_cast<FixedInt>(weight) << 63; }

FixedInt Abs(FixedInt x) { return x < 0 ? -x : x; }

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

}  // namespace

int64_t ToFixed(float v) { return RoundToInt(static_cast<double>(v) * kScale); }

int64_t DoubleToFixed(double v) { return RoundToInt(v * kScale); }

FixedInt RoundFixed(double x) { return static_cast<FixedInt>(RoundToIntegral(x)); }

double FixedMean(FixedInt sum, int64_t weight) {
  return std::ldexp(static_cast<double>(sum) / static_cast<double>(weight), -kFixedFractionBits);
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
  for (size_t i = 0; i < n; ++i) {
    if (!InRange(v[i])) {
      return Status::InvalidArgument("delta value " + std::to_string(i) + " is " +
                                     std::to_string(v[i]) +
                                     ", outside the fixed-point range +-2^23 (8388608)");
    }
  }
  if (sum->values.empty()) sum->values.assign(n, 0);
  FixedInt* s = sum->values.data();
  const FixedInt w = weight;
  for (size_t i = 0; i < n; ++i) s[i] += w * ToFixed(v[i]);
  sum->weight += weight;
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
    if (!(Abs(sum.values[i]) < bound)) {
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
    auto u = static_cast<unsigned __int128>(x);
    for (int b = 0; b < width; ++b) *p++ = static_cast<char>((u >> (8 * b)) & 0xff);
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
  const auto* p = reinterpret_cast<const uint8_t*>(data.data()) + kFixedSumHeaderBytes;
  const int shift = 128 - 8 * width;
  for (size_t i = 0; i < expected_count; ++i) {
    unsigned __int128 u = 0;
    for (int b = 0; b < width; ++b) u |= static_cast<unsigned __int128>(*p++) << (8 * b);
    // Sign-extend from `width` bytes.
    s.values[i] = static_cast<FixedInt>(u << shift) >> shift;
  }
  if (Status st = CheckSumRange(s); !st.ok()) return Status::Corruption("exact sum: " + st.message());
  *out = std::move(s);
  return Status::OK();
}

}  // namespace fl
