// A node's identity: an Ed25519 signing key (who signed a message) and a
// Curve25519 transport key (who is at the other end of an encrypted ZeroMQ
// CURVE connection), and the two files fl-keygen keeps them in.
//
//   NAME.key (mode 0600)                 NAME.pub (copy to the server or clients)
//     -----BEGIN PRIVATE KEY-----           -----BEGIN PUBLIC KEY-----
//     (Ed25519, PKCS#8)                     (Ed25519, SubjectPublicKeyInfo)
//     -----END PRIVATE KEY-----             -----END PUBLIC KEY-----
//     curve-secret-key: <Z85, 40 chars>     curve-public-key: <Z85, 40 chars>
//
// The PEM blocks are standard, so `openssl pkey -in NAME.key` reads them; the
// CURVE line is the Z85 text ZeroMQ tools use. Curve25519 keys are generated
// with OpenSSL's X25519, the same function ZeroMQ's CURVE (crypto_box) uses.
#ifndef FEDGE_CRYPTO_IDENTITY_H_
#define FEDGE_CRYPTO_IDENTITY_H_

#include <array>
#include <cstdint>
#include <optional>
#include <string>

#include "common/status.h"
#include "crypto/ed25519.h"

namespace fl {

constexpr size_t kCurveKeyBytes = 32;
using CurveKey = std::array<uint8_t, kCurveKeyBytes>;

// Z85 (ZeroMQ RFC 32). Encode takes a multiple of 4 bytes; Decode refuses a
// length that is not a multiple of 5 and characters outside the alphabet.
std::string Z85Encode(const uint8_t* data, size_t len);
Result<std::string> Z85Decode(const std::string& text);

// The key as raw bytes, the form transport::CurveOptions takes.
std::string KeyBytes(const CurveKey& key);

// A CURVE key pair; the secret half is wiped on destruction.
struct CurveKeyPair {
  CurveKey public_key{};
  CurveKey secret_key{};
  CurveKeyPair() = default;
  CurveKeyPair(const CurveKeyPair&) = default;
  CurveKeyPair& operator=(const CurveKeyPair&) = default;
  ~CurveKeyPair();
};

Result<CurveKeyPair> GenerateCurveKeyPair();
// The public key of a Curve25519 secret key (X25519 with the base point).
Result<CurveKey> CurvePublicFromSecret(const CurveKey& secret);

// A node's private identity, from NAME.key.
struct Identity {
  SigningKey signing;
  // Absent in key files written before fedge had transport keys.
  std::optional<CurveKeyPair> curve;
};

// A node's public identity, from NAME.pub.
struct PublicIdentity {
  Ed25519PublicKey signing{};
  std::optional<CurveKey> curve;
};

// Writes DIR/NAME.key (0600) and DIR/NAME.pub atomically. Never replaces an
// existing key file (or a symbolic link in its place): InvalidArgument then.
Status SaveIdentity(const std::string& key_path, const std::string& pub_path,
                    const SigningKey& signing, const CurveKeyPair& curve);

// Writes only NAME.pub (e.g. straight into an enrollment folder).
Status SavePublicIdentity(const std::string& pub_path, const Ed25519PublicKey& signing,
                          const CurveKey& curve);

// Reads NAME.key: the permission, type and corruption checks of
// SigningKey::LoadPem, plus the CURVE line when present (a malformed one is an
// error naming the file).
Result<Identity> LoadIdentity(const std::string& key_path);

// Reads NAME.pub (an Ed25519 PEM public key, plus the CURVE line when present).
Result<PublicIdentity> LoadPublicIdentity(const std::string& pub_path);

// Same as LoadIdentity / LoadPublicIdentity, but a missing CURVE key is an
// error that says how to make one (for nodes that must use encrypted transport).
Result<Identity> LoadIdentityWithCurve(const std::string& key_path);
Result<PublicIdentity> LoadPublicIdentityWithCurve(const std::string& pub_path);

}  // namespace fl

#endif  // FEDGE_CRYPTO_IDENTITY_H_
