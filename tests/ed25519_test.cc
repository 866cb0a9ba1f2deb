// Ed25519: known answers (RFC 8032, section 7.1), sign/verify, key files.
#include "crypto/ed25519.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include "crypto/model_code.h"
#include "tests/test_util.h"

namespace fl {
namespace {

std::vector<uint8_t> Unhex(const std::string& h) {
  std::vector<uint8_t> out;
  for (size_t i = 0; i + 1 < h.size(); i += 2) {
    out.push_back(static_cast<uint8_t>(std::stoi(h.substr(i, 2), nullptr, 16)));
  }
  return out;
}

std::string Hex(const uint8_t* p, size_t n) {
  static const char* k = "0123456789abcdef";
  std::string s;
  for (size_t i = 0; i < n; ++i) {
    s += k[p[i] >> 4];
    s += k[p[i] & 15];
  }
  return s;
}

TEST(Ed25519Test, Rfc8032Test1) {
  const auto seed = Unhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60");
  auto key = SigningKey::FromSeed(seed.data(), seed.size());
  ASSERT_FL_OK(key);
  EXPECT_EQ(Hex(key->public_key().data(), 32),
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a");
  const Ed25519Signature sig = key->Sign("", 0);
  EXPECT_EQ(Hex(sig.data(), 64),
            "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e"
            "39701cf9b46bd25bf5f0595bbe24655141438e7a100b");
  EXPECT_FL_OK(Ed25519Verify(key->public_key(), "", 0, sig));
}

TEST(Ed25519Test, TamperedMessageSignatureOrKeyFails) {
  auto key = SigningKey::Generate();
  ASSERT_FL_OK(key);
  const std::string msg = "round 7 update";
  const Ed25519Signature sig = key->Sign(msg.data(), msg.size());
  EXPECT_FL_OK(Ed25519Verify(key->public_key(), msg.data(), msg.size(), sig));
  std::string bad = msg;
  bad[0] ^= 1;
  EXPECT_TRUE(Ed25519Verify(key->public_key(), bad.data(), bad.size(), sig).IsUnauthenticated());
  for (size_t i = 0; i < sig.size(); i += 7) {
    Ed25519Signature s2 = sig;
    s2[i] ^= 0x20;
    EXPECT_TRUE(Ed25519Verify(key->public_key(), msg.data(), msg.size(), s2).IsUnauthenticated());
  }
  auto other = SigningKey::Generate();
  EXPECT_TRUE(Ed25519Verify(other->public_key(), msg.data(), msg.size(), sig).IsUnauthenticated());
}

TEST(Ed25519Test, KeyFilesRoundTripWithPermissions) {
  test::TempDir dir;
  auto key = SigningKey::Generate();
  ASSERT_FL_OK(key);
  const std::string priv = dir.path() + "/node.key", pub = dir.path() + "/node.pub";
  ASSERT_FL_OK(key->SavePem(priv));
  ASSERT_FL_OK(SavePublicKeyPem(pub, key->public_key()));
  struct stat st;
  ASSERT_EQ(::stat(priv.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  auto loaded = SigningKey::LoadPem(priv);
  ASSERT_FL_OK(loaded);
  EXPECT_EQ(loaded->public_key(), key->public_key());
  auto lp = LoadPublicKeyPem(pub);
  ASSERT_FL_OK(lp);
  EXPECT_EQ(*lp, key->public_key());
  EXPECT_EQ(NodeId(*lp).size(), 32u);

  // Wrong permissions, corrupt file, public key where a private one belongs.
  ASSERT_EQ(::chmod(priv.c_str(), 0644), 0);
  auto r = SigningKey::LoadPem(priv);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("chmod 600"), std::string::npos) << r.status().ToString();
  ASSERT_EQ(::chmod(priv.c_str(), 0600), 0);
  test::WriteFile(dir.path() + "/bad.key", "-----BEGIN PRIVATE KEY-----\nAAAA\n");
  ASSERT_EQ(::chmod((dir.path() + "/bad.key").c_str(), 0600), 0);
  EXPECT_TRUE(SigningKey::LoadPem(dir.path() + "/bad.key").status().IsCorruption());
  EXPECT_TRUE(LoadPublicKeyPem(priv).status().IsCorruption());
  EXPECT_TRUE(SigningKey::LoadPem(dir.path() + "/missing.key").status().IsNotFound());
}

TEST(Ed25519Test, KeyOfAnotherTypeIsRefusedByName) {
  // A P-256 key (throwaway, made with `openssl genpkey -algorithm EC`).
  const char kEcKey[] =
      "-----BEGIN PRIVATE KEY-----\n"
      "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgtvt5OBxzUXpJQ69U\n"
      "4utU1KCG5U7HT+Diyj3ryhguldahRANCAAQRlbruy4K0de7T1G64MvzxZf047LNO\n"
      "AK8XBTpcsLJzVC/eBueJC2H/hCZ2M6m2BKyoLf4e7sw0JQafRKP6bsES\n"
      "-----END PRIVATE KEY-----\n";
  test::TempDir dir;
  const std::string path = dir.path() + "/ec.key";
  test::WriteFile(path, kEcKey);
  ASSERT_EQ(::chmod(path.c_str(), 0600), 0);
  auto r = SigningKey::LoadPem(path);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().ToString().find("needs Ed25519"), std::string::npos)
      << r.status().ToString();
  EXPECT_NE(r.status().ToString().find(path), std::string::npos);
}

}  // namespace
}  // namespace fl

namespace fl {
namespace {

// A device loads the server's TorchScript file only when the server's key
// signed exactly these bytes and they are the model the federation names.
TEST(ModelCodeTest, SignatureAndIdAreBothChecked) {
  auto server = SigningKey::Generate();
  auto other = SigningKey::Generate();
  ASSERT_FL_OK(server);
  ASSERT_FL_OK(other);
  const std::string code = std::string("PK\x03\x04 a TorchScript archive", 26);
  const std::string id = ModelCodeId(code);
  EXPECT_EQ(id.rfind("torchscript:", 0), 0u);
  EXPECT_EQ(id.size(), 12u + 16u);
  const Ed25519Signature sig = SignModelCode(code, *server);
  EXPECT_FL_OK(VerifyModelCode(code, sig, server->public_key(), id));
  std::string tampered = code;
  tampered[10] ^= 1;
  EXPECT_TRUE(VerifyModelCode(tampered, sig, server->public_key(), ModelCodeId(tampered))
                  .IsUnauthenticated());
  EXPECT_TRUE(VerifyModelCode(code, sig, other->public_key(), id).IsUnauthenticated());
  EXPECT_TRUE(VerifyModelCode(code, SignModelCode(code, *other), server->public_key(), id)
                  .IsUnauthenticated());
  // Signed, but not the model the TASK names.
  EXPECT_TRUE(VerifyModelCode(code, sig, server->public_key(), "torchscript:0000000000000000")
                  .IsInvalidArgument());
}

}  // namespace
}  // namespace fl
