// A TorchScript model file as it travels from the server to devices that do
// not have it: its bytes and an Ed25519 signature by the operator's (the
// server's) key. A device loads TorchScript only after VerifyModelCode: the
// TorchScript loader is a deserializer and never sees unsigned bytes.
//
// Signed message: SHA-256 of "fedge model code v1\n" followed by the file.
#ifndef FEDGE_CRYPTO_MODEL_CODE_H_
#define FEDGE_CRYPTO_MODEL_CODE_H_

#include <string>

#include "common/status.h"
#include "crypto/ed25519.h"

namespace fl {

// "torchscript:" and the first 16 hex digits of the SHA-256 of `code`: how a
// federation names a TorchScript model (Model::architecture).
std::string ModelCodeId(const std::string& code);

// The signature a server sends with `code`.
Ed25519Signature SignModelCode(const std::string& code, const SigningKey& key);

// OK when `signature` is `key`'s over `code` and `code` is the model
// `architecture` names. Unauthenticated for a bad signature, InvalidArgument
// for a file that is not the one named.
Status VerifyModelCode(const std::string& code, const Ed25519Signature& signature,
                       const Ed25519PublicKey& key, const std::string& architecture);

}  // namespace fl

#endif  // FEDGE_CRYPTO_MODEL_CODE_H_
