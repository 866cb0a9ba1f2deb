#include "common/quant_codec.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "common/random.h"

namespace fl {
namespace {

int Levels(int bits) { return (1 << (bits - 1)) - 1; }

void PutU32(char* p, uint32_t v) { std::memcpy(p, &v, 4); }
void PutU64(char* p, uint64_t v) { std::memcpy(p, &v, 8); }
uint32_t GetU32(const char* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
uint64_t GetU64(const char* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the quantized codec assumes a little-endian host"
#endif

// Rounding noise: 8 independent xorshift32 lanes, so the quantization loop
// below vectorizes (SSE2 is enough: 32-bit shifts, int->float conversion).
// u = (x >> 8) * 2^-24 is uniform on a 2^-24 grid in [0, 1), so the rounding
// bias is below 2^-25 of a step. Seeded: encodings are reproducible.
class Noise {
 public:
  static constexpr int kLanes = 8;
  explicit Noise(uint64_t seed) {
    Random r(seed);
    for (auto& s : s_) s = static_cast<uint32_t>(r.Next() >> 32) | 1u;  // never 0
  }
  uint32_t* lanes() { return s_; }

 private:
  uint32_t s_[kLanes];
};

// Quantizes n values into levels q + L in [0, 2L]. With y = v / scale in
// [-L, L], the level is trunc(y + L + u): y + L + u >= 0, so truncation is
// floor, and E[level] = y + L (unbiased). Nearest rounding uses u = 0.5.
// The min() guards float rounding of y just above L.
//
// Built twice (target_clones): for AVX2 and for the x86-64 baseline (SSE2); the
// loader picks the AVX2 version on CPUs that have it, so one binary runs
// everywhere and the vector loop is twice as wide where it can be.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define FL_TARGET_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define FL_TARGET_CLONES
#endif

// Eight lanes at once with GCC vector extensions; the compiler lowers them to
// two SSE2 registers or one AVX2 register.
typedef uint32_t U32x8 __attribute__((vector_size(32)));
typedef int32_t I32x8 __attribute__((vector_size(32)));
typedef float F32x8 __attribute__((vector_size(32)));
typedef uint8_t U8x8 __attribute__((vector_size(8)));

template <bool kStochastic>
inline void QuantizeBlockImpl(const float* __restrict v, size_t n, int L, float inv, Noise* noise,
                              uint8_t* __restrict levels) {
  static_assert(Noise::kLanes == 8, "one vector of lanes");
  const float fl = static_cast<float>(L);
  const float top = static_cast<float>(2 * L);
  U32x8 st;
  std::memcpy(&st, noise->lanes(), sizeof(st));
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    F32x8 u = {0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f};
    if (kStochastic) {
      st ^= st << 13;
      st ^= st >> 17;
      st ^= st << 5;
      u = __builtin_convertvector(reinterpret_cast<I32x8>(st >> 8), F32x8) * 0x1p-24f;
    }
    F32x8 x;
    std::memcpy(&x, v + i, sizeof(x));
    F32x8 y = x * inv + fl + u;
    y = y < top ? y : top;
    y = y > 0.0f ? y : 0.0f;  // also NaN: the conversion below is defined
    const U8x8 q = __builtin_convertvector(__builtin_convertvector(y, I32x8), U8x8);
    std::memcpy(levels + i, &q, sizeof(q));
  }
  uint32_t lanes[8];
  std::memcpy(lanes, &st, sizeof(lanes));
  for (int j = 0; i < n; ++i, ++j) {  // tail, fewer than 8 values
    float u = 0.5f;
    if (kStochastic) {
      uint32_t x = lanes[j];
      x ^= x << 13;
      x ^= x >> 17;
      x ^= x << 5;
      lanes[j] = x;
      u = static_cast<float>(static_cast<int32_t>(x >> 8)) * 0x1p-24f;
    }
    float y = v[i] * inv + fl + u;
    y = y < top ? y : top;
    y = y > 0.0f ? y : 0.0f;
    levels[i] = static_cast<uint8_t>(static_cast<int32_t>(y));
  }
  std::memcpy(noise->lanes(), lanes, sizeof(lanes));
}

FL_TARGET_CLONES
void QuantizeStochastic(const float* v, size_t n, int L, float inv, Noise* noise, uint8_t* levels) {
  QuantizeBlockImpl<true>(v, n, L, inv, noise, levels);
}

FL_TARGET_CLONES
void QuantizeNearest(const float* v, size_t n, int L, float inv, Noise* noise, uint8_t* levels) {
  QuantizeBlockImpl<false>(v, n, L, inv, noise, levels);
}

FL_TARGET_CLONES
float MaxAbs(const float* __restrict v, size_t n) {
  float m = 0;
  for (size_t i = 0; i < n; ++i) {
    const float a = std::fabs(v[i]);
    m = a > m ? a : m;
  }
  return m;
}

// Packs n levels of `bits` bits at bit offset *bitpos of `data`.
void Pack(const uint8_t* lv, size_t n, int bits, uint8_t* data, size_t* bitpos) {
  size_t i = 0;
  size_t pos = *bitpos;
  if ((pos & 7) == 0) {
    uint8_t* out = data + (pos >> 3);
    if (bits == 4) {
      for (; i + 2 <= n; i += 2) *out++ = static_cast<uint8_t>(lv[i] | (lv[i + 1] << 4));
    } else if (bits == 2) {
      for (; i + 4 <= n; i += 4) {
        *out++ =
            static_cast<uint8_t>(lv[i] | (lv[i + 1] << 2) | (lv[i + 2] << 4) | (lv[i + 3] << 6));
      }
    }
    pos += i * bits;
  }
  for (; i < n; ++i, pos += bits) {
    data[pos >> 3] |= static_cast<uint8_t>(lv[i] << (pos & 7));
  }
  *bitpos = pos;
}

}  // namespace

Status ValidateQuantOptions(const QuantOptions& o) {
  if (o.bits != 32 && o.bits != 8 && o.bits != 4 && o.bits != 2) {
    return Status::InvalidArgument("quantization bits must be 32, 8, 4 or 2, got " +
                                   std::to_string(o.bits));
  }
  if (o.block < 1) return Status::InvalidArgument("quantization block must be >= 1");
  return Status::OK();
}

size_t QuantEncodedSize(size_t count, int bits, uint32_t block) {
  if (bits == 32) return kQuantHeaderBytes + 4 * count;
  const size_t blocks = (count + block - 1) / block;
  return kQuantHeaderBytes + 4 * blocks + (count * bits + 7) / 8;
}

std::string QuantEncode(const float* values, size_t count, const QuantOptions& o) {
  const size_t blocks = o.bits == 32 ? 0 : (count + o.block - 1) / o.block;
  std::string out(QuantEncodedSize(count, o.bits, o.block), '\0');
  char* p = &out[0];
  p[0] = static_cast<char>(kQuantMagic);
  p[1] = static_cast<char>(o.bits);
  p[2] = static_cast<char>(o.stochastic ? 1 : 0);
  PutU32(p + 4, o.block);
  PutU64(p + 8, count);
  PutU64(p + 16, blocks);
  if (o.bits == 32) {
    if (count) std::memcpy(p + kQuantHeaderBytes, values, 4 * count);
    return out;
  }
  char* scales = p + kQuantHeaderBytes;
  uint8_t* data = reinterpret_cast<uint8_t*>(scales + 4 * blocks);
  const int L = Levels(o.bits);
  Noise noise(o.seed);
  std::vector<uint8_t> levels(o.block);
  size_t bitpos = 0;  // for sub-byte packing
  for (size_t b = 0; b < blocks; ++b) {
    const size_t begin = b * o.block;
    const size_t n = std::min<size_t>(o.block, count - begin);
    const float* v = values + begin;
    const float maxabs = MaxAbs(v, n);
    const float scale = maxabs / L;
    std::memcpy(scales + 4 * b, &scale, 4);
    // A subnormal scale has no finite inverse: such a block (every value below
    // ~1e-37) is sent as zeros rather than as levels computed from infinity.
    float inv = scale > 0 ? 1.0f / scale : 0.0f;
    if (!std::isfinite(inv)) inv = 0.0f;
    uint8_t* lv = o.bits == 8 ? data + begin : levels.data();
    if (o.stochastic) {
      QuantizeStochastic(v, n, L, inv, &noise, lv);
    } else {
      QuantizeNearest(v, n, L, inv, &noise, lv);
    }
    if (o.bits != 8) Pack(lv, n, o.bits, data, &bitpos);
  }
  return out;
}

float QuantMaxScale(int bits) {
  if (bits == 32) return 0.0f;
  // FLT_MAX / L rounded to nearest can be a hair above the true quotient, and
  // L times it then rounds to +Inf: step down until the product is finite.
  const float levels = static_cast<float>(Levels(bits));
  float s = std::numeric_limits<float>::max() / levels;
  while (!std::isfinite(s * levels)) s = std::nextafter(s, 0.0f);
  return s;
}

Status QuantPeek(std::string_view data, QuantHeader* header) {
  if (data.size() < kQuantHeaderBytes) {
    return Status::Corruption("quantized delta truncated: " + std::to_string(data.size()) +
                              " bytes, header needs " + std::to_string(kQuantHeaderBytes));
  }
  const char* p = data.data();
  if (static_cast<uint8_t>(p[0]) != kQuantMagic) {
    return Status::Corruption("quantized delta has bad magic");
  }
  header->bits = static_cast<uint8_t>(p[1]);
  header->stochastic = (static_cast<uint8_t>(p[2]) & 1) != 0;
  header->block = GetU32(p + 4);
  header->count = GetU64(p + 8);
  QuantOptions o;
  o.bits = header->bits;
  o.block = header->block;
  Status st = ValidateQuantOptions(o);
  if (!st.ok()) return Status::Corruption("quantized delta header: " + st.message());
  return Status::OK();
}

Status QuantDecode(std::string_view data, size_t expected_count, std::vector<float>* out) {
  QuantHeader h;
  FL_RETURN_IF_ERROR(QuantPeek(data, &h));
  const int bits = h.bits;
  const uint32_t block = h.block;
  const uint64_t count = h.count;
  if (count != expected_count) {
    return Status::Corruption("quantized delta holds " + std::to_string(count) +
                              " values, expected " + std::to_string(expected_count));
  }
  const uint64_t blocks = GetU64(data.data() + 16);
  const uint64_t want_blocks = bits == 32 ? 0 : (count + block - 1) / block;
  if (blocks != want_blocks) {
    return Status::Corruption("quantized delta declares " + std::to_string(blocks) +
                              " blocks, its count and block size imply " +
                              std::to_string(want_blocks));
  }
  const size_t want = QuantEncodedSize(count, bits, block);
  if (data.size() != want) {
    return Status::Corruption("quantized delta is " + std::to_string(data.size()) +
                              " bytes; its header implies " + std::to_string(want));
  }
  out->resize(count);
  const char* p = data.data() + kQuantHeaderBytes;
  if (bits == 32) {
    if (count) std::memcpy(out->data(), p, 4 * count);
    for (size_t i = 0; i < count; ++i) {
      if (!std::isfinite((*out)[i])) {
        return Status::Corruption("delta value " + std::to_string(i) + " is not finite");
      }
    }
    return Status::OK();
  }
  const uint8_t* levels = reinterpret_cast<const uint8_t*>(p + 4 * blocks);
  const int L = Levels(bits);
  const float max_scale = QuantMaxScale(bits);
  float* dst = out->data();
  size_t bitpos = 0;
  const unsigned mask = (1u << bits) - 1;
  for (size_t b = 0; b < blocks; ++b) {
    float scale;
    std::memcpy(&scale, p + 4 * b, 4);
    // Also refuses NaN. A scale up to max_scale keeps every level finite.
    if (!(scale >= 0 && scale <= max_scale)) {
      return Status::Corruption("block " + std::to_string(b) + " has scale " +
                                std::to_string(scale) + " (allowed: 0 to " +
                                std::to_string(max_scale) + ")");
    }
    const size_t begin = b * block;
    const size_t n = std::min<size_t>(block, count - begin);
    if (bits == 8) {
      const uint8_t* q = levels + begin;
      uint8_t bad = 0;
      for (size_t i = 0; i < n; ++i) {
        bad |= static_cast<uint8_t>(q[i] == 255);  // 2L = 254 is the top level
        dst[begin + i] = static_cast<float>(static_cast<int>(q[i]) - L) * scale;
      }
      if (bad) return Status::Corruption("block " + std::to_string(b) + " has level 255");
    } else {
      for (size_t i = 0; i < n; ++i, bitpos += bits) {
        const int q = static_cast<int>((levels[bitpos >> 3] >> (bitpos & 7)) & mask);
        if (q > 2 * L) {
          return Status::Corruption("block " + std::to_string(b) + " has level " +
                                    std::to_string(q) + " above " + std::to_string(2 * L));
        }
        dst[begin + i] = static_cast<float>(q - L) * scale;
      }
    }
  }
  return Status::OK();
}

namespace {

std::string DescribeQuant(const CodecParams& p) {
  if (p.bits == 32) return "32-bit";
  return std::to_string(p.bits) + "-bit, blocks of " + std::to_string(p.block) + ", " +
         (p.stochastic ? "stochastic" : "nearest") + " rounding";
}

class Quant final : public Codec {
 public:
  const char* name() const override { return "q"; }
  uint8_t magic() const override { return kQuantMagic; }
  Status Check(const CodecParams& p) const override {
    QuantOptions o;
    o.bits = p.bits;
    o.block = p.block;
    return ValidateQuantOptions(o);
  }
  size_t EncodedSize(size_t count, const CodecParams& p) const override {
    return QuantEncodedSize(count, p.bits, p.block);
  }
  std::string Encode(const float* values, size_t count, const CodecParams& p) const override {
    QuantOptions o;
    static_cast<CodecParams&>(o) = p;
    return QuantEncode(values, count, o);
  }
  Status Decode(std::string_view data, size_t expected, std::vector<float>* out) const override {
    return QuantDecode(data, expected, out);
  }
  Status Peek(std::string_view data, CodecParams* p, uint64_t* count) const override {
    QuantHeader h;
    FL_RETURN_IF_ERROR(QuantPeek(data, &h));
    p->bits = h.bits;
    p->block = h.block;
    p->stochastic = h.stochastic;
    *count = h.count;
    return Status::OK();
  }
  bool SameFormat(const CodecParams& sent, const CodecParams& asked) const override {
    return sent.bits == asked.bits &&
           (sent.bits == 32 || (sent.block == asked.block && sent.stochastic == asked.stochastic));
  }
  std::string Describe(const CodecParams& p) const override { return DescribeQuant(p); }
  bool Lossless(const CodecParams& p) const override { return p.bits == 32; }
};

}  // namespace

const Codec& QuantCodec() {
  static const Quant kCodec;
  return kCodec;
}

}  // namespace fl
