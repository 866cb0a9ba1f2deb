// The one path from received frames to a message whose payload may be decoded.
//
// Receive order (DESIGN.md invariant): bound, authenticate, decode. Authenticate
// does the first two, cheapest check first: the frame count, the envelope
// (bounds-checked), the payload's size for its type, the sender and its
// signature (over the envelope, which carries the payload's digest), the
// transport key of the connection, and only then the payload's SHA-256. What
// passes is a VerifiedMessage, and a VerifiedMessage is the only thing the
// server's and the client's handlers take: its payload is reachable through
// Decode alone, so "authenticated before decoded" is a type, not a convention.
// What fails is a Refusal: the REJECT reason code and a message a person can
// act on.
#ifndef FEDGE_CRYPTO_INGRESS_H_
#define FEDGE_CRYPTO_INGRESS_H_

#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "common/status.h"
#include "common/wire/envelope.h"
#include "common/wire/serialize.h"
#include "crypto/ed25519.h"

namespace fl {

// Why a message was refused.
struct Refusal {
  // bad_frames, bad_envelope, too_large, not_enrolled, bad_signature,
  // key_mismatch, bad_digest (docs/errors.md).
  std::string reason;
  std::string message;
  // The envelope, when it parsed (for the REJECT's type and round).
  std::optional<wire::Envelope> envelope;
};

struct IngressPolicy;
class VerifiedMessage;
// Bound and authenticate a received message: the sender sent `frame_count`
// frames, of which `*frames` holds those received; frame 0 is the envelope,
// frame 1 the payload (which the VerifiedMessage refers to). It came over a
// connection whose authenticated transport key is `transport_key` (empty for
// plaintext). `*auth_seconds` (may be null) gets the time spent on the
// signature and the digest added.
std::variant<VerifiedMessage, Refusal> Authenticate(size_t frame_count,
                                                    std::vector<std::string>* frames,
                                                    const std::string& transport_key,
                                                    const IngressPolicy& policy,
                                                    double* auth_seconds);

// A message that passed bound and authenticate.
class VerifiedMessage {
 public:
  const wire::Envelope& envelope() const { return env_; }
  size_t payload_size() const { return payload_->size(); }

  // Decodes the payload into `out` (wire/serialize.h).
  template <class T>
  [[nodiscard]] Status Decode(T* out) const {
    return wire::Decode(*payload_, out);
  }

  // Frees the payload's bytes (a TASK's model, once decoded).
  void ReleasePayload() { std::string().swap(*payload_); }

 private:
  friend std::variant<VerifiedMessage, Refusal> Authenticate(size_t, std::vector<std::string>*,
                                                             const std::string&,
                                                             const IngressPolicy&, double*);
  VerifiedMessage(wire::Envelope env, std::string* payload)
      : env_(std::move(env)), payload_(payload) {}
  wire::Envelope env_;
  std::string* payload_;  // the received frame; not owned
};

// A sender the receiver knows.
struct KnownSender {
  // Checks the sender's signature. Not owned.
  const Ed25519Verifier* verifier{nullptr};
  // When true, the connection's authenticated transport (CURVE) key must be
  // `transport_key`: a message signed by one device but sent over another
  // device's connection is refused (key_mismatch).
  bool check_transport{false};
  std::optional<std::array<uint8_t, 32>> transport_key;
};

struct IngressPolicy {
  // No payload above this is even parsed.
  size_t max_frame_bytes{64u << 20};
  // The largest payload a message of a type may have.
  std::function<size_t(wire::MessageType)> payload_limit;
  // Who signs: the sender named by an envelope (nullopt = unknown:
  // not_enrolled). Unset = messages are not authenticated (a lab run without
  // identities); the payload digest is still checked.
  std::function<std::optional<KnownSender>(const std::string& sender)> sender;
};

}  // namespace fl

#endif  // FEDGE_CRYPTO_INGRESS_H_
