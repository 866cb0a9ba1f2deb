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
//   | SHA-256 of all preceding bytes (32)
// The digest is the file's version hash. The loader checks the digest first,
// then every length against what is left, the mask against the shape, and
// the value count against the mask.
#ifndef FEDGE_CRYPTO_MODEL_FILE_H_
#define FEDGE_CRYPTO_MODEL_FILE_H_

#include <array>
#include <cstdint>
#include <string>

#include "common/model_state.h"
#include "common/status.h"

namespace fl {

struct ModelFileOptions {
  // 32: kept values as fp32. 8: int8 with one fp32 scale per `block` values
  // (nearest rounding), about 4x smaller, for deployment.
  int value_bits{32};
  uint32_t block{256};
};

// Serializes `state` (values at pruned positions must be 0).
std::string EncodeModelFile(const ModelState& state, const ModelFileOptions& options);

// Parses and verifies a model file held in memory. `name` is used in messages.
Result<ModelState> DecodeModelFile(const std::string& name, const std::string& bytes);

// Writes durably (temp file, fsync, rename) / reads and verifies a file.
Status WriteModelFile(const std::string& path, const ModelState& state,
                      const ModelFileOptions& options);
Result<ModelState> ReadModelFile(const std::string& path);

// The version hash of an encoded model file (its trailing SHA-256).
Result<std::array<uint8_t, 32>> ModelFileVersion(const std::string& bytes);

}  // namespace fl

#endif  // FEDGE_CRYPTO_MODEL_FILE_H_
