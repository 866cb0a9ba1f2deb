#include "crypto/message.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "common/wire/serialize.h"
#include "crypto/ed25519.h"
#include "crypto/sha256.h"

namespace fl {

namespace {

// Bytes of the envelope covered by the signature: everything before the slot.
constexpr size_t kSignedBytes = wire::kEnvelopeBytes - wire::kSignatureBytes;

}  // namespace

SealedMessage SealMessage(wire::Envelope env, std::string payload, const SigningKey* signer) {
  env.payload_length = payload.size();
  env.payload_digest = Sha256(payload);
  return SealedMessage{SealEnvelope(env, signer), std::move(payload)};
}

std::string SealEnvelope(wire::Envelope env, const SigningKey* signer) {
  env.signature.fill(0);
  if (signer == nullptr) {
    env.flags &= static_cast<uint8_t>(~kFlagSigned);
    return wire::EncodeEnvelope(env);
  }
  env.flags |= kFlagSigned;
  std::string bytes = wire::EncodeEnvelope(env);
  const Ed25519Signature sig = signer->Sign(bytes.data(), kSignedBytes);
  std::memcpy(&bytes[kSignedBytes], sig.data(), sig.size());
  return bytes;
}

namespace {

// The signature slot of a signed envelope, or Unauthenticated.
Result<Ed25519Signature> SignatureOf(const std::string& envelope) {
  if (envelope.size() != wire::kEnvelopeBytes) {
    return Status::Unauthenticated("envelope has the wrong size for a signature check");
  }
  if (!(static_cast<uint8_t>(envelope[7]) & kFlagSigned)) {
    return Status::Unauthenticated("message is not signed");
  }
  Ed25519Signature sig;
  std::memcpy(sig.data(), envelope.data() + kSignedBytes, sig.size());
  return sig;
}

}  // namespace

Status VerifyMessageSignature(const std::string& envelope,
                              const std::array<uint8_t, 32>& signer_key) {
  auto sig = SignatureOf(envelope);
  if (!sig.ok()) return sig.status();
  return Ed25519Verify(signer_key, envelope.data(), kSignedBytes, *sig);
}

Status VerifyMessageSignature(const std::string& envelope, const Ed25519Verifier& signer) {
  auto sig = SignatureOf(envelope);
  if (!sig.ok()) return sig.status();
  return signer.Verify(envelope.data(), kSignedBytes, *sig);
}

Result<wire::Envelope> OpenMessage(const std::string& envelope, const std::string& payload,
                                   size_t max_payload_bytes) {
  auto env = ParseMessage(envelope, payload, max_payload_bytes);
  if (!env.ok()) return env;
  FL_RETURN_IF_ERROR(CheckPayloadDigest(*env, payload));
  return env;
}

Result<wire::Envelope> ParseMessage(const std::string& envelope, const std::string& payload,
                                    size_t max_payload_bytes) {
  if (payload.size() > max_payload_bytes) {
    return Status::InvalidArgument("payload of " + std::to_string(payload.size()) +
                                   " bytes exceeds the limit of " +
                                   std::to_string(max_payload_bytes));
  }
  auto env = wire::DecodeEnvelope(envelope);
  if (!env.ok()) return env.status();
  if (env->payload_length != payload.size()) {
    return Status::Corruption("envelope declares a " + std::to_string(env->payload_length) +
                              "-byte payload, frame holds " + std::to_string(payload.size()));
  }
  return env;
}

Status CheckPayloadDigest(const wire::Envelope& env, const std::string& payload) {
  const Sha256Digest digest = Sha256(payload);
  if (CRYPTO_memcmp(digest.data(), env.payload_digest.data(), digest.size()) != 0) {
    return Status::Unauthenticated("payload SHA-256 does not match the envelope");
  }
  return Status::OK();
}

std::array<uint8_t, wire::kNonceBytes> RandomNonce() {
  std::array<uint8_t, wire::kNonceBytes> n{};
  if (RAND_bytes(n.data(), static_cast<int>(n.size())) != 1) {
    std::fprintf(stderr, "fatal: OpenSSL's random generator failed\n");
    std::abort();
  }
  return n;
}

std::array<uint8_t, 32> ModelVersion(const ModelState& state) {
  return Sha256(wire::Encode(state));
}

std::array<uint8_t, 32> ModelVersion(const wire::CompactModel& model) {
  // Streamed: the encoding is as large as the model and never held.
  Sha256Hasher hasher;
  wire::EncodeTo(model, [&hasher](const char* p, size_t n) { hasher.Update(p, n); });
  return hasher.Finish();
}

std::string ShortVersion(const std::array<uint8_t, 32>& version) {
  return ToHex(version).substr(0, 12);
}

}  // namespace fl
