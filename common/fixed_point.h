// Exact aggregation: weighted deltas are summed as
// integers, so a sum does not depend on the order of its terms, on how they
// are grouped (relays), on the number of threads or on the CPU.
//
// The format, Q23.40:
//   term   a delta value v (a float) becomes q = round(v * 2^40), to nearest
//          with ties to even, on its own, before any sum: an int64 with
//          |v| < 2^23 (kFixedMaxAbs = 8,388,608), resolution 2^-40 (9.1e-13).
//          v * 2^40 is exact in a double (a power-of-two scale), so the one
//          rounding is that to an integer, the same on every CPU.
//   sum    S = sum_k w_k q_k in signed 128-bit integers, with the total weight
//          W = sum_k w_k (int64). With |q| < 2^63 and W < 2^63, |S| < 2^126:
//          no sum of in-range terms can overflow (AddWeighted refuses a value
//          out of range and a total weight over INT64_MAX).
//   mean   S / W / 2^40, in double: S converted (rounded once), divided by W
//          (rounded once), scaled by 2^-40 (exact): the same bits wherever it
//          is computed, within 2^-52 relative of the exact quotient.
// Rounding a value to 2^-40 is below a float's own rounding for |v| >= 2^-17
// (7.6e-6): there the term is the float's exact value. The error of a mean is
// at most 2^-41 per value (half a unit), whatever the number of terms, plus
// the mean's own rounding to double (2^-52 relative).
//
// A relay's partial aggregate goes up as its exact sum (S, W): its parent adds
// the integers, and a tree of relays ends where one server would.
//
// Encoding of a sum (codec "x", little-endian, as LevelDB's log_format.h):
//   header (24 bytes): magic 'X' (1) | width u8 (1) | fraction bits u8 = 40 (1)
//                      | reserved u8 = 0 (1) | reserved u32 = 0 (4)
//                      | weight u64 (8) | value count u64 (8)
//   data:   count x width bytes, each value two's complement, sign-extended
//           from `width` bytes (1..16; the encoder takes the fewest that hold
//           every value)
// Encoded size = 24 + count * width; the decoder checks it exactly, and that
// every |S_i| < W * 2^63 (the mean of each value within the format's range),
// so that the sums of up to INT64_MAX weight add without overflow.
//
// Free of LibTorch.
#ifndef FEDGE_COMMON_FIXED_POINT_H_
#define FEDGE_COMMON_FIXED_POINT_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace fl {

// Fraction bits of a term.
constexpr int kFixedFractionBits = 40;
// The largest magnitude a term's value may have (exclusive): 2^23.
constexpr double kFixedMaxAbs = 8388608.0;
// Encoded sums: header bytes and magic.
constexpr size_t kFixedSumHeaderBytes = 24;
constexpr uint8_t kFixedSumMagic = 'X';

using FixedInt = __int128;

// q = round(v * 2^40), ties to even. Requires |v| < kFixedMaxAbs (finite).
int64_t ToFixed(float v);

// round(v * 2^40) of a double, ties to even. Requires |v| < kFixedMaxAbs.
int64_t DoubleToFixed(double v);

// `x`, a number of units (|x| < 2^126), rounded to the nearest integer, ties
// to even (a scaled sum: a capped relay's, a clipped private partial's).
FixedInt RoundFixed(double x);

// x as the nearest double (one instruction when it fits 64 bits).
inline double FixedToDouble(FixedInt x) {
  const auto narrow = static_cast<int64_t>(x);
  return narrow == x ? static_cast<double>(narrow) : static_cast<double>(x);
}

// S / W / 2^40 in double (W > 0): double(S) / double(W), then scaled by
// 2^-40; within 2^-52 relative of the exact value.
double FixedMean(FixedInt sum, int64_t weight);

// A weighted sum of deltas in fixed point, and its total weight.
struct FixedSum {
  int64_t weight{0};
  std::vector<FixedInt> values;
};

// OK when each of `n` values is finite and within +-kFixedMaxAbs; otherwise
// InvalidArgument naming the first that is not.
Status CheckFixedRange(const float* v, size_t n);
inline Status CheckFixedRange(const std::vector<float>& v) {
  return CheckFixedRange(v.data(), v.size());
}

// Adds weight * round(v * 2^40) of each of `n` values to `sum` (sized to `n`
// when empty). InvalidArgument, and nothing added, when `weight` <= 0, the
// total weight would exceed INT64_MAX, the sizes differ, or a value is not
// finite or not within +-kFixedMaxAbs.
Status AddWeighted(FixedSum* sum, int64_t weight, const float* v, size_t n);

// Adds `part` (a relay's partial sum) to `sum` (sized when empty).
// InvalidArgument, and nothing added, on a size mismatch or when the total
// weight would exceed INT64_MAX. Cannot overflow for decoded parts (each
// |S_i| < W_i * 2^63, so the total is below 2^126).
Status AddSum(FixedSum* sum, const FixedSum& part);

// The mean of each value (FixedMean), as doubles.
std::vector<double> MeanOf(const FixedSum& sum);

// OK when |S_i| < W * 2^63 for every value: the mean of each is within the
// format's range. InvalidArgument naming the first value that is not.
Status CheckSumRange(const FixedSum& sum);

// The encoding (codec "x") and its exact size for `count` values of `width`
// bytes each.
size_t FixedSumEncodedSize(size_t count, int width);
std::string EncodeFixedSum(const FixedSum& sum);

// Decodes `data` into exactly `expected_count` values. Corruption when the
// header is malformed (magic, width outside 1..16, fraction bits other than
// 40, reserved bytes not 0, weight 0 or above INT64_MAX), the count differs
// from `expected_count`, the size differs from FixedSumEncodedSize, or a value
// is out of range (CheckSumRange).
Status DecodeFixedSum(std::string_view data, size_t expected_count, FixedSum* out);

// True when `data` starts like an encoded sum (its first byte is the magic);
// the quantized codec's magic ('Q') differs.
bool LooksLikeFixedSum(std::string_view data);

}  // namespace fl

#endif  // FEDGE_COMMON_FIXED_POINT_H_
