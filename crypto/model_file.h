// The compressed model file (.flm): what fl-compress writes and fl-server starts
// a federation from.
//
// Layout (integers little-endian), as LevelDB's log_format.h:
//   magic "FLM1" (4) | format version u32 (4) | architecture: length u32 + bytes
//   | tensor count u32
//   per tensor: name: length u32 + bytes | ndims u32 | dims: ndims x u64
//               | has_mask u8 | mask bitmap: ceil(n / 8) bytes when has_mask
//                 (bit k of byte k/8, least significant first, 1 = kept; padding 0)
//               | values: length u64 + a quantized block (common/quant_codec.h)
//                 holding the kept values: 32 bits (fp32) or 8 bits with one
//                 scale per block (int8, for deployment)
//   | formats 3 and 4 only: metadata length u32 + text, "key=value" lines:
//     "normalize=m,s[,m,s...]" (the input normalisation the model was trained
//     with) and "class=NAME" (one per class, in label order)
//   | SHA-256 of all preceding bytes (32)
//   | signed files (format version 2, or 4 with metadata) only: signer's
//     Ed25519 public key (32)
//     | Ed25519 signature over the SHA-256 above (64)
// Formats 1 (unsigned) and 2 (signed) have no metadata; a file is written in
// them whenever it has none, so such files read as before.
// The digest is the file's version hash. Because it covers the format version,
// a signature cannot be stripped without changing the version. The loader
// checks the digest first, then the signature (against a pinned key when the
// caller has one), then every length against what is left, the mask against
// the shape, and the value count against the mask.
#ifndef FEDGE_CRYPTO_MODEL_FILE_H_
#define FEDGE_CRYPTO_MODEL_FILE_H_

#include <array>
#include <cstdint>
#include <optional>
#include <string>

#include "common/dataset.h"
#include "common/model_state.h"
#include "common/status.h"
#include "crypto/ed25519.h"

namespace fl {

// What a model file says about the data its model takes.
struct ModelFileMeta {
  // The input normalisation it was trained with (empty: not recorded).
  Normalization normalization;
  // Its class names by label index (empty: numeric labels, or not recorded).
  std::vector<std::string> class_names;

  bool empty() const { return normalization.empty() && class_names.empty(); }
};

struct ModelFileOptions {
  // 32: kept values as fp32. 8: int8 with one fp32 scale per `block` values
  // (nearest rounding), about 4x smaller, for deployment.
  int value_bits{32};
  uint32_t block{256};
  // Recorded in the file (formats 3 and 4) when not empty.
  ModelFileMeta meta;
};

// Serializes `state` (values at pruned positions must be 0), signed by
// `signer` when one is given.
std::string EncodeModelFile(const ModelState& state, const ModelFileOptions& options,
                            const SigningKey* signer = nullptr);

// Parses and verifies a model file held in memory. `name` is used in messages.
// A signed file's signature is always checked. With `trusted_signer`, the file
// must also be signed, by that key: an unsigned file or another signer is
// Unauthenticated.
// `meta` (when given) gets the file's metadata (empty for formats 1 and 2).
Result<ModelState> DecodeModelFile(const std::string& name, const std::string& bytes,
                                   const Ed25519PublicKey* trusted_signer = nullptr,
                                   ModelFileMeta* meta = nullptr);

// Writes durably (temp file, fsync, rename) / reads and verifies a file.
Status WriteModelFile(const std::string& path, const ModelState& state,
                      const ModelFileOptions& options, const SigningKey* signer = nullptr);
Result<ModelState> ReadModelFile(const std::string& path,
                                 const Ed25519PublicKey* trusted_signer = nullptr,
                                 ModelFileMeta* meta = nullptr);

// The signer of an encoded model file (nullopt when unsigned); the signature
// itself is checked by DecodeModelFile.
Result<std::optional<Ed25519PublicKey>> ModelFileSigner(const std::string& bytes);

// The version hash of an encoded model file (its trailing SHA-256).
Result<std::array<uint8_t, 32>> ModelFileVersion(const std::string& bytes);

}  // namespace fl

#endif  // FEDGE_CRYPTO_MODEL_FILE_H_
