#include "common/wire/compact.h"

#include <cmath>
#include <cstring>

#include "common/half.h"

namespace fl {
namespace wire {

Result<ValueFormat> ParseValueFormat(const std::string& name) {
  if (name == "fp32") return ValueFormat::kFp32;
  if (name == "fp16") return ValueFormat::kFp16;
  return Status::InvalidArgument("unknown value format '" + name + "' (expected fp32 or fp16)");
}

const char* ValueFormatName(ValueFormat f) { return f == ValueFormat::kFp16 ? "fp16" : "fp32"; }

CompactModel Compact(const ModelState& state, ValueFormat format) {
  CompactModel c;
  c.architecture = state.architecture;
  c.format = static_cast<uint8_t>(format);
  const size_t width = format == ValueFormat::kFp16 ? 2 : 4;
  for (const auto& t : state.tensors) {
    CompactTensor ct;
    ct.name = t.name;
    ct.shape = t.shape;
    const size_t n = t.values.size();
    if (!t.mask.empty()) {
      ct.mask_bits.assign((n + 7) / 8, '\0');
      for (size_t k = 0; k < n; ++k) {
        if (t.mask[k]) ct.mask_bits[k >> 3] |= static_cast<char>(1 << (k & 7));
      }
    }
    ct.values.resize(static_cast<size_t>(t.KeptCount()) * width);
    char* p = ct.values.empty() ? nullptr : &ct.values[0];
    for (size_t k = 0; k < n; ++k) {
      if (!t.mask.empty() && !t.mask[k]) continue;
      if (width == 2) {
        const uint16_t h = FloatToHalf(t.values[k]);
        std::memcpy(p, &h, 2);
      } else {
        std::memcpy(p, &t.values[k], 4);
      }
      p += width;
    }
    c.tensors.push_back(std::move(ct));
  }
  return c;
}

Status Expand(const CompactModel& c, ModelState* out) {
  if (c.format > static_cast<uint8_t>(ValueFormat::kFp16)) {
    return Status::Corruption("model value format " + std::to_string(c.format) + " unknown");
  }
  const size_t width = c.format == static_cast<uint8_t>(ValueFormat::kFp16) ? 2 : 4;
  ModelState m;
  m.architecture = c.architecture;
  for (const auto& ct : c.tensors) {
    uint64_t n = 1;
    for (int64_t d : ct.shape) {
      if (d < 0 || (d != 0 && n > (uint64_t{1} << 34) / static_cast<uint64_t>(d))) {
        return Status::Corruption("tensor '" + ct.name + "' has an invalid shape");
      }
      n *= static_cast<uint64_t>(d);
    }
    size_t kept = n;
    if (!ct.mask_bits.empty()) {
      if (ct.mask_bits.size() != (n + 7) / 8) {
        return Status::Corruption("tensor '" + ct.name + "' mask is " +
                                  std::to_string(ct.mask_bits.size()) + " bytes, shape needs " +
                                  std::to_string((n + 7) / 8));
      }
      if (n % 8 && (static_cast<uint8_t>(ct.mask_bits.back()) >> (n % 8)) != 0) {
        return Status::Corruption("tensor '" + ct.name + "' mask has padding bits set");
      }
      kept = 0;
      for (char b : ct.mask_bits) kept += __builtin_popcount(static_cast<uint8_t>(b));
    }
    if (ct.values.size() != kept * width) {
      return Status::Corruption("tensor '" + ct.name + "' carries " +
                                std::to_string(ct.values.size()) + " value bytes, its mask keeps " +
                                std::to_string(kept) + " values (" + std::to_string(kept * width) +
                                " bytes)");
    }
    TensorState t;
    t.name = ct.name;
    t.shape = ct.shape;
    t.values.assign(n, 0.0f);
    if (!ct.mask_bits.empty()) t.mask.assign(n, 0);
    const char* p = ct.values.data();
    for (size_t k = 0; k < n; ++k) {
      if (!ct.mask_bits.empty()) {
        if (!((static_cast<uint8_t>(ct.mask_bits[k >> 3]) >> (k & 7)) & 1)) continue;
        t.mask[k] = 1;
      }
      float v;
      if (width == 2) {
        uint16_t h;
        std::memcpy(&h, p, 2);
        v = HalfToFloat(h);
      } else {
        std::memcpy(&v, p, 4);
      }
      if (!std::isfinite(v)) {
        return Status::Corruption("tensor '" + ct.name + "' value " + std::to_string(k) +
                                  " is not finite");
      }
      t.values[k] = v;
      p += width;
    }
    m.tensors.push_back(std::move(t));
  }
  *out = std::move(m);
  return Status::OK();
}

}  // namespace wire
}  // namespace fl
