// Node identities: Z85 (ZeroMQ RFC 32 test vector), Curve25519 key pairs, and
// the NAME.key / NAME.pub files fl-keygen writes.
#include "crypto/identity.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include "common/file_util.h"
#include "tests/test_util.h"

namespace fl {
namespace {

TEST(Z85Test, RfcVectorAndErrors) {
  const uint8_t hello[] = {0x86, 0x4F, 0xD2, 0x6F, 0xB5, 0x59, 0xF7, 0x5B};
  EXPECT_EQ(Z85Encode(hello, sizeof(hello)), "HelloWorld");
  auto back = Z85Decode("HelloWorld");
  ASSERT_FL_OK(back);
  EXPECT_EQ(*back, std::string(reinterpret_cast<const char*>(hello), sizeof(hello)));
  EXPECT_TRUE(Z85Decode("Hell").status().IsCorruption());        // not a multiple of 5
  EXPECT_TRUE(Z85Decode("Hello Worl").status().IsCorruption());  // space not in alphabet
  EXPECT_TRUE(Z85Decode("#####").status().IsCorruption());       // above 2^32
}

TEST(CurveKeyTest, PublicFollowsFromSecret) {
  auto a = GenerateCurveKeyPair();
  auto b = GenerateCurveKeyPair();
  ASSERT_FL_OK(a);
  ASSERT_FL_OK(b);
  EXPECT_NE(a->secret_key, b->secret_key);
  auto pub = CurvePublicFromSecret(a->secret_key);
  ASSERT_FL_OK(pub);
  EXPECT_EQ(*pub, a->public_key);
}

TEST(IdentityTest, FilesRoundTrip) {
  test::TempDir dir;
  auto signing = SigningKey::Generate();
  auto curve = GenerateCurveKeyPair();
  ASSERT_FL_OK(signing);
  ASSERT_FL_OK(curve);
  const std::string key = dir.path() + "/n.key", pub = dir.path() + "/n.pub";
  ASSERT_FL_OK(SaveIdentity(key, pub, *signing, *curve));
  struct stat st;
  ASSERT_EQ(::stat(key.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);

  auto id = LoadIdentityWithCurve(key);
  ASSERT_FL_OK(id);
  EXPECT_EQ(id->signing.public_key(), signing->public_key());
  ASSERT_TRUE(id->curve.has_value());
  EXPECT_EQ(id->curve->secret_key, curve->secret_key);
  EXPECT_EQ(id->curve->public_key, curve->public_key);
  auto pid = LoadPublicIdentityWithCurve(pub);
  ASSERT_FL_OK(pid);
  EXPECT_EQ(pid->signing, signing->public_key());
  EXPECT_EQ(*pid->curve, curve->public_key);
  // The .pub file is still a plain PEM public key for other tools.
  auto plain = LoadPublicKeyPem(pub);
  ASSERT_FL_OK(plain);
  EXPECT_EQ(*plain, signing->public_key());
}

TEST(IdentityTest, MissingOrCorruptCurveKeyIsAClearError) {
  test::TempDir dir;
  auto signing = SigningKey::Generate();
  ASSERT_FL_OK(signing);
  // A signing-only identity (older key files): fine unless CURVE is needed.
  const std::string key = dir.path() + "/old.key", pub = dir.path() + "/old.pub";
  ASSERT_FL_OK(signing->SavePem(key));
  ASSERT_FL_OK(SavePublicKeyPem(pub, signing->public_key()));
  auto id = LoadIdentity(key);
  ASSERT_FL_OK(id);
  EXPECT_FALSE(id->curve.has_value());
  auto need = LoadIdentityWithCurve(key);
  ASSERT_FALSE(need.ok());
  EXPECT_NE(need.status().message().find("fl-keygen"), std::string::npos);
  EXPECT_FALSE(LoadPublicIdentityWithCurve(pub).ok());

  // A CURVE line that is not 40 Z85 characters names the file.
  auto text = ReadFile(pub);
  ASSERT_FL_OK(text);
  test::WriteFile(pub, *text + "curve-public-key: tooShort\n");
  auto bad = LoadPublicIdentity(pub);
  ASSERT_FALSE(bad.ok());
  EXPECT_TRUE(bad.status().IsCorruption());
  EXPECT_NE(bad.status().ToString().find(pub), std::string::npos);
}

}  // namespace
}  // namespace fl
