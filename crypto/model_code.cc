#include "crypto/model_code.h"

#include "common/content_id.h"

#include "crypto/sha256.h"

namespace fl {
namespace {

Sha256Digest SignedDigest(const std::string& code) {
  return Sha256("fedge model code v1\n" + code);
}

}  // namespace

std::string ModelCodeId(const std::string& code) { return ScriptModelId(code); }

Ed25519Signature SignModelCode(const std::string& code, const SigningKey& key) {
  const Sha256Digest d = SignedDigest(code);
  return key.Sign(d.data(), d.size());
}

Status VerifyModelCode(const std::string& code, const Ed25519Signature& signature,
                       const Ed25519PublicKey& key, const std::string& architecture) {
  auto verifier = Ed25519Verifier::Create(key);
  if (!verifier.ok()) return verifier.status();
  const Sha256Digest d = SignedDigest(code);
  if (!verifier->Verify(d.data(), d.size(), signature).ok()) {
    return Status::Unauthenticated("model code",
                                   "the signature is not the server's: the file is not loaded");
  }
  if (ModelCodeId(code) != architecture) {
    return Status::InvalidArgument("model code", "the file is " + ModelCodeId(code) +
                                                     ", the federation trains " + architecture);
  }
  return Status::OK();
}

}  // namespace fl
