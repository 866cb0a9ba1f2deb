// SHA-256 (FIPS 180-4) over OpenSSL's EVP interface.
//
// Used for content addresses: a model version is the SHA-256 of its canonical
// serialization, and a wire envelope carries the SHA-256 of its payload.
#ifndef FEDGE_CRYPTO_SHA256_H_
#define FEDGE_CRYPTO_SHA256_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace fl {

// Size of a SHA-256 digest.
constexpr size_t kSha256DigestBytes = 32;

using Sha256Digest = std::array<uint8_t, kSha256DigestBytes>;

// Returns the SHA-256 of `len` bytes at `data`.
Sha256Digest Sha256(const void* data, size_t len);
inline Sha256Digest Sha256(const std::string& s) { return Sha256(s.data(), s.size()); }

// Lower-case hex of a digest (64 characters).
std::string ToHex(const Sha256Digest& digest);

// Incremental hashing, for inputs that arrive in pieces.
class Sha256Hasher final {
 public:
  Sha256Hasher();
  ~Sha256Hasher();
  Sha256Hasher(const Sha256Hasher&) = delete;
  Sha256Hasher& operator=(const Sha256Hasher&) = delete;

  // Adds `len` bytes to the hash.
  void Update(const void* data, size_t len);
  // Returns the digest of everything added; the hasher is then reset.
  Sha256Digest Finish();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// HMAC-SHA256 (RFC 2104) under a 32-byte key, incremental: a tag only the
// holder of the key can make (round logs carry one per record).
class HmacSha256 final {
 public:
  explicit HmacSha256(const Sha256Digest& key);
  ~HmacSha256();
  HmacSha256(const HmacSha256&) = delete;
  HmacSha256& operator=(const HmacSha256&) = delete;

  // Adds `len` bytes to the message.
  void Update(const void* data, size_t len);
  // Returns the tag of everything added; then starts over, same key.
  Sha256Digest Finish();

 private:
  std::array<uint8_t, 64> ipad_{};
  std::array<uint8_t, 64> opad_{};
  Sha256Hasher inner_;
};

}  // namespace fl

#endif  // FEDGE_CRYPTO_SHA256_H_
