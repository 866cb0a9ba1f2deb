// Encoding of model deltas for the UPDATE message.
//
// The dense fp32 codec ("fp32") is the uncompressed baseline: every parameter's
// delta in canonical order (tensor order, row-major) as little-endian float32,
// 4 bytes a value, nothing else. Its size is an exact function of the value
// count, and the decoder checks it.
#ifndef FEDGE_COMMON_CODEC_H_
#define FEDGE_COMMON_CODEC_H_

#include <string>
#include <vector>

#include "common/status.h"

namespace fl {

// Encodes `values` with the dense fp32 codec.
std::string EncodeDenseFp32(const std::vector<float>& values);

// Decodes `data` holding exactly `expected_count` values. Corruption when the
// size differs or a value is NaN or infinite.
Status DecodeDenseFp32(const std::string& data, size_t expected_count, std::vector<float>* out);

}  // namespace fl

#endif  // FEDGE_COMMON_CODEC_H_
