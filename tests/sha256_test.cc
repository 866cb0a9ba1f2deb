// Known-answer tests for SHA-256 from a data file (FIPS 180-4 / NIST CAVP vectors).
#include "crypto/sha256.h"

#include "common/content_id.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <sstream>

namespace fl {
namespace {

struct Vector {
  std::string message;  // raw bytes
  std::string digest;   // hex
  size_t repeat{1};
};

std::string Unhex(const std::string& hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) {
    out.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  }
  return out;
}

// File format: lines "msg_hex repeat digest_hex"; '-' is the empty message.
std::vector<Vector> LoadVectors() {
  std::ifstream in(std::string(FL_TEST_DATA_DIR) + "/sha256_kat.txt");
  std::vector<Vector> out;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream ls(line);
    std::string msg, digest;
    size_t repeat;
    ls >> msg >> repeat >> digest;
    out.push_back({msg == "-" ? "" : Unhex(msg), digest, repeat});
  }
  return out;
}

TEST(Sha256Test, KnownAnswers) {
  auto vectors = LoadVectors();
  ASSERT_GE(vectors.size(), 5u) << "sha256_kat.txt missing or short";
  for (const auto& v : vectors) {
    std::string msg;
    for (size_t i = 0; i < v.repeat; ++i) msg += v.message;
    EXPECT_EQ(ToHex(Sha256(msg)), v.digest) << "message of " << msg.size() << " bytes";
  }
}

// common/content_id.h computes SHA-256 without OpenSSL (common/ is below
// crypto/): the same known answers, and the same digest as OpenSSL's for
// every length around the block and padding boundaries.
TEST(Sha256Test, ContentHashIsOpenSslsSha256) {
  auto vectors = LoadVectors();
  ASSERT_GE(vectors.size(), 5u) << "sha256_kat.txt missing or short";
  for (const auto& v : vectors) {
    std::string msg;
    for (size_t i = 0; i < v.repeat; ++i) msg += v.message;
    const std::array<uint8_t, 32> d = ContentSha256(msg);
    EXPECT_EQ(ToHex(Sha256Digest(d)), v.digest) << "message of " << msg.size() << " bytes";
  }
  std::string msg;
  for (size_t n = 0; n <= 300; ++n) {
    const std::array<uint8_t, 32> d = ContentSha256(msg);
    ASSERT_EQ(Sha256Digest(d), Sha256(msg)) << n << " bytes";
    msg.push_back(static_cast<char>(n * 31 + 7));
  }
  EXPECT_EQ(ScriptModelId("abc"), "torchscript:" + ToHex(Sha256(std::string("abc"))).substr(0, 16));
}

TEST(Sha256Test, IncrementalMatchesOneShot) {
  std::string msg(100000, 'x');
  for (size_t i = 0; i < msg.size(); ++i) msg[i] = static_cast<char>(i * 7);
  Sha256Hasher h;
  for (size_t off = 0; off < msg.size(); off += 997) {
    h.Update(msg.data() + off, std::min<size_t>(997, msg.size() - off));
  }
  EXPECT_EQ(h.Finish(), Sha256(msg));
  // After Finish the hasher starts over.
  h.Update("abc", 3);
  EXPECT_EQ(h.Finish(), Sha256(std::string("abc")));
}

// RFC 4231 test cases 1 and 2 (keys shorter than 32 bytes are the same key
// zero-padded, as HMAC pads every key to the block), and a second message on
// the same object.
TEST(HmacSha256Test, Rfc4231KnownAnswers) {
  struct Case {
    std::string key, data, mac;
  };
  const Case cases[] = {
      {std::string(20, '\x0b'), "Hi There",
       "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"},
      {"Jefe", "what do ya want for nothing?",
       "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"},
  };
  for (const auto& c : cases) {
    Sha256Digest key{};
    std::copy(c.key.begin(), c.key.end(), key.begin());
    HmacSha256 mac(key);
    mac.Update(c.data.data(), c.data.size());
    EXPECT_EQ(ToHex(mac.Finish()), c.mac) << c.data;
    mac.Update(c.data.data(), 3);  // starts over after Finish
    mac.Update(c.data.data() + 3, c.data.size() - 3);
    EXPECT_EQ(ToHex(mac.Finish()), c.mac) << c.data;
  }
}

}  // namespace
}  // namespace fl
