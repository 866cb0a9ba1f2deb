// The uplink codecs: how a device's delta (the kept values of the trainable
// tensors, in canonical order) becomes an UPDATE's bytes. One room: each
// codec is a file implementing Codec, registered by name in common/codec.cc.
// A TASK names the round's codec (wire::TrainConfig::codec), a HELLO lists
// the codecs a device has, an UPDATE says which one it used, and encoded
// bytes begin with their codec's magic byte, so what the server's round log
// keeps (the bytes alone) decodes without more.
//
// Every codec's encoded size is an exact function of (count, parameters),
// which its decoder checks; a decoder refuses (Corruption) anything else and
// decodes only finite values (docs/protocol.md, "Update codecs").
#ifndef FEDGE_COMMON_CODEC_H_
#define FEDGE_COMMON_CODEC_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace fl {

// What a TASK asks of the codec (some codecs use only some of it).
struct CodecParams {
  // Bits per value: 32 (no quantization), 8, 4, 2 ("q"), 1 ("sign").
  int bits{32};
  // Values per scale.
  uint32_t block{256};
  // Stochastic (unbiased) rounding; false = deterministic.
  bool stochastic{true};
  // Seed of the rounding noise (not sent: it does not change the format).
  uint64_t seed{1};
};

class Codec {
 public:
  virtual ~Codec() = default;

  // The name TASKs, HELLOs and UPDATEs carry ("q", "sign").
  virtual const char* name() const = 0;
  // The first byte of every encoding.
  virtual uint8_t magic() const = 0;
  // InvalidArgument for parameters this codec cannot encode with.
  virtual Status Check(const CodecParams& p) const = 0;
  // The exact encoded size of `count` values.
  virtual size_t EncodedSize(size_t count, const CodecParams& p) const = 0;
  // Encodes `count` finite values (Check(p) must be OK).
  virtual std::string Encode(const float* values, size_t count, const CodecParams& p) const = 0;
  // Decodes exactly `expected` values into `*out` (resized).
  virtual Status Decode(std::string_view data, size_t expected, std::vector<float>* out) const = 0;
  // The parameters and value count the header of `data` names.
  virtual Status Peek(std::string_view data, CodecParams* p, uint64_t* count) const = 0;
  // Whether an encoding with `sent` is in the format `asked` for.
  virtual bool SameFormat(const CodecParams& sent, const CodecParams& asked) const = 0;
  // In words, for messages ("8-bit, blocks of 256, stochastic rounding").
  virtual std::string Describe(const CodecParams& p) const = 0;
  // True when Decode(Encode(v)) is v: error feedback then keeps nothing.
  virtual bool Lossless(const CodecParams& p) const { return false; }
};

// The default codec's name ("q", common/quant_codec.h).
extern const char kDefaultCodec[];

// The codec named `name` ("" = the default); null when there is none.
const Codec* FindCodec(std::string_view name);
// The codec whose magic byte `data` begins with; null when none.
const Codec* CodecOfBytes(std::string_view data);
// Every registered codec's name, the default first.
std::vector<std::string> CodecNames();

// Error feedback (Seide et al. 2014; Karimireddy et al. 2019): a device keeps
// what the codec dropped and adds it to its next delta, so the error does not
// accumulate over rounds: the sum of what was sent equals the sum of the true
// deltas minus the current residual. It is what makes a biased codec (1-bit
// signs) converge.
class ErrorFeedback final {
 public:
  // Encodes delta + residual with `codec` and keeps (delta + residual) -
  // decode(result) as the new residual. A delta of a different length than
  // the residual resets it.
  std::string Encode(const Codec& codec, const std::vector<float>& delta, const CodecParams& p);
  // The same with the default codec ("q") at `p`.
  std::string Encode(const std::vector<float>& delta, const CodecParams& p);

  const std::vector<float>& residual() const { return residual_; }
  void Reset() { residual_.clear(); }
  // Continues from a residual kept across a restart (fl-client --state-dir).
  void Restore(std::vector<float> residual) { residual_ = std::move(residual); }

 private:
  std::vector<float> residual_;
};

}  // namespace fl

#endif  // FEDGE_COMMON_CODEC_H_
