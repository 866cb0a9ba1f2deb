// Exact aggregation in fixed point (common/fixed_point.h): a sum is the same
// in any order and grouping, its terms are rounded once each, the encoding of
// a relay's partial sum round-trips and refuses what would overflow.
#include "common/fixed_point.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>

#include "common/random.h"
#include "tests/test_util.h"

namespace fl {
namespace {

constexpr double kUnit = 1.0 / 1099511627776.0;  // 2^-40

TEST(FixedPointTest, TermsAreRoundedOnceToNearestTiesToEven) {
  EXPECT_EQ(ToFixed(0.0f), 0);
  EXPECT_EQ(ToFixed(1.0f), int64_t{1} << 40);
  EXPECT_EQ(ToFixed(-0.5f), -(int64_t{1} << 39));
  // A float at or above 2^-17 is a whole number of units: exact.
  const float v = 0.1f;
  EXPECT_EQ(static_cast<double>(ToFixed(v)) * kUnit, static_cast<double>(v));
  // Half a unit rounds to even: 0.5 -> 0, 1.5 -> 2, -1.5 -> -2, 2.5 -> 2.
  EXPECT_EQ(ToFixed(static_cast<float>(0.5 * kUnit)), 0);
  EXPECT_EQ(ToFixed(static_cast<float>(1.5 * kUnit)), 2);
  EXPECT_EQ(ToFixed(static_cast<float>(-1.5 * kUnit)), -2);
  EXPECT_EQ(ToFixed(static_cast<float>(2.5 * kUnit)), 2);
  // Within half a unit elsewhere.
  const float tiny = 3.3e-12f;
  EXPECT_LE(std::fabs(static_cast<double>(ToFixed(tiny)) * kUnit - tiny), 0.5 * kUnit);
  // The range's ends: the largest float below 2^23.
  const float top = std::nextafter(8388608.0f, 0.0f);
  EXPECT_EQ(static_cast<double>(ToFixed(top)), static_cast<double>(top) * 1099511627776.0);
}

// The heart of it: a sum of float terms in any order, and in any grouping
// (two relays' partial sums added at a root), is the same integers, and so
// the same mean, bit for bit. A double sum of the same terms is not.
TEST(FixedPointTest, TheSumDoesNotDependOnOrderOrGrouping) {
  constexpr size_t kValues = 257, kDeltas = 16;
  Random rng(11);
  std::vector<std::vector<float>> deltas(kDeltas, std::vector<float>(kValues));
  std::vector<int64_t> weights(kDeltas);
  for (size_t k = 0; k < kDeltas; ++k) {
    weights[k] = 1 + static_cast<int64_t>(rng.Uniform(6000));
    // Magnitudes from 1e-9 to 1e1: the case where float sums lose bits.
    for (float& x : deltas[k]) {
      x = static_cast<float>(rng.Normal() * std::pow(10.0, -9.0 + 10.0 * rng.UniformDouble()));
    }
  }
  auto sum_in = [&](const std::vector<size_t>& order) {
    FixedSum s;
    for (size_t k : order) {
      EXPECT_FL_OK(AddWeighted(&s, weights[k], deltas[k].data(), kValues));
    }
    return s;
  };
  std::vector<size_t> order(kDeltas);
  std::iota(order.begin(), order.end(), 0);
  const FixedSum forward = sum_in(order);
  std::reverse(order.begin(), order.end());
  const FixedSum backward = sum_in(order);
  std::mt19937 shuffle(3);
  std::shuffle(order.begin(), order.end(), shuffle);
  const FixedSum shuffled = sum_in(order);
  EXPECT_TRUE(forward.values == backward.values);
  EXPECT_TRUE(forward.values == shuffled.values);
  EXPECT_EQ(forward.weight, shuffled.weight);
  // Two "relays" of 5 and 11 deltas, their sums through the encoding, added
  // at a "root" in the other order.
  FixedSum a, b, root;
  for (size_t k = 0; k < kDeltas; ++k) {
    ASSERT_FL_OK(AddWeighted(k < 5 ? &a : &b, weights[k], deltas[k].data(), kValues));
  }
  FixedSum a2, b2;
  ASSERT_FL_OK(DecodeFixedSum(EncodeFixedSum(a), kValues, &a2));
  ASSERT_FL_OK(DecodeFixedSum(EncodeFixedSum(b), kValues, &b2));
  ASSERT_FL_OK(AddSum(&root, b2));
  ASSERT_FL_OK(AddSum(&root, a2));
  EXPECT_TRUE(root.values == forward.values);
  EXPECT_EQ(root.weight, forward.weight);
  const std::vector<double> m1 = MeanOf(forward), m2 = MeanOf(root);
  EXPECT_EQ(std::memcmp(m1.data(), m2.data(), m1.size() * sizeof(double)), 0);
  // Each mean is within the terms' rounding of the exact one: every term is
  // off by at most half a unit, so the weighted mean by at most 2^-41 (plus
  // the double's own rounding of the quotient, 2^-53 relative).
  for (size_t i = 0; i < kValues; ++i) {
    long double exact = 0;
    for (size_t k = 0; k < kDeltas; ++k) {
      exact += static_cast<long double>(weights[k]) * deltas[k][i];
    }
    exact /= static_cast<long double>(forward.weight);
    const double bound = 0.5 * kUnit + std::fabs(m1[i]) * std::ldexp(1.0, -52);
    EXPECT_LE(std::fabs(static_cast<double>(exact - m1[i])), bound) << i;
  }
}

TEST(FixedPointTest, OutOfRangeValuesAndWeightsAreRefusedAndAddNothing) {
  FixedSum s;
  const std::vector<float> ok = {1.0f, -2.0f};
  ASSERT_FL_OK(AddWeighted(&s, 3, ok.data(), ok.size()));
  const FixedSum before = s;
  for (float bad : {8388608.0f, -8388608.0f, std::numeric_limits<float>::infinity(),
                    std::numeric_limits<float>::quiet_NaN()}) {
    const std::vector<float> v = {0.5f, bad};
    EXPECT_TRUE(AddWeighted(&s, 1, v.data(), v.size()).IsInvalidArgument()) << bad;
  }
  EXPECT_TRUE(AddWeighted(&s, 0, ok.data(), ok.size()).IsInvalidArgument());
  EXPECT_TRUE(AddWeighted(&s, std::numeric_limits<int64_t>::max(), ok.data(), ok.size())
                  .IsInvalidArgument());
  const std::vector<float> three = {1, 2, 3};
  EXPECT_TRUE(AddWeighted(&s, 1, three.data(), three.size()).IsInvalidArgument());
  EXPECT_TRUE(s.values == before.values);
  EXPECT_EQ(s.weight, before.weight);
}

// The worst case the format admits, added as often as the weight allows,
// does not overflow: W * (2^63 - 1) < 2^126.
TEST(FixedPointTest, TheLargestTermsAtTheLargestWeightDoNotOverflow) {
  const float top = std::nextafter(8388608.0f, 0.0f);
  const std::vector<float> v = {top, -top};
  FixedSum s;
  const int64_t half = std::numeric_limits<int64_t>::max() / 2;
  ASSERT_FL_OK(AddWeighted(&s, half, v.data(), v.size()));
  ASSERT_FL_OK(AddWeighted(&s, half, v.data(), v.size()));
  EXPECT_FL_OK(CheckSumRange(s));
  EXPECT_EQ(FixedMean(s.values[0], s.weight), static_cast<double>(top));
  EXPECT_EQ(FixedMean(s.values[1], s.weight), -static_cast<double>(top));
  FixedSum back;
  ASSERT_FL_OK(DecodeFixedSum(EncodeFixedSum(s), 2, &back));
  EXPECT_TRUE(back.values == s.values);
}

TEST(FixedPointTest, TheEncodingIsSizedExactlyAndTheDecoderRefusesEveryBadField) {
  FixedSum s;
  const std::vector<float> v = {0.25f, -1e-3f, 3.0f};
  ASSERT_FL_OK(AddWeighted(&s, 600, v.data(), v.size()));
  const std::string enc = EncodeFixedSum(s);
  const int width = static_cast<uint8_t>(enc[1]);
  EXPECT_EQ(enc.size(), FixedSumEncodedSize(3, width));
  // 600 * 3 * 2^40 = 1.98e15 needs 52 bits with the sign: 7 bytes.
  EXPECT_EQ(width, 7);
  EXPECT_TRUE(LooksLikeFixedSum(enc));
  FixedSum out;
  ASSERT_FL_OK(DecodeFixedSum(enc, 3, &out));
  EXPECT_TRUE(out.values == s.values);
  EXPECT_EQ(out.weight, 600);
  EXPECT_TRUE(DecodeFixedSum(enc, 4, &out).IsCorruption());                // count
  EXPECT_TRUE(DecodeFixedSum(enc.substr(0, 20), 3, &out).IsCorruption());  // header
  EXPECT_TRUE(DecodeFixedSum(enc + "x", 3, &out).IsCorruption());          // size
  auto flipped = [&](size_t at, uint8_t value) {
    std::string e = enc;
    e[at] = static_cast<char>(value);
    return e;
  };
  EXPECT_TRUE(DecodeFixedSum(flipped(0, 'Q'), 3, &out).IsCorruption());  // magic
  EXPECT_TRUE(DecodeFixedSum(flipped(1, 0), 3, &out).IsCorruption());    // width 0
  EXPECT_TRUE(DecodeFixedSum(flipped(1, 17), 3, &out).IsCorruption());   // width 17
  EXPECT_TRUE(DecodeFixedSum(flipped(2, 32), 3, &out).IsCorruption());   // fraction bits
  EXPECT_TRUE(DecodeFixedSum(flipped(3, 1), 3, &out).IsCorruption());    // reserved
  EXPECT_TRUE(DecodeFixedSum(flipped(5, 1), 3, &out).IsCorruption());    // reserved
  std::string zero_weight = enc;
  std::memset(zero_weight.data() + 8, 0, 8);
  EXPECT_TRUE(DecodeFixedSum(zero_weight, 3, &out).IsCorruption());
  std::string huge_weight = enc;
  std::memset(huge_weight.data() + 8, 0xff, 8);
  EXPECT_TRUE(DecodeFixedSum(huge_weight, 3, &out).IsCorruption());
  // A sum whose mean is out of range for its weight (weight 1, a value of
  // 2^63 units x 2^8): refused, it could overflow a root's total.
  std::string big(kFixedSumHeaderBytes + 16, '\0');
  big[0] = static_cast<char>(kFixedSumMagic);
  big[1] = 16;
  big[2] = 40;
  big[8] = 1;   // weight 1
  big[16] = 1;  // one value
  big[kFixedSumHeaderBytes + 8] = 0;
  big[kFixedSumHeaderBytes + 9] = 1;  // 2^72
  EXPECT_TRUE(DecodeFixedSum(big, 1, &out).IsCorruption());
  // The most negative 128-bit value (whose negation overflows) is out of
  // range for any weight, and refused.
  std::string most_negative(kFixedSumHeaderBytes + 16, '\0');
  most_negative[0] = static_cast<char>(kFixedSumMagic);
  most_negative[1] = 16;
  most_negative[2] = 40;
  most_negative[8] = 1;   // weight 1
  most_negative[16] = 1;  // one value
  most_negative[kFixedSumHeaderBytes + 15] = static_cast<char>(0x80);
  EXPECT_TRUE(DecodeFixedSum(most_negative, 1, &out).IsCorruption());
  // Negative values sign-extend from any width.
  FixedSum neg;
  const std::vector<float> n = {-1e-12f, -7.0f};
  ASSERT_FL_OK(AddWeighted(&neg, 1, n.data(), n.size()));
  ASSERT_FL_OK(DecodeFixedSum(EncodeFixedSum(neg), 2, &out));
  EXPECT_TRUE(out.values == neg.values);
}

// Every width from 1 to 16 bytes round-trips, at both ends of its range.
TEST(FixedPointTest, EveryWidthRoundTrips) {
  for (int width = 1; width <= 16; ++width) {
    // (At 16 bytes, the range check's bound: |S| < W * 2^63, W = 2^63 - 1.)
    const FixedInt bound =
        static_cast<FixedInt>(std::numeric_limits<int64_t>::max()) << 63;
    const FixedInt top =
        width == 16 ? bound - 1 : (static_cast<FixedInt>(1) << (8 * width - 1)) - 1;
    const FixedInt bottom = width == 16 ? -bound + 1 : -top - 1;
    FixedSum s;
    s.weight = std::numeric_limits<int64_t>::max();
    s.values = {top, bottom, 0, -1, 1};
    const std::string enc = EncodeFixedSum(s);
    ASSERT_EQ(static_cast<uint8_t>(enc[1]), width) << width;
    FixedSum back;
    ASSERT_FL_OK(DecodeFixedSum(enc, 5, &back));
    EXPECT_TRUE(back.values == s.values) << width;
  }
}

}  // namespace
}  // namespace fl
