// The model as it travels in a TASK: per tensor its shape, its mask as a bitmap
// and only its kept values, as fp32 or fp16. Download bytes shrink with
// sparsity (and halve again with fp16).
//
// Per tensor: mask_bits is empty for a dense tensor, else ceil(n / 8) bytes,
// bit k of byte k/8 (least significant first) = 1 when value k is kept, with
// the padding bits zero; values holds the kept values in row-major order,
// 4 bytes each (fp32) or 2 (fp16), little-endian.
#ifndef FEDGE_COMMON_WIRE_COMPACT_H_
#define FEDGE_COMMON_WIRE_COMPACT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "common/model_state.h"
#include "common/status.h"

namespace fl {
namespace wire {

enum class ValueFormat : uint8_t { kFp32 = 0, kFp16 = 1 };

// Parses "fp32" or "fp16".
Result<ValueFormat> ParseValueFormat(const std::string& name);
const char* ValueFormatName(ValueFormat f);

struct CompactTensor {
  std::string name;
  std::vector<int64_t> shape;
  std::string mask_bits;
  std::string values;
};

struct CompactModel {
  std::string architecture;
  uint8_t format{0};  // a ValueFormat
  std::vector<CompactTensor> tensors;
};

// Packs `state` for the wire.
CompactModel Compact(const ModelState& state, ValueFormat format);

// Unpacks and validates: shapes, bitmap length and padding, value count equal
// to the bitmap's popcount, finite values. Corruption naming the tensor.
Status Expand(const CompactModel& compact, ModelState* out);

}  // namespace wire
}  // namespace fl

#endif  // FEDGE_COMMON_WIRE_COMPACT_H_
