#include "common/wire/envelope.h"

#include <algorithm>
#include <cstring>

#include "common/wire/reader.h"

namespace fl {
namespace wire {

const char* MessageTypeName(MessageType type) {
  switch (type) {
    case MessageType::kHello:
      return "HELLO";
    case MessageType::kTask:
      return "TASK";
    case MessageType::kUpdate:
      return "UPDATE";
    case MessageType::kAck:
      return "ACK";
    case MessageType::kReject:
      return "REJECT";
    case MessageType::kDone:
      return "DONE";
    case MessageType::kReady:
      return "READY";
  }
  return "UNKNOWN";
}

std::array<uint8_t, kNonceBytes> HelloStampNonce(uint64_t stamp) {
  std::array<uint8_t, kNonceBytes> nonce{};
  for (int i = 0; i < 8; ++i) nonce[i] = static_cast<uint8_t>(stamp >> (8 * i));
  return nonce;
}

uint64_t HelloStampOf(const std::array<uint8_t, kNonceBytes>& nonce) {
  uint64_t stamp = 0;
  for (int i = 0; i < 8; ++i) stamp |= static_cast<uint64_t>(nonce[i]) << (8 * i);
  return stamp;
}

bool IsValidSenderId(const std::string& id) {
  if (id.empty() || id.size() > kSenderIdBytes) return false;
  for (char c : id) {
    if (c <= 0x20 || c >= 0x7f) return false;
  }
  return true;
}

std::string EncodeEnvelope(const Envelope& env) {
  Writer w;
  w.PutBytes(kMagic, sizeof(kMagic));
  w.PutU16(env.version);
  w.PutU8(static_cast<uint8_t>(env.type));
  w.PutU8(env.flags);
  char sender[kSenderIdBytes] = {0};
  std::memcpy(sender, env.sender.data(), std::min(env.sender.size(), kSenderIdBytes));
  w.PutBytes(sender, kSenderIdBytes);
  w.PutU64(env.round);
  w.PutBytes(env.model_version.data(), kDigestBytes);
  w.PutBytes(env.nonce.data(), kNonceBytes);
  w.PutU64(env.payload_length);
  w.PutBytes(env.payload_digest.data(), kDigestBytes);
  w.PutBytes(env.signature.data(), kSignatureBytes);
  return w.Release();
}

Result<Envelope> DecodeEnvelope(const std::string& bytes) {
  if (bytes.size() != kEnvelopeBytes) {
    return Status::Corruption("envelope is " + std::to_string(bytes.size()) + " bytes, expected " +
                              std::to_string(kEnvelopeBytes));
  }
  Reader r(bytes.data(), bytes.size());
  Envelope env;
  char magic[4];
  uint8_t type = 0;
  char sender[kSenderIdBytes];
  // Sizes were checked above, so these reads cannot fail; they are still
  // checked so the reader's contract holds on its own.
  if (!r.GetBytes(magic, 4) || !r.GetU16(&env.version) || !r.GetU8(&type) || !r.GetU8(&env.flags) ||
      !r.GetBytes(sender, kSenderIdBytes) || !r.GetU64(&env.round) ||
      !r.GetBytes(env.model_version.data(), kDigestBytes) ||
      !r.GetBytes(env.nonce.data(), kNonceBytes) || !r.GetU64(&env.payload_length) ||
      !r.GetBytes(env.payload_digest.data(), kDigestBytes) ||
      !r.GetBytes(env.signature.data(), kSignatureBytes) || r.remaining() != 0) {
    return Status::Corruption("envelope truncated");
  }
  if (std::memcmp(magic, kMagic, 4) != 0) return Status::Corruption("envelope has bad magic");
  if (env.version != kProtocolVersion) {
    return Status::Corruption("protocol version " + std::to_string(env.version) +
                              " not supported (this build speaks " +
                              std::to_string(kProtocolVersion) + ")");
  }
  if (type < static_cast<uint8_t>(MessageType::kHello) ||
      type > static_cast<uint8_t>(MessageType::kReady)) {
    return Status::Corruption("unknown message type " + std::to_string(type));
  }
  env.type = static_cast<MessageType>(type);
  size_t len = 0;
  while (len < kSenderIdBytes && sender[len] != 0) ++len;
  env.sender.assign(sender, len);
  for (size_t i = len; i < kSenderIdBytes; ++i) {
    if (sender[i] != 0) return Status::Corruption("sender id has bytes after its terminator");
  }
  if (!IsValidSenderId(env.sender)) {
    return Status::Corruption("sender id is empty or not printable ASCII");
  }
  return env;
}

}  // namespace wire
}  // namespace fl
