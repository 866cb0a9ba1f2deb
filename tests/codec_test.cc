// The codec room (common/codec.h) and its second codec, 1-bit signs with a
// scale per block (common/sign_codec.cc).
#include "common/codec.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>

#include "common/quant_codec.h"
#include "common/random.h"
#include "tests/test_util.h"

namespace fl {
namespace {

std::vector<float> Gaussian(size_t n, uint64_t seed) {
  Random r(seed);
  std::vector<float> v(n);
  for (auto& x : v) x = static_cast<float>(r.Normal());
  return v;
}

CodecParams Sign(uint32_t block) {
  CodecParams p;
  p.bits = 1;
  p.block = block;
  p.stochastic = false;
  return p;
}

TEST(CodecRoomTest, CodecsAreFoundByNameAndByTheirBytes) {
  const std::vector<std::string> names = CodecNames();
  ASSERT_GE(names.size(), 2u);
  EXPECT_EQ(names[0], "q");  // the default first
  EXPECT_EQ(FindCodec("")->name(), std::string("q"));
  EXPECT_EQ(FindCodec("nope"), nullptr);
  const std::vector<float> v = Gaussian(100, 1);
  for (const auto& name : names) {
    const Codec* c = FindCodec(name);
    ASSERT_NE(c, nullptr) << name;
    CodecParams p = name == "sign" ? Sign(32) : QuantOptions(8, 32);
    ASSERT_FL_OK(c->Check(p));
    const std::string enc = c->Encode(v.data(), v.size(), p);
    EXPECT_EQ(CodecOfBytes(enc), c) << name;
    EXPECT_EQ(enc.size(), c->EncodedSize(v.size(), p)) << name;
    CodecParams peeked;
    uint64_t count = 0;
    ASSERT_FL_OK(c->Peek(enc, &peeked, &count));
    EXPECT_EQ(count, v.size());
    EXPECT_TRUE(c->SameFormat(peeked, p)) << name;
  }
  // Each codec's magic byte is its own.
  for (size_t i = 0; i < names.size(); ++i) {
    for (size_t j = i + 1; j < names.size(); ++j) {
      EXPECT_NE(FindCodec(names[i])->magic(), FindCodec(names[j])->magic());
    }
  }
  EXPECT_EQ(CodecOfBytes(""), nullptr);
}

TEST(SignCodecTest, EachValueDecodesToItsSignTimesTheMeanMagnitudeOfItsBlock) {
  const Codec& c = *FindCodec("sign");
  for (uint32_t block : {1u, 7u, 64u, 256u}) {
    for (size_t n : {size_t{1}, size_t{8}, size_t{9}, size_t{1000}}) {
      std::vector<float> v = Gaussian(n, n * 31 + block);
      v[0] = 0.0f;  // zero goes up as +scale
      const std::string enc = c.Encode(v.data(), n, Sign(block));
      ASSERT_EQ(enc.size(), 24 + 4 * ((n + block - 1) / block) + (n + 7) / 8);
      std::vector<float> out;
      ASSERT_FL_OK(c.Decode(enc, n, &out));
      ASSERT_EQ(out.size(), n);
      for (size_t b = 0; b * block < n; ++b) {
        const size_t begin = b * block, end = std::min<size_t>(n, begin + block);
        double sum = 0;
        for (size_t i = begin; i < end; ++i) sum += std::fabs(static_cast<double>(v[i]));
        const float scale = static_cast<float>(sum / static_cast<double>(end - begin));
        for (size_t i = begin; i < end; ++i) {
          ASSERT_EQ(out[i], v[i] < 0 ? -scale : scale) << "n " << n << " block " << block << " i " << i;
        }
      }
    }
  }
}

TEST(SignCodecTest, IsAbout32TimesSmallerThanFp32And8TimesSmallerThan8Bit) {
  const size_t n = 1663370;  // the FedAvg CNN's parameters
  const size_t sign = FindCodec("sign")->EncodedSize(n, Sign(256));
  const size_t q8 = QuantEncodedSize(n, 8, 256), fp32 = QuantEncodedSize(n, 32, 256);
  EXPECT_EQ(sign, 24 + 4 * 6498 + 207922u);
  EXPECT_GT(static_cast<double>(fp32) / sign, 28.0);
  EXPECT_GT(static_cast<double>(q8) / sign, 7.0);
}

TEST(SignCodecTest, TheDecoderRefusesWhatItsEncoderNeverWrites) {
  const Codec& c = *FindCodec("sign");
  const std::vector<float> v = Gaussian(21, 5);
  const std::string good = c.Encode(v.data(), v.size(), Sign(8));
  std::vector<float> out;
  ASSERT_FL_OK(c.Decode(good, 21, &out));
  auto refused = [&](std::string bad, const char* what, size_t expected = 21) {
    const Status st = c.Decode(bad, expected, &out);
    EXPECT_TRUE(st.IsCorruption()) << what << ": " << st.ToString();
  };
  refused(good.substr(0, 10), "truncated header");
  refused(good.substr(0, good.size() - 1), "one byte short");
  refused(good + "x", "one byte long");
  refused(good, "another count", 22);
  std::string b = good;
  b[0] = 'Q';
  refused(b, "another magic");
  b = good;
  b[1] = 2;
  refused(b, "bits 2");
  b = good;
  b[2] = 1;
  refused(b, "a flag set");
  b = good;
  uint64_t blocks = 4;
  std::memcpy(&b[16], &blocks, 8);
  refused(b, "a block count its count and block do not imply");
  for (float scale : {std::nanf(""), std::numeric_limits<float>::infinity(), -1.0f}) {
    b = good;
    std::memcpy(&b[24 + 4], &scale, 4);
    refused(b, "a scale that is not finite and >= 0");
  }
  b = good;
  b.back() = static_cast<char>(b.back() | 0x80);  // 21 values: bits 5..7 of the last byte are padding
  refused(b, "a padding bit set");
  uint32_t zero_block = 0;
  b = good;
  std::memcpy(&b[4], &zero_block, 4);
  refused(b, "block 0");
}

TEST(SignCodecTest, RandomBytesNeverDecodeToAValueThatIsNotFinite) {
  const Codec& c = *FindCodec("sign");
  const std::vector<float> v = Gaussian(300, 9);
  const std::string good = c.Encode(v.data(), v.size(), Sign(16));
  Random r(17);
  std::vector<float> out;
  int decoded = 0;
  for (int t = 0; t < 20000; ++t) {
    std::string b = good;
    const int flips = 1 + static_cast<int>(r.Next() % 4);
    for (int k = 0; k < flips; ++k) b[r.Next() % b.size()] = static_cast<char>(r.Next());
    if (!c.Decode(b, 300, &out).ok()) continue;
    ++decoded;
    for (float x : out) ASSERT_TRUE(std::isfinite(x));
  }
  EXPECT_GT(decoded, 0);  // flips in the signs decode: to other signs, still finite
}

// Signs alone are biased: what goes up is the block's mean magnitude, not
// each value. With error feedback the sum of what was sent over T rounds of
// the same delta d is T d - r_T (r_T the residual), and the residual stays
// bounded: the scaled sign C(x) = (|x|_1 / n) sign(x) of a block of n values
// has |x - C(x)|^2 = |x|^2 - |x|_1^2 / n <= (1 - 1/n) |x|^2, so with
// q = sqrt(1 - 1/n), |r_t| <= q (|r_{t-1}| + |d|) <= q / (1 - q) |d| per block
// (Karimireddy et al. 2019). The average of what was sent is then within
// max|r_T| / T of d.
TEST(SignCodecTest, WithErrorFeedbackWhatWasSentAveragesToTheDelta) {
  const Codec& c = *FindCodec("sign");
  const std::vector<float> d = Gaussian(1024, 3);
  const uint32_t block = 16;
  const CodecParams p = Sign(block);
  ErrorFeedback ef;
  std::vector<double> sum(d.size(), 0.0);
  const int rounds = 2000;
  for (int t = 0; t < rounds; ++t) {
    std::vector<float> sent;
    ASSERT_FL_OK(c.Decode(ef.Encode(c, d, p), d.size(), &sent));
    for (size_t i = 0; i < d.size(); ++i) sum[i] += sent[i];
  }
  const std::vector<float>& r = ef.residual();
  ASSERT_EQ(r.size(), d.size());
  const double q = std::sqrt(1.0 - 1.0 / block);
  double largest_residual = 0;
  for (size_t b = 0; b < d.size(); b += block) {
    double r2 = 0, d2 = 0;
    for (size_t i = b; i < b + block; ++i) {
      r2 += double{r[i]} * r[i];
      d2 += double{d[i]} * d[i];
      largest_residual = std::max(largest_residual, std::fabs(double{r[i]}));
    }
    // (1e-3: the float arithmetic of 2,000 rounds, far below the bound's size.)
    EXPECT_LE(std::sqrt(r2), q / (1 - q) * std::sqrt(d2) * (1 + 1e-3)) << "block " << b / block;
  }
  std::vector<float> plain;
  ASSERT_FL_OK(c.Decode(c.Encode(d.data(), d.size(), p), d.size(), &plain));
  double err_with = 0, err_without = 0;
  for (size_t i = 0; i < d.size(); ++i) {
    err_with = std::max(err_with, std::fabs(sum[i] / rounds - d[i]));
    err_without = std::max(err_without, std::fabs(static_cast<double>(plain[i]) - d[i]));
  }
  std::printf("max |avg sent - d| %.4f with feedback, %.4f without; largest residual %.3f\n",
              err_with, err_without, largest_residual);
  EXPECT_LE(err_with, largest_residual / rounds + 1e-3);
  EXPECT_LT(err_with, 0.1 * err_without);
}

}  // namespace
}  // namespace fl
