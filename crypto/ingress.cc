#include "crypto/ingress.h"

#include <openssl/crypto.h>

#include "common/clock.h"
#include "crypto/message.h"

namespace fl {

std::variant<VerifiedMessage, Refusal> Authenticate(size_t frame_count,
                                                    std::vector<std::string>* frames,
                                                    const std::string& transport_key,
                                                    const IngressPolicy& policy,
                                                    double* auth_seconds) {
  if (frame_count != 2 || frames->size() != 2) {
    return Refusal{"bad_frames",
                   "expected 2 frames (envelope, payload), got " + std::to_string(frame_count),
                   std::nullopt};
  }
  const std::string& envelope = (*frames)[0];
  std::string* payload = &(*frames)[1];
  auto env = ParseMessage(envelope, *payload, policy.max_frame_bytes);
  if (!env.ok()) return Refusal{"bad_envelope", env.status().message(), std::nullopt};
  const size_t limit =
      policy.payload_limit ? policy.payload_limit(env->type) : policy.max_frame_bytes;
  if (payload->size() > limit) {
    return Refusal{"too_large",
                   std::string(wire::MessageTypeName(env->type)) + " payload of " +
                       std::to_string(payload->size()) + " bytes exceeds its limit of " +
                       std::to_string(limit),
                   *env};
  }
  double spent = 0;
  if (policy.sender) {
    const std::optional<KnownSender> known = policy.sender(env->sender);
    if (!known || !known->verifier) {
      return Refusal{"not_enrolled", "node id is not in the enrollment folder", *env};
    }
    const double t0 = NowSeconds();
    Status st = VerifyMessageSignature(envelope, *known->verifier);
    spent += NowSeconds() - t0;
    if (!st.ok()) {
      if (auth_seconds) *auth_seconds += spent;
      return Refusal{"bad_signature", st.message(), *env};
    }
    if (known->check_transport &&
        (!known->transport_key || transport_key.size() != known->transport_key->size() ||
         CRYPTO_memcmp(transport_key.data(), known->transport_key->data(), transport_key.size()) !=
             0)) {
      if (auth_seconds) *auth_seconds += spent;
      return Refusal{
          "key_mismatch",
          "signed by this node but sent over a connection authenticated as another device", *env};
    }
  }
  const double t1 = NowSeconds();
  Status digest = CheckPayloadDigest(*env, *payload);
  spent += NowSeconds() - t1;
  if (auth_seconds) *auth_seconds += spent;
  if (!digest.ok()) return Refusal{"bad_digest", digest.message(), *env};
  return VerifiedMessage(std::move(*env), payload);
}

}  // namespace fl
