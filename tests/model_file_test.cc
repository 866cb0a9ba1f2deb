#include "crypto/model_file.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "common/random.h"
#include "crypto/sha256.h"
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
  ModelFileOptions fp32, int8;
  fp32.block = int8.block = 64;
  int8.value_bits = 8;
  const std::string f32 = EncodeModelFile(m, fp32);
  const std::string i8 = EncodeModelFile(m, int8);
  EXPECT_LT(i8.size() * 2, f32.size());
  auto back = DecodeModelFile("x.flm", i8);
  ASSERT_FL_OK(back);
  // Nearest rounding to 127 levels a side, one scale per block of 64 kept
  // values: within half a step, s / 2 (1 + (7 * 127 + 1) 2^-23), where s is
  // the block's largest |value| / 127 (derived at
  // QuantCodecTest.NearestWithinHalfAStep). Bounded here with the tensor's
  // largest |value|, which no block's exceeds.
  float max_abs = 0;
  for (float v : m.tensors[0].values) max_abs = std::max(max_abs, std::fabs(v));
  const double half_step = max_abs / 127 / 2 * (1 + (7 * 127 + 1) * 0x1p-23);
  for (size_t k = 0; k < 3000; ++k) {
    EXPECT_EQ(back->tensors[0].mask[k], m.tensors[0].mask[k]);
    EXPECT_LE(std::fabs(static_cast<double>(back->tensors[0].values[k]) - m.tensors[0].values[k]),
              half_step);
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

// The normalisation and class names a model was trained with travel in the
// file (formats 3 and 4), signed like the rest; a file without them is
// written as before (format 1 or 2). A signed file's metadata cannot be
// changed without breaking the signature, and a malformed normalisation is
// refused.
TEST(ModelFileTest, MetadataTravelsWithTheModel) {
  auto key = SigningKey::Generate();
  ASSERT_FL_OK(key);
  ModelFileOptions with;
  with.meta.normalization = Normalization{{0.5f, 0.25f}, {2.0f, 0.125f}};
  with.meta.class_names = {"cat", "dog"};
  for (const SigningKey* signer : std::vector<const SigningKey*>{nullptr, &*key}) {
    const std::string plain = EncodeModelFile(Sample(), {}, signer);
    const std::string bytes = EncodeModelFile(Sample(), with, signer);
    EXPECT_EQ(plain[4], signer ? 2 : 1);
    EXPECT_EQ(bytes[4], signer ? 4 : 3);
    ModelFileMeta meta;
    auto back = DecodeModelFile("m.flm", bytes, signer ? &key->public_key() : nullptr, &meta);
    ASSERT_FL_OK(back);
    EXPECT_EQ(back->tensors[0].values, Sample().tensors[0].values);
    EXPECT_EQ(meta.normalization.mean, with.meta.normalization.mean);
    EXPECT_EQ(meta.normalization.std, with.meta.normalization.std);
    EXPECT_EQ(meta.class_names, with.meta.class_names);
    ASSERT_FL_OK(DecodeModelFile("m.flm", plain, nullptr, &meta));
    EXPECT_TRUE(meta.empty());
  }
  // "class=dog" changed to "class=cog" and the digest recomputed: a signed
  // file's signature no longer verifies.
  std::string forged = EncodeModelFile(Sample(), with, &*key);
  const size_t at = forged.find("class=dog");
  ASSERT_NE(at, std::string::npos);
  forged[at + 6] = 'c';
  const size_t body = forged.size() - 32 - 96;
  const Sha256Digest d = Sha256(forged.data(), body);
  forged.replace(body, 32, reinterpret_cast<const char*>(d.data()), 32);
  EXPECT_TRUE(DecodeModelFile("m.flm", forged).status().IsUnauthenticated());
  // An unsigned file with a malformed normalisation.
  ModelFileOptions bad = with;
  bad.meta.class_names.clear();
  std::string text = EncodeModelFile(Sample(), bad);
  const size_t n = text.find("normalize=");
  ASSERT_NE(n, std::string::npos);
  text[n + 10] = 'x';
  const size_t len = text.size() - 32;
  const Sha256Digest d2 = Sha256(text.data(), len);
  text.replace(len, 32, reinterpret_cast<const char*>(d2.data()), 32);
  auto refused = DecodeModelFile("m.flm", text);
  EXPECT_TRUE(refused.status().IsCorruption()) << refused.status().ToString();
  EXPECT_NE(refused.status().message().find("metadata"), std::string::npos);
  // Class names a TASK could not carry: listed twice, or not printable.
  for (const auto& names :
       {std::vector<std::string>{"cat", "cat"}, std::vector<std::string>{"cat", "d\x1bog"}}) {
    ModelFileOptions odd;
    odd.meta.class_names = names;
    auto r = DecodeModelFile("m.flm", EncodeModelFile(Sample(), odd));
    EXPECT_TRUE(r.status().IsCorruption()) << names[1];
  }
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
