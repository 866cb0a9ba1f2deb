#include "common/quant_codec.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>

#include "common/random.h"
#include "tests/test_util.h"

namespace fl {
namespace {

std::vector<float> Gaussian(size_t n, uint64_t seed, float sigma = 1e-2f) {
  Random r(seed);
  std::vector<float> v(n);
  for (auto& x : v) x = static_cast<float>(r.Normal()) * sigma;
  return v;
}

float BlockScale(const std::vector<float>& v, size_t begin, size_t n, int bits) {
  float m = 0;
  for (size_t i = begin; i < begin + n; ++i) m = std::max(m, std::fabs(v[i]));
  return m / ((1 << (bits - 1)) - 1);
}

class QuantCodecTest : public ::testing::TestWithParam<int> {};

TEST_P(QuantCodecTest, SizeMatchesFormulaExactly) {
  const int bits = GetParam();
  for (size_t count :
       {size_t{0}, size_t{1}, size_t{7}, size_t{255}, size_t{256}, size_t{1000}, size_t{166337}}) {
    for (uint32_t block : {1u, 64u, 256u, 1000u}) {
      QuantOptions o{bits, block, true, 3};
      auto v = Gaussian(count, count + block);
      const std::string enc = QuantEncode(v.data(), v.size(), o);
      const size_t blocks = bits == 32 ? 0 : (count + block - 1) / block;
      const size_t expect = 24 + 4 * blocks + (bits == 32 ? 4 * count : (count * bits + 7) / 8);
      ASSERT_EQ(enc.size(), expect) << "count " << count << " block " << block;
      ASSERT_EQ(QuantEncodedSize(count, bits, block), expect);
      std::vector<float> out;
      ASSERT_FL_OK(QuantDecode(enc, count, &out));
    }
  }
}

TEST_P(QuantCodecTest, NearestWithinHalfAStep) {
  const int bits = GetParam();
  const uint32_t block = 128;
  auto v = Gaussian(10000, 5);
  QuantOptions o{bits, block, false, 1};
  std::vector<float> out;
  ASSERT_FL_OK(QuantDecode(QuantEncode(v.data(), v.size(), o), v.size(), &out));
  if (bits == 32) {
    EXPECT_EQ(out, v);  // copied as they are
    return;
  }
  // The worst case, in levels (L a side, scale s = fl(M / L) of the block's
  // largest |value| M, inv = fl(1 / s)): the encoder's y = fl(fl(fl(v inv) +
  // L) + 0.5) is within (L + L + 2L + 2L + 1) 2^-24 = (6L + 1) 2^-24 of
  // v / s + L + 0.5 (inv, the product, the two sums), so the level q =
  // floor(y) is within 0.5 + (6L + 1) 2^-24 of v / s + L; decoding fl((q - L)
  // s) adds L 2^-24. In values: |out - v| <= s / 2 (1 + (7L + 1) 2^-23), which
  // is 1.06e-4 relative for 8 bits. Compared in double, where the difference
  // and the bound are exact.
  const int levels = (1 << (bits - 1)) - 1;
  for (size_t b = 0; b * block < v.size(); ++b) {
    const size_t n = std::min<size_t>(block, v.size() - b * block);
    const float half = BlockScale(v, b * block, n, bits) / 2;
    const double bound = half * (1 + (7 * levels + 1) * 0x1p-23);
    for (size_t i = b * block; i < b * block + n; ++i) {
      ASSERT_LE(std::fabs(static_cast<double>(out[i]) - v[i]), bound) << "value " << i;
    }
  }
}

TEST_P(QuantCodecTest, StochasticRoundingIsUnbiased) {
  const int bits = GetParam();
  const size_t n = 512;
  const uint32_t block = 64;
  auto v = Gaussian(n, 9);
  if (bits == 32) {
    // No quantization: every encoding decodes to exactly the input.
    std::vector<float> out;
    ASSERT_FL_OK(QuantDecode(QuantEncode(v.data(), n, QuantOptions{32, block, true, 7}), n, &out));
    EXPECT_EQ(out, v);
    return;
  }
  std::vector<double> mean(n, 0.0);
  const int trials = 4000;
  for (int t = 0; t < trials; ++t) {
    QuantOptions o{bits, block, true, static_cast<uint64_t>(t) + 100};
    std::vector<float> out;
    ASSERT_FL_OK(QuantDecode(QuantEncode(v.data(), n, o), n, &out));
    for (size_t i = 0; i < n; ++i) mean[i] += out[i] / trials;
  }
  // Per value, the error of the mean shrinks as step / sqrt(trials); its
  // average over values is the bias, which must be far below one step.
  double bias = 0, worst = 0, step_sum = 0;
  for (size_t i = 0; i < n; ++i) {
    const double step = BlockScale(v, (i / block) * block, block, bits);
    bias += (mean[i] - v[i]);
    worst = std::max(worst, std::fabs(mean[i] - v[i]) / step);
    step_sum += step;
  }
  const double mean_step = step_sum / n;
  // The bias is 0 in expectation, with a standard error of about 0.29 step /
  // sqrt(4000 * 512) = 2e-4 step: the bound is ~50 standard errors. The noise
  // is seeded integer xorshift, the same on every CPU.
  EXPECT_LT(std::fabs(bias / n), 0.01 * mean_step) << "bits " << bits;
  // One sample's error is at most one step; 4000 trials: sd <= 0.5/63 step,
  // so 0.06 is 7.6 sd for each of the 512 values.
  EXPECT_LT(worst, 0.06) << "bits " << bits;
}

INSTANTIATE_TEST_SUITE_P(Bits, QuantCodecTest, ::testing::Values(32, 8, 4, 2));

TEST(QuantCodecTest, RejectsMalformed) {
  auto v = Gaussian(1000, 2);
  QuantOptions o{8, 100, true, 1};
  const std::string good = QuantEncode(v.data(), v.size(), o);
  std::vector<float> out;
  ASSERT_FL_OK(QuantDecode(good, 1000, &out));
  // Every truncation and one byte of padding.
  for (size_t len = 0; len < good.size(); len += (len < 64 ? 1 : 97)) {
    ASSERT_FALSE(QuantDecode(good.substr(0, len), 1000, &out).ok()) << len;
  }
  EXPECT_TRUE(QuantDecode(good + "x", 1000, &out).IsCorruption());
  // Mismatched count (the mask on the server has a different kept count).
  EXPECT_NE(QuantDecode(good, 999, &out).message().find("expected 999"), std::string::npos);
  std::string bad = good;
  bad[0] = 'X';
  EXPECT_TRUE(QuantDecode(bad, 1000, &out).IsCorruption());
  bad = good;
  bad[1] = 3;  // 3 bits
  EXPECT_TRUE(QuantDecode(bad, 1000, &out).IsCorruption());
  bad = good;
  bad[16] = 11;  // block count
  EXPECT_NE(QuantDecode(bad, 1000, &out).message().find("blocks"), std::string::npos);
  bad = good;
  const float nan = std::nanf("");
  std::memcpy(&bad[24], &nan, 4);
  EXPECT_NE(QuantDecode(bad, 1000, &out).message().find("scale"), std::string::npos);
  bad = good;
  bad[24 + 4 * 10] = static_cast<char>(255);
  EXPECT_NE(QuantDecode(bad, 1000, &out).message().find("level 255"), std::string::npos);
  // 2-bit: level 3 is out of range.
  QuantOptions o2{2, 100, true, 1};
  std::string two = QuantEncode(v.data(), v.size(), o2);
  two[24 + 4 * 10] = static_cast<char>(0xff);
  EXPECT_NE(QuantDecode(two, 1000, &out).message().find("level 3"), std::string::npos);
}

// Every decoded value is finite: a scale is at most QuantMaxScale(bits), so the
// top level times it is at most FLT_MAX (a scale near FLT_MAX at level 254 used
// to decode to +Inf and poison the average).
TEST(QuantCodecTest, DecodedValuesAreFiniteByConstruction) {
  for (int bits : {8, 4, 2}) {
    SCOPED_TRACE(bits);
    std::vector<float> zeros(300, 0.0f);
    QuantOptions o{bits, 100, true, 1};
    std::string d = QuantEncode(zeros.data(), zeros.size(), o);
    // Every level at the top.
    const size_t data_at = kQuantHeaderBytes + 4 * 3;
    for (size_t i = data_at; i < d.size(); ++i) {
      d[i] = static_cast<char>(bits == 8 ? 254 : bits == 4 ? 0xEE : 0xAA);
    }
    std::vector<float> out;
    for (float scale : {QuantMaxScale(bits), std::nextafter(QuantMaxScale(bits), INFINITY),
                        std::numeric_limits<float>::max(), INFINITY}) {
      std::memcpy(&d[kQuantHeaderBytes + 4], &scale, 4);  // block 1
      const Status st = QuantDecode(d, 300, &out);
      if (scale <= QuantMaxScale(bits)) {
        ASSERT_FL_OK(st);
        for (float v : out) ASSERT_TRUE(std::isfinite(v)) << v;
        EXPECT_EQ(out[100], QuantMaxScale(bits) * static_cast<float>((1 << (bits - 1)) - 1));
      } else {
        EXPECT_NE(st.message().find("scale"), std::string::npos) << st.ToString();
      }
    }
  }
}

TEST(QuantCodecTest, PeekReadsTheWholeHeader) {
  std::vector<float> v(1000, 0.5f);
  QuantHeader h;
  ASSERT_FL_OK(QuantPeek(QuantEncode(v.data(), v.size(), QuantOptions{4, 64, false, 1}), &h));
  EXPECT_EQ(h.bits, 4);
  EXPECT_EQ(h.block, 64u);
  EXPECT_FALSE(h.stochastic);
  EXPECT_EQ(h.count, 1000u);
  ASSERT_FL_OK(QuantPeek(QuantEncode(v.data(), v.size(), QuantOptions{8, 256, true, 1}), &h));
  EXPECT_TRUE(h.stochastic);
}

TEST(ErrorFeedbackTest, CarriesTheResidual) {
  ErrorFeedback ef;
  QuantOptions o{2, 64, false, 1};
  std::vector<double> sent_sum(300, 0.0), true_sum(300, 0.0);
  for (int round = 0; round < 50; ++round) {
    auto d = Gaussian(300, round + 1);
    const std::vector<float> before =
        ef.residual().empty() ? std::vector<float>(300, 0.0f) : ef.residual();
    const std::string enc = ef.Encode(d, o);
    std::vector<float> sent;
    ASSERT_FL_OK(QuantDecode(enc, 300, &sent));
    for (size_t i = 0; i < 300; ++i) {
      // residual' = (d + residual) - sent: the same two float operations as
      // ErrorFeedback::Encode, so the same bits.
      ASSERT_EQ(ef.residual()[i], d[i] + before[i] - sent[i]);
      sent_sum[i] += sent[i];
      true_sum[i] += d[i];
    }
  }
  // Telescoping: what was sent in total equals the true total minus the residual,
  // so the total error stays bounded by one round's quantization error. A
  // 2-bit step is the block's largest |residual + d| and the residual is at
  // most half a step, so |residual| <= max |d|: about 0.043 (4.3 sd) for these
  // 15,000 draws of sd 0.01, at most 0.086 (Box-Muller draws are within 8.6
  // sd). Telescoping holds up to the two float roundings a round in Encode
  // (residual + d, then - sent), each within 2^-24 |residual + d|: at most
  // 50 * 2 * 2^-24 * 0.172 = 1.0e-6 (the double sums add ~1e-15).
  for (size_t i = 0; i < 300; ++i) {
    EXPECT_NEAR(sent_sum[i] + ef.residual()[i], true_sum[i], 2e-6);
    EXPECT_LT(std::fabs(ef.residual()[i]), 0.1);
  }
}

// 32 bits is lossless: no residual is kept, and one left by an earlier
// quantized round goes out with the next delta.
TEST(ErrorFeedbackTest, LosslessEncodingKeepsNoResidual) {
  ErrorFeedback ef;
  const auto d1 = Gaussian(300, 7);
  ef.Encode(d1, QuantOptions{2, 64, false, 1});
  ASSERT_EQ(ef.residual().size(), 300u);
  const std::vector<float> left = ef.residual();
  const auto d2 = Gaussian(300, 8);
  const std::string enc = ef.Encode(d2, QuantOptions{32, 256, false, 1});
  EXPECT_TRUE(ef.residual().empty());
  std::vector<float> sent;
  ASSERT_FL_OK(QuantDecode(enc, 300, &sent));
  for (size_t i = 0; i < 300; ++i) EXPECT_EQ(sent[i], d2[i] + left[i]);
  const std::string again = ef.Encode(d2, QuantOptions{32, 256, false, 1});
  ASSERT_FL_OK(QuantDecode(again, 300, &sent));
  for (size_t i = 0; i < 300; ++i) EXPECT_EQ(sent[i], d2[i]);
  EXPECT_TRUE(ef.residual().empty());
}

}  // namespace
}  // namespace fl
