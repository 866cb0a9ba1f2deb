#include "crypto/model_file.h"

#include <gtest/gtest.h>

#include <cmath>

#include "common/random.h"
#include "tests/test_util.h"

namespace fl {
namespace {

ModelState Sample() {
  Random r(3);
  ModelState m;
  m.architecture = "toy";
  std::vector<float> w(3000), b(10);
  for (auto& v : w) v = static_cast<float>(r.Normal());
  for (auto& v : b) v = static_cast<float>(r.Normal());
  m.tensors.push_back({"fc.weight", {100, 30}, w, {}});
  m.tensors.push_back({"fc.bias", {10}, b, {}});
  EXPECT_TRUE(PruneByMagnitude(&m, 0.7, true).ok());
  return m;
}

TEST(ModelFileTest, Fp32RoundTripIsExact) {
  const ModelState m = Sample();
  const std::string bytes = EncodeModelFile(m, {});
  auto back = DecodeModelFile("x.flm", bytes);
  ASSERT_FL_OK(back);
  EXPECT_EQ(back->architecture, "toy");
  ASSERT_EQ(back->tensors.size(), 2u);
  EXPECT_EQ(back->tensors[0].values, m.tensors[0].values);
  EXPECT_EQ(back->tensors[0].mask, m.tensors[0].mask);
  EXPECT_TRUE(back->tensors[1].mask.empty());
  EXPECT_EQ(back->KeptCount(), m.KeptCount());
}

TEST(ModelFileTest, Int8IsSmallerAndClose) {
  const ModelState m = Sample();
  const std::string f32 = EncodeModelFile(m, {32, 64});
  const std::string i8 = EncodeModelFile(m, {8, 64});
  EXPECT_LT(i8.size() * 2, f32.size());
  auto back = DecodeModelFile("x.flm", i8);
  ASSERT_FL_OK(back);
  for (size_t k = 0; k < 3000; ++k) {
    EXPECT_EQ(back->tensors[0].mask[k], m.tensors[0].mask[k]);
    EXPECT_NEAR(back->tensors[0].values[k], m.tensors[0].values[k], 0.05);  // half a step
    if (!m.tensors[0].mask[k]) {
      EXPECT_EQ(back->tensors[0].values[k], 0.0f);
    }
  }
}

TEST(ModelFileTest, EveryTruncationAndFlipRejected) {
  const std::string good = EncodeModelFile(Sample(), {});
  for (size_t len = 0; len < good.size(); len += 37) {
    auto r = DecodeModelFile("m.flm", good.substr(0, len));
    ASSERT_FALSE(r.ok()) << len;
    EXPECT_NE(r.status().message().find("m.flm"), std::string::npos);
  }
  for (size_t i = 0; i < good.size(); i += 11) {
    std::string bad = good;
    bad[i] ^= 0x10;
    auto r = DecodeModelFile("m.flm", bad);
    ASSERT_FALSE(r.ok()) << "flip at " << i;
    EXPECT_TRUE(r.status().IsCorruption());
  }
  auto r = DecodeModelFile("m.flm", good + "x");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("altered"), std::string::npos) << r.status().ToString();
}

TEST(ModelFileTest, WriteReadAndVersion) {
  test::TempDir dir;
  const std::string path = dir.path() + "/m.flm";
  ASSERT_FL_OK(WriteModelFile(path, Sample(), {}));
  auto m = ReadModelFile(path);
  ASSERT_FL_OK(m);
  auto v1 = ModelFileVersion(EncodeModelFile(*m, {}));
  auto v2 = ModelFileVersion(EncodeModelFile(Sample(), {}));
  ASSERT_FL_OK(v1);
  EXPECT_EQ(*v1, *v2);
  EXPECT_TRUE(ReadModelFile(dir.path() + "/missing.flm").status().IsNotFound());
}

TEST(ModelFileTest, SignedFiles) {
  auto a = SigningKey::Generate();
  auto b = SigningKey::Generate();
  ASSERT_FL_OK(a);
  ASSERT_FL_OK(b);
  const std::string unsigned_bytes = EncodeModelFile(Sample(), {});
  const std::string good = EncodeModelFile(Sample(), {}, &*a);
  ASSERT_EQ(good.size(), unsigned_bytes.size() + 96);
  auto signer = ModelFileSigner(good);
  ASSERT_FL_OK(signer);
  ASSERT_TRUE(signer->has_value());
  EXPECT_EQ(**signer, a->public_key());
  auto none = ModelFileSigner(unsigned_bytes);
  ASSERT_FL_OK(none);
  EXPECT_FALSE(none->has_value());

  EXPECT_FL_OK(DecodeModelFile("s.flm", good));
  EXPECT_FL_OK(DecodeModelFile("s.flm", good, &a->public_key()));
  EXPECT_TRUE(DecodeModelFile("s.flm", good, &b->public_key()).status().IsUnauthenticated());
  EXPECT_TRUE(
      DecodeModelFile("u.flm", unsigned_bytes, &a->public_key()).status().IsUnauthenticated());
  // Signed and unsigned encodings of one model have different versions: the
  // signature cannot be stripped while keeping the version.
  EXPECT_NE(*ModelFileVersion(good), *ModelFileVersion(unsigned_bytes));

  // Every byte flipped, in turn: refused, and never by accident accepted.
  int refused = 0;
  for (size_t i = 0; i < good.size(); ++i) {
    std::string bad = good;
    bad[i] ^= 0xFF;
    auto r = DecodeModelFile("s.flm", bad, &a->public_key());
    EXPECT_FALSE(r.ok()) << "flip at " << i;
    refused += !r.ok();
  }
  EXPECT_EQ(refused, static_cast<int>(good.size()));
  // The signature trailer cut off, or replaced by another key's signature.
  EXPECT_FALSE(DecodeModelFile("s.flm", good.substr(0, good.size() - 96)).ok());
  std::string forged = good;
  const std::string other = EncodeModelFile(Sample(), {}, &*b);
  forged.replace(forged.size() - 96, 96, other.substr(other.size() - 96));
  // b genuinely signed the same digest: a valid file, but not signed by a.
  EXPECT_FL_OK(DecodeModelFile("s.flm", forged));
  EXPECT_TRUE(DecodeModelFile("s.flm", forged, &a->public_key()).status().IsUnauthenticated());
  forged.replace(forged.size() - 96, 32,
                 std::string(a->public_key().begin(), a->public_key().end()));
  EXPECT_TRUE(DecodeModelFile("s.flm", forged, &a->public_key()).status().IsUnauthenticated());
}

}  // namespace
}  // namespace fl
