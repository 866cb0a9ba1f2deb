#include "crypto/sha256.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <cassert>
#include <cstdio>
#include <cstdlib>

namespace fl {

// RAII over EVP_MD_CTX, as bssl::UniquePtr<EVP_MD_CTX>.
struct Sha256Hasher::Impl {
  std::unique_ptr<EVP_MD_CTX, void (*)(EVP_MD_CTX*)> ctx{EVP_MD_CTX_new(), EVP_MD_CTX_free};
};

namespace {

// Allocation and init failures of a digest context mean the process is out of
// memory or OpenSSL is broken; neither is recoverable input, so they abort.
void Check(int ok, const char* what) {
  if (ok != 1) {
    std::fprintf(stderr, "fatal: OpenSSL %s failed\n", what);
    std::abort();
  }
}

}  // namespace

Sha256Hasher::Sha256Hasher() : impl_(new Impl) {
  Check(impl_->ctx != nullptr, "EVP_MD_CTX_new");
  Check(EVP_DigestInit_ex(impl_->ctx.get(), EVP_sha256(), nullptr), "EVP_DigestInit_ex");
}

Sha256Hasher::~Sha256Hasher() = default;

void Sha256Hasher::Update(const void* data, size_t len) {
  Check(EVP_DigestUpdate(impl_->ctx.get(), data, len), "EVP_DigestUpdate");
}

Sha256Digest Sha256Hasher::Finish() {
  Sha256Digest d;
  unsigned int len = 0;
  Check(EVP_DigestFinal_ex(impl_->ctx.get(), d.data(), &len), "EVP_DigestFinal_ex");
  assert(len == kSha256DigestBytes);
  Check(EVP_DigestInit_ex(impl_->ctx.get(), EVP_sha256(), nullptr), "EVP_DigestInit_ex");
  return d;
}

Sha256Digest Sha256(const void* data, size_t len) {
  Sha256Digest d;
  unsigned int out_len = 0;
  Check(EVP_Digest(data, len, d.data(), &out_len, EVP_sha256(), nullptr), "EVP_Digest");
  return d;
}

std::string ToHex(const Sha256Digest& digest) {
  static const char kHex[] = "0123456789abcdef";
  std::string s;
  s.reserve(2 * digest.size());
  for (uint8_t b : digest) {
    s.push_back(kHex[b >> 4]);
    s.push_back(kHex[b & 15]);
  }
  return s;
}

HmacSha256::HmacSha256(const Sha256Digest& key) {
  // A key shorter than the 64-byte block is zero-padded (RFC 2104).
  for (size_t i = 0; i < ipad_.size(); ++i) {
    const uint8_t k = i < key.size() ? key[i] : 0;
    ipad_[i] = k ^ 0x36;
    opad_[i] = k ^ 0x5c;
  }
  inner_.Update(ipad_.data(), ipad_.size());
}

HmacSha256::~HmacSha256() {
  OPENSSL_cleanse(ipad_.data(), ipad_.size());
  OPENSSL_cleanse(opad_.data(), opad_.size());
}

void HmacSha256::Update(const void* data, size_t len) { inner_.Update(data, len); }

Sha256Digest HmacSha256::Finish() {
  const Sha256Digest inner = inner_.Finish();
  Sha256Hasher outer;
  outer.Update(opad_.data(), opad_.size());
  outer.Update(inner.data(), inner.size());
  inner_.Update(ipad_.data(), ipad_.size());  // ready for the next message
  return outer.Finish();
}

}  // namespace fl
