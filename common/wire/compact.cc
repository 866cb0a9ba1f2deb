#include "common/wire/compact.h"

#include <cmath>
#include <cstring>

#include "common/half.h"
#include "common/text.h"

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
    ct.mask_bits = PackMask(t.mask);
    const std::vector<float> kept = GatherKept(t);
    ct.values.resize(kept.size() * width);
    if (width == 4) {
      if (!kept.empty()) std::memcpy(&ct.values[0], kept.data(), ct.values.size());
    } else {
      for (size_t j = 0; j < kept.size(); ++j) {
        const uint16_t h = FloatToHalf(kept[j]);
        std::memcpy(&ct.values[2 * j], &h, 2);
      }
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
        return Status::Corruption("tensor '" + Printable(ct.name) + "' has an invalid shape");
      }
      n *= static_cast<uint64_t>(d);
    }
    TensorState t;
    size_t kept = n;
    if (!ct.mask_bits.empty()) {
      auto k = UnpackMask(ct.mask_bits.data(), ct.mask_bits.size(), n, &t.mask);
      if (!k.ok()) return k.status().WithContext("tensor '" + Printable(ct.name) + "'");
      kept = *k;
    }
    if (ct.values.size() != kept * width) {
      return Status::Corruption("tensor '" + Printable(ct.name) + "' carries " +
                                std::to_string(ct.values.size()) + " value bytes, its mask keeps " +
                                std::to_string(kept) + " values (" + std::to_string(kept * width) +
                                " bytes)");
    }
    t.name = ct.name;
    t.shape = ct.shape;
    t.values.assign(n, 0.0f);
    const char* p = ct.values.data();
    for (size_t k = 0; k < n; ++k) {
      if (!t.mask.empty() && !t.mask[k]) continue;
      float v;
      if (width == 2) {
        uint16_t h;
        std::memcpy(&h, p, 2);
        v = HalfToFloat(h);
      } else {
        std::memcpy(&v, p, 4);
      }
      if (!std::isfinite(v)) {
        return Status::Corruption("tensor '" + Printable(ct.name) + "' value " + std::to_string(k) +
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
