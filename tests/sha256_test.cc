// Known-answer tests for SHA-256 from a data file (FIPS 180-4 / NIST CAVP vectors).
#include "crypto/sha256.h"

#include <gtest/gtest.h>

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

}  // namespace
}  // namespace fl
