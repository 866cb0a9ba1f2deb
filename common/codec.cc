#include "common/codec.h"

#include <cmath>
#include <cstring>

namespace fl {

static_assert(sizeof(float) == 4, "fp32 codec needs IEEE-754 binary32 floats");

// The hosts fedge runs on (x86-64, AArch64) are little-endian, so the codec's
// byte order is the in-memory order and encode/decode are single copies.
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the fp32 codec assumes a little-endian host"
#endif

std::string EncodeDenseFp32(const std::vector<float>& values) {
  std::string out(values.size() * 4, '\0');
  if (!values.empty()) std::memcpy(&out[0], values.data(), out.size());
  return out;
}

Status DecodeDenseFp32(const std::string& data, size_t expected_count, std::vector<float>* out) {
  if (data.size() != expected_count * 4) {
    return Status::Corruption("fp32 delta is " + std::to_string(data.size()) +
                              " bytes; the model's " + std::to_string(expected_count) +
                              " values need " + std::to_string(expected_count * 4));
  }
  out->resize(expected_count);
  if (expected_count) std::memcpy(out->data(), data.data(), data.size());
  for (size_t i = 0; i < expected_count; ++i) {
    if (!std::isfinite((*out)[i])) {
      return Status::Corruption("fp32 delta value " + std::to_string(i) + " is not finite");
    }
  }
  return Status::OK();
}

}  // namespace fl
