#include "crypto/message.h"

#include <openssl/crypto.h>

#include "common/wire/serialize.h"
#include "crypto/sha256.h"

namespace fl {

SealedMessage SealMessage(wire::Envelope env, std::string payload) {
  env.payload_length = payload.size();
  env.payload_digest = Sha256(payload);
  return SealedMessage{wire::EncodeEnvelope(env), std::move(payload)};
}

Result<wire::Envelope> OpenMessage(const std::string& envelope, const std::string& payload,
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
  const Sha256Digest digest = Sha256(payload);
  if (CRYPTO_memcmp(digest.data(), env->payload_digest.data(), digest.size()) != 0) {
    return Status::Unauthenticated("payload SHA-256 does not match the envelope");
  }
  return env;
}

std::array<uint8_t, 32> ModelVersion(const ModelState& state) {
  return Sha256(wire::Encode(state));
}

std::array<uint8_t, 32> ModelVersion(const wire::CompactModel& model) {
  return Sha256(wire::Encode(model));
}

std::string ShortVersion(const std::array<uint8_t, 32>& version) {
  return ToHex(version).substr(0, 12);
}

}  // namespace fl
