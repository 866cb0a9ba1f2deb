// Names for content: the SHA-256 of bytes, computed here without OpenSSL so
// that common/ (below crypto/ in the layering) can name what it loads, such
// as a TorchScript model file (Model::architecture). Not for signatures or
// anything an attacker races: crypto/sha256.h is the server's and devices'
// hash for those; the two agree (tests/sha256_test.cc checks it).
#ifndef FEDGE_COMMON_CONTENT_ID_H_
#define FEDGE_COMMON_CONTENT_ID_H_

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace fl {

// FIPS 180-4 SHA-256 of `bytes`.
std::array<uint8_t, 32> ContentSha256(std::string_view bytes);

// "torchscript:" and the first 16 hex digits of the SHA-256 of `code`: how a
// federation names a TorchScript model.
std::string ScriptModelId(std::string_view code);

}  // namespace fl

#endif  // FEDGE_COMMON_CONTENT_ID_H_
