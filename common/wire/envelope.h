// The fixed-size envelope that is frame 0 of every fedge message.
//
// A message on the wire is two ZeroMQ frames: the envelope and the payload. The
// envelope is parsed with a bounds-checked reader before anything else; it says
// who sent what, for which round and model, and how long the payload is, and it
// carries the payload's SHA-256 and a signature slot (all zero when unsigned).
//
// Layout (200 bytes, integers little-endian), as LevelDB's log_format.h:
//   magic "FEDG" (4) | protocol version u16 (2) | message type u8 (1) | flags u8 (1)
//   sender id (32, ASCII, zero-padded) | round u64 (8) | model version (32)
//   round nonce (16) | payload length u64 (8) | payload SHA-256 (32) | signature (64)
//
// The round nonce is drawn at random by the server when it opens a round and
// sent in that round's TASKs; an UPDATE must carry it back. Because it is
// covered by the signature, a captured update cannot be replayed into another
// round, even one with the same number after a server restart.
#ifndef FEDGE_COMMON_WIRE_ENVELOPE_H_
#define FEDGE_COMMON_WIRE_ENVELOPE_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>

#include "common/status.h"

namespace fl {
namespace wire {

constexpr char kMagic[4] = {'F', 'E', 'D', 'G'};
// Bumped on any incompatible change to the envelope or the payloads.
constexpr uint16_t kProtocolVersion = 2;
constexpr size_t kSenderIdBytes = 32;
constexpr size_t kDigestBytes = 32;
constexpr size_t kSignatureBytes = 64;
constexpr size_t kNonceBytes = 16;
constexpr size_t kEnvelopeBytes = 4 + 2 + 1 + 1 + kSenderIdBytes + 8 + kDigestBytes + kNonceBytes +
                                  8 + kDigestBytes + kSignatureBytes;
static_assert(kEnvelopeBytes == 200, "envelope layout changed; update the comment above");

enum class MessageType : uint8_t {
  kHello = 1,   // client -> server: register / heartbeat
  kTask = 2,    // server -> client: train this model for this round
  kUpdate = 3,  // client -> server: the delta from local training
  kAck = 4,     // server -> client: message accepted
  kReject = 5,  // server -> client: message refused, with a reason
  kDone = 6,    // server -> client: the federation is over, exit
  kReady = 7,   // client -> server: my update is ready, may I send it?
};

// Flag bit 1 of Envelope::flags: the sender reads payload extensions
// (messages.h, "Optional fields"), so a peer may attach them to what it sends
// back. (Bit 0, kFlagSigned, is crypto/message.h's.)
constexpr uint8_t kFlagReadsExtensions = 0x02;

// Returns "HELLO", "TASK", ... or "UNKNOWN".
const char* MessageTypeName(MessageType type);

// Decoded envelope: plain values.
struct Envelope {
  uint16_t version{kProtocolVersion};
  MessageType type{MessageType::kHello};
  uint8_t flags{0};
  std::string sender;  // at most kSenderIdBytes ASCII bytes
  uint64_t round{0};
  std::array<uint8_t, kDigestBytes> model_version{};
  std::array<uint8_t, kNonceBytes> nonce{};
  uint64_t payload_length{0};
  std::array<uint8_t, kDigestBytes> payload_digest{};
  std::array<uint8_t, kSignatureBytes> signature{};
};

// Serializes `env` to exactly kEnvelopeBytes. The sender id must be at most
// kSenderIdBytes long (checked by the caller; longer ids are truncated).
std::string EncodeEnvelope(const Envelope& env);

// Parses exactly kEnvelopeBytes. Corruption on wrong size, bad magic, unknown
// protocol version or message type, or a sender id with non-printable bytes.
Result<Envelope> DecodeEnvelope(const std::string& bytes);

// A sender id is 1..32 printable ASCII bytes without spaces.
bool IsValidSenderId(const std::string& id);

// A HELLO's freshness stamp, carried in its nonce field: microseconds since
// the Unix epoch, little-endian in the first 8 bytes (the rest zero), strictly
// increasing over the HELLOs of one client process. 0 = no stamp (clients
// before protocol note 2026-11-28). The server lets a HELLO move a client to
// another connection only if its stamp is newer than the last one it saw
// from that node, so a HELLO replayed from another connection cannot take a
// live device's route.
std::array<uint8_t, kNonceBytes> HelloStampNonce(uint64_t stamp);
uint64_t HelloStampOf(const std::array<uint8_t, kNonceBytes>& nonce);

}  // namespace wire
}  // namespace fl

#endif  // FEDGE_COMMON_WIRE_ENVELOPE_H_
