// Ed25519 signatures (RFC 8032) over OpenSSL's EVP interface, and the PEM key
// files fl-keygen writes.
//
// Keys are RAII-wrapped EVP_PKEYs; raw private key bytes are wiped with
// OPENSSL_cleanse after use; signature and key comparisons are constant-time.
// A node id is the fingerprint of its public key: the first 16 bytes of
// SHA-256(raw public key) in hex, 32 characters (it fits the envelope's sender id).
#ifndef FEDGE_CRYPTO_ED25519_H_
#define FEDGE_CRYPTO_ED25519_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "common/status.h"

namespace fl {

constexpr size_t kEd25519PublicKeyBytes = 32;
constexpr size_t kEd25519PrivateKeyBytes = 32;
constexpr size_t kEd25519SignatureBytes = 64;

using Ed25519PublicKey = std::array<uint8_t, kEd25519PublicKeyBytes>;
using Ed25519Signature = std::array<uint8_t, kEd25519SignatureBytes>;

// A private signing key. Move-only; the key material is freed (and wiped by
// OpenSSL) with the object.
class SigningKey final {
 public:
  // A new random key.
  static Result<SigningKey> Generate();
  // From the 32-byte RFC 8032 seed (for known-answer tests).
  static Result<SigningKey> FromSeed(const uint8_t* seed, size_t len);
  // Reads a PKCS#8 PEM private key. Refuses a file readable or writable by
  // group or others (mode must be 0600 or stricter), a key of another type, and
  // a corrupt file, each with a message naming the file.
  static Result<SigningKey> LoadPem(const std::string& path);
  // Parses PKCS#8 PEM text already read (`name` is used in messages); the type
  // and corruption checks of LoadPem.
  static Result<SigningKey> FromPem(const std::string& name, const std::string& pem);

  SigningKey(SigningKey&&) noexcept;
  SigningKey& operator=(SigningKey&&) noexcept;
  ~SigningKey();

  // Signs `len` bytes. Returns the 64-byte signature.
  Ed25519Signature Sign(const void* data, size_t len) const;

  const Ed25519PublicKey& public_key() const { return public_; }

  // Writes the private key as PKCS#8 PEM with mode 0600 (temp file, fsync, rename).
  Status SavePem(const std::string& path) const;
  // The PKCS#8 PEM text; the caller wipes it (OPENSSL_cleanse) when done.
  Result<std::string> ToPem() const;

 private:
  struct Handle;
  explicit SigningKey(std::unique_ptr<Handle> h, const Ed25519PublicKey& pub);
  std::unique_ptr<Handle> h_;
  Ed25519PublicKey public_{};
};

// Verifies `sig` over `len` bytes with `pub`. Unauthenticated when it does not verify.
[[nodiscard]] Status Ed25519Verify(const Ed25519PublicKey& pub, const void* data, size_t len,
                                   const Ed25519Signature& sig);

// A public key prepared once for many checks: the server keeps one per
// enrolled device, so a verification does not rebuild the key each time.
// Copies share the prepared key; Verify may be called from several threads.
class Ed25519Verifier final {
 public:
  static Result<Ed25519Verifier> Create(const Ed25519PublicKey& pub);
  [[nodiscard]] Status Verify(const void* data, size_t len, const Ed25519Signature& sig) const;
  const Ed25519PublicKey& public_key() const { return public_; }

 private:
  struct Handle;
  Ed25519Verifier(std::shared_ptr<const Handle> h, const Ed25519PublicKey& pub)
      : h_(std::move(h)), public_(pub) {}
  std::shared_ptr<const Handle> h_;
  Ed25519PublicKey public_{};
};

// Public key files: SubjectPublicKeyInfo PEM. Errors name the file and the problem.
Status SavePublicKeyPem(const std::string& path, const Ed25519PublicKey& pub);
Result<std::string> PublicKeyPem(const Ed25519PublicKey& pub);
Result<Ed25519PublicKey> LoadPublicKeyPem(const std::string& path);
Result<Ed25519PublicKey> PublicKeyFromPem(const std::string& name, const std::string& pem);

// Reads a private key file, refusing one that group or others may access; the
// caller wipes the returned text (OPENSSL_cleanse) when done.
Result<std::string> ReadPrivateKeyFile(const std::string& path);

// The node id of a public key (32 hex characters).
std::string NodeId(const Ed25519PublicKey& pub);

}  // namespace fl

#endif  // FEDGE_CRYPTO_ED25519_H_
