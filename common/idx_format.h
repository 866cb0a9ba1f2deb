// Byte layout of IDX files (the MNIST distribution format), as LevelDB's
// db/log_format.h writes its layout down.
//
// File = magic (4 bytes) + dims (4 bytes each, big-endian) + data.
// Magic = 0x00 0x00 <type> <ndims>. Types fedge reads: 0x08 unsigned byte, 0x0D float32
// (big-endian). Data = product(dims) elements, row-major, no padding and nothing after it.
#ifndef FEDGE_COMMON_IDX_FORMAT_H_
#define FEDGE_COMMON_IDX_FORMAT_H_

#include <cstddef>
#include <cstdint>

namespace fl {
namespace idx {

// Size of the magic number.
constexpr size_t kMagicBytes = 4;
// Size of each dimension field.
constexpr size_t kDimBytes = 4;
// Type code for unsigned 8-bit elements.
constexpr uint8_t kTypeUnsignedByte = 0x08;
// Type code for 32-bit floats (big-endian IEEE 754).
constexpr uint8_t kTypeFloat = 0x0D;
// Most dimensions accepted (MNIST images use 3, labels 1).
constexpr uint8_t kMaxDims = 4;

}  // namespace idx
}  // namespace fl

#endif  // FEDGE_COMMON_IDX_FORMAT_H_
