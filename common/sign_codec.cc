// The 1-bit sign codec ("sign"): each value goes up as its sign, and each
// block of values as one fp32 scale, the mean magnitude of the block
// (scaled sign compression, as in Bernstein et al. 2018's signSGD and
// Karimireddy et al. 2019's EF-SignSGD, which showed that with error feedback
// it converges as the uncompressed method does). A decoded value is +scale or
// -scale. About 32x smaller than fp32 deltas, 8x smaller than 8-bit.
//
// Layout (little-endian):
//   header (24 bytes): magic 'S' (1) | bits u8 = 1 (1) | flags u8 = 0 (1)
//                      | reserved u8 = 0 (1) | block u32 | value count u64
//                      | block count u64
//   scales: block count x fp32, each finite and >= 0
//   signs:  ceil(count / 8) bytes; value i is bit (i % 8) of byte i / 8,
//           1 = negative; the bits after the last value are 0
// Encoded size = 24 + 4 * ceil(count / block) + ceil(count / 8), checked exactly.
#include <cmath>
#include <cstring>
#include <limits>

#include "common/codec.h"
#include "common/wire/reader.h"

namespace fl {

namespace {

constexpr size_t kHeaderBytes = 24;
constexpr uint8_t kMagic = 'S';

class Sign final : public Codec {
 public:
  const char* name() const override { return "sign"; }
  uint8_t magic() const override { return kMagic; }

  Status Check(const CodecParams& p) const override {
    if (p.bits != 1) {
      return Status::InvalidArgument("the sign codec sends 1 bit per value, asked for " +
                                     std::to_string(p.bits));
    }
    if (p.block < 1) return Status::InvalidArgument("sign codec block must be >= 1");
    return Status::OK();
  }

  size_t EncodedSize(size_t count, const CodecParams& p) const override {
    const size_t blocks = p.block ? (count + p.block - 1) / p.block : 0;
    return kHeaderBytes + 4 * blocks + (count + 7) / 8;
  }

  std::string Encode(const float* values, size_t count, const CodecParams& p) const override {
    const size_t blocks = (count + p.block - 1) / p.block;
    std::string out(EncodedSize(count, p), '\0');
    char* h = &out[0];
    h[0] = static_cast<char>(kMagic);
    h[1] = 1;
    std::memcpy(h + 4, &p.block, 4);
    const uint64_t n64 = count, b64 = blocks;
    std::memcpy(h + 8, &n64, 8);
    std::memcpy(h + 16, &b64, 8);
    char* scales = h + kHeaderBytes;
    auto* signs = reinterpret_cast<uint8_t*>(scales + 4 * blocks);
    for (size_t b = 0; b < blocks; ++b) {
      const size_t begin = b * p.block;
      const size_t end = std::min<size_t>(count, begin + p.block);
      double sum = 0;
      for (size_t i = begin; i < end; ++i) sum += std::fabs(static_cast<double>(values[i]));
      const float scale = static_cast<float>(sum / static_cast<double>(end - begin));
      std::memcpy(scales + 4 * b, &scale, 4);
      for (size_t i = begin; i < end; ++i) {
        if (std::signbit(values[i]) && values[i] != 0.0f) signs[i >> 3] |= uint8_t(1u << (i & 7));
      }
    }
    return out;
  }

  Status Peek(std::string_view data, CodecParams* p, uint64_t* count) const override {
    if (data.size() < kHeaderBytes) {
      return Status::Corruption("sign-coded delta truncated: " + std::to_string(data.size()) +
                                " bytes, header needs " + std::to_string(kHeaderBytes));
    }
    wire::Reader r(data.data(), kHeaderBytes);
    uint8_t magic = 0, bits = 0, flags = 0, reserved = 0;
    r.GetU8(&magic);
    if (magic != kMagic) return Status::Corruption("sign-coded delta has bad magic");
    r.GetU8(&bits);
    r.GetU8(&flags);
    r.GetU8(&reserved);
    if (bits != 1 || flags != 0 || reserved != 0) {
      return Status::Corruption("sign-coded delta header: bits must be 1 and flags 0");
    }
    p->bits = 1;
    r.GetU32(&p->block);
    p->stochastic = false;
    r.GetU64(count);
    if (p->block < 1) return Status::Corruption("sign-coded delta header: block 0");
    return Status::OK();
  }

  Status Decode(std::string_view data, size_t expected, std::vector<float>* out) const override {
    CodecParams p;
    uint64_t count = 0;
    FL_RETURN_IF_ERROR(Peek(data, &p, &count));
    if (count != expected) {
      return Status::Corruption("sign-coded delta holds " + std::to_string(count) +
                                " values, expected " + std::to_string(expected));
    }
    uint64_t blocks = 0;
    wire::Reader(data.data() + 16, 8).GetU64(&blocks);
    if (blocks != (count + p.block - 1) / p.block) {
      return Status::Corruption("sign-coded delta declares " + std::to_string(blocks) +
                                " blocks, its count and block size imply " +
                                std::to_string((count + p.block - 1) / p.block));
    }
    if (data.size() != EncodedSize(count, p)) {
      return Status::Corruption("sign-coded delta is " + std::to_string(data.size()) +
                                " bytes; its header implies " +
                                std::to_string(EncodedSize(count, p)));
    }
    const char* scales = data.data() + kHeaderBytes;
    const auto* signs = reinterpret_cast<const uint8_t*>(scales + 4 * blocks);
    if (count % 8 != 0 && (signs[count / 8] >> (count % 8)) != 0) {
      return Status::Corruption("sign-coded delta has bits set after its last value");
    }
    out->resize(count);
    float* dst = out->data();
    for (size_t b = 0; b < blocks; ++b) {
      float scale;
      std::memcpy(&scale, scales + 4 * b, 4);
      // Also refuses NaN.
      if (!(scale >= 0 && scale <= std::numeric_limits<float>::max())) {
        return Status::Corruption("block " + std::to_string(b) + " has scale " +
                                  std::to_string(scale) + " (allowed: finite, >= 0)");
      }
      const size_t begin = b * p.block;
      const size_t end = std::min<size_t>(count, begin + p.block);
      for (size_t i = begin; i < end; ++i) {
        dst[i] = (signs[i >> 3] >> (i & 7)) & 1 ? -scale : scale;
      }
    }
    return Status::OK();
  }

  bool SameFormat(const CodecParams& sent, const CodecParams& asked) const override {
    return sent.bits == 1 && sent.block == asked.block;
  }

  std::string Describe(const CodecParams& p) const override {
    return "1-bit signs, a scale per " + std::to_string(p.block) + " values";
  }
};

}  // namespace

const Codec& SignCodec() {
  static const Sign kCodec;
  return kCodec;
}

}  // namespace fl
