// Sealing and opening fedge messages: the envelope plus its payload.
//
// Receive order (DESIGN.md invariant): bound, authenticate, decode. OpenMessage
// is the first two steps: it refuses a payload above the size limit for its
// type, parses the fixed-size envelope with a bounds-checked reader, checks the
// declared payload length against the frame and the payload's SHA-256 against
// the envelope; only then may the caller hand the payload to a decoder.
// (Signatures fill the envelope's signature slot once identities exist.)
#ifndef FEDGE_CRYPTO_MESSAGE_H_
#define FEDGE_CRYPTO_MESSAGE_H_

#include <string>

#include "common/model_state.h"
#include "common/status.h"
#include "common/wire/compact.h"
#include "common/wire/envelope.h"

namespace fl {

// A message ready for the wire: frame 0 and frame 1.
struct SealedMessage {
  std::string envelope;
  std::string payload;
};

class SigningKey;
class Ed25519Verifier;

// Flag bit set in Envelope::flags when the signature slot holds a signature.
constexpr uint8_t kFlagSigned = 0x01;

// Fills in `env.payload_length` and `env.payload_digest` from `payload` and
// encodes the envelope. With a `signer`, sets kFlagSigned and signs every
// envelope byte before the signature slot (protocol version, type, flags,
// sender, round, model version, payload length and the payload's SHA-256).
SealedMessage SealMessage(wire::Envelope env, std::string payload,
                          const SigningKey* signer = nullptr);

// Encodes `env`, whose payload length and digest are already filled in, and
// with a `signer` sets kFlagSigned and signs it. SealMessage's second half, for
// senders that hash a payload once and send it many times.
std::string SealEnvelope(wire::Envelope env, const SigningKey* signer);

// Checks the Ed25519 signature of an encoded envelope (the bytes OpenMessage
// accepted) against `signer_key`. Unauthenticated when the envelope is not
// signed or the signature does not verify.
[[nodiscard]] Status VerifyMessageSignature(const std::string& envelope,
                                            const std::array<uint8_t, 32>& signer_key);
// The same with a prepared key (the server keeps one per enrolled device).
[[nodiscard]] Status VerifyMessageSignature(const std::string& envelope,
                                            const Ed25519Verifier& signer);

// Checks a received envelope/payload pair; see the file comment.
// `max_payload_bytes` bounds the payload of any type. ParseMessage followed by
// CheckPayloadDigest.
Result<wire::Envelope> OpenMessage(const std::string& envelope, const std::string& payload,
                                   size_t max_payload_bytes);

// The cheap half of OpenMessage: the size bound, the envelope parsed, and its
// declared payload length against the frame. Nothing is hashed, so a receiver
// can refuse by type, size and signature (which covers the payload digest)
// before it spends a hash on a payload.
Result<wire::Envelope> ParseMessage(const std::string& envelope, const std::string& payload,
                                    size_t max_payload_bytes);

// The payload's SHA-256 against the envelope's digest (Unauthenticated if not).
Status CheckPayloadDigest(const wire::Envelope& envelope, const std::string& payload);

// 16 bytes from OpenSSL's CSPRNG (a round nonce).
std::array<uint8_t, wire::kNonceBytes> RandomNonce();

// The content address of a model: SHA-256 of its canonical serialization.
std::array<uint8_t, 32> ModelVersion(const ModelState& state);

// The version of a model as sent in a TASK: SHA-256 of the encoded CompactModel,
// which the client can check against what it received.
std::array<uint8_t, 32> ModelVersion(const wire::CompactModel& model);

// Short hex form of a version for logs (first 12 hex characters).
std::string ShortVersion(const std::array<uint8_t, 32>& version);

}  // namespace fl

#endif  // FEDGE_CRYPTO_MESSAGE_H_
