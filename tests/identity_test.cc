// Node identities: Z85 (ZeroMQ RFC 32 test vector), Curve25519 key pairs, and
// the NAME.key / NAME.pub files fl-keygen writes.
#include "crypto/identity.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <optional>

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

// A fresh identity saved as DIR/n.key and DIR/n.pub.
struct IdentityFiles {
  std::optional<SigningKey> signing;
  std::optional<CurveKeyPair> curve;
  std::string key, pub;

  void Make(const std::string& dir) {
    auto s = SigningKey::Generate();
    auto c = GenerateCurveKeyPair();
    ASSERT_FL_OK(s);
    ASSERT_FL_OK(c);
    signing.emplace(std::move(s).value());
    curve = *c;
    key = dir + "/n.key";
    pub = dir + "/n.pub";
    ASSERT_FL_OK(SaveIdentity(key, pub, *signing, *curve));
  }
};

TEST(IdentityTest, FilesRoundTrip) {
  test::TempDir dir;
  IdentityFiles f;
  ASSERT_NO_FATAL_FAILURE(f.Make(dir.path()));
  const auto& [signing, curve, key, pub] = f;
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

// A private key is opened once, without following a symbolic link, and its
// type, mode and owner are checked on that descriptor; an identity on disk is
// never overwritten.
TEST(IdentityTest, KeyFilesAreCheckedOnTheDescriptorAndNeverOverwritten) {
  test::TempDir dir;
  IdentityFiles f;
  ASSERT_NO_FATAL_FAILURE(f.Make(dir.path()));
  const auto& [signing, curve, key, pub] = f;
  const std::string before = *ReadFile(key);

  // Never overwritten: a second identity under the same name is refused and
  // the first one stays as it was.
  auto other = SigningKey::Generate();
  ASSERT_FL_OK(other);
  Status st = SaveIdentity(key, pub, *other, *curve);
  EXPECT_TRUE(st.IsInvalidArgument()) << st.ToString();
  EXPECT_NE(st.message().find("exists"), std::string::npos) << st.ToString();
  EXPECT_EQ(*ReadFile(key), before);
  EXPECT_TRUE(ReadFile(key + ".tmp").status().IsNotFound());

  // A symbolic link to a perfectly good key is refused, by name.
  const std::string link = dir.path() + "/link.key";
  ASSERT_EQ(::symlink(key.c_str(), link.c_str()), 0);
  auto via_link = LoadIdentity(link);
  ASSERT_FALSE(via_link.ok());
  EXPECT_NE(via_link.status().message().find("symbolic link"), std::string::npos)
      << via_link.status().ToString();
  // And a link where a new key would go is not written through.
  const std::string target = dir.path() + "/target";
  test::WriteFile(target, "precious");
  ASSERT_EQ(::symlink(target.c_str(), (dir.path() + "/m.key").c_str()), 0);
  EXPECT_FALSE(SaveIdentity(dir.path() + "/m.key", dir.path() + "/m.pub", *signing, *curve).ok());
  EXPECT_EQ(*ReadFile(target), "precious");

  // Not a regular file.
  ASSERT_EQ(::mkdir((dir.path() + "/d.key").c_str(), 0700), 0);
  EXPECT_FALSE(LoadIdentity(dir.path() + "/d.key").ok());

  // Owned by another user (this test runs as root in CI; as another user it
  // cannot give a file away, and checks only that its own key loads).
  if (::geteuid() == 0) {
    ASSERT_EQ(::chown(key.c_str(), 12345, 12345), 0);
    auto foreign = LoadIdentity(key);
    ASSERT_FALSE(foreign.ok());
    EXPECT_NE(foreign.status().message().find("owned by uid 12345"), std::string::npos)
        << foreign.status().ToString();
    ASSERT_EQ(::chown(key.c_str(), 0, 0), 0);
  }
  EXPECT_FL_OK(LoadIdentity(key));
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
