#include "common/codec.h"

#include <cassert>

namespace fl {

// The registered codecs, each defined in its own file. Adding a codec: its
// file, a line here, its tests.
const Codec& QuantCodec();  // common/quant_codec.cc
const Codec& SignCodec();   // common/sign_codec.cc

namespace {

const std::vector<const Codec*>& Registry() {
  static const std::vector<const Codec*> kCodecs = {&QuantCodec(), &SignCodec()};
  return kCodecs;
}

}  // namespace

const char kDefaultCodec[] = "q";

const Codec* FindCodec(std::string_view name) {
  if (name.empty()) name = kDefaultCodec;
  for (const Codec* c : Registry()) {
    if (name == c->name()) return c;
  }
  return nullptr;
}

const Codec* CodecOfBytes(std::string_view data) {
  if (data.empty()) return nullptr;
  for (const Codec* c : Registry()) {
    if (static_cast<uint8_t>(data[0]) == c->magic()) return c;
  }
  return nullptr;
}

std::vector<std::string> CodecNames() {
  std::vector<std::string> names;
  for (const Codec* c : Registry()) names.push_back(c->name());
  return names;
}

std::string ErrorFeedback::Encode(const Codec& codec, const std::vector<float>& delta,
                                  const CodecParams& p) {
  if (codec.Lossless(p)) {
    // Nothing is left over, so no residual is kept (one copy of the model's
    // size less on the device). A residual left by an earlier, lossy round
    // still goes out with this delta.
    std::string enc;
    if (residual_.size() == delta.size()) {
      for (size_t i = 0; i < delta.size(); ++i) residual_[i] += delta[i];
      enc = codec.Encode(residual_.data(), residual_.size(), p);
    } else {
      enc = codec.Encode(delta.data(), delta.size(), p);
    }
    std::vector<float>().swap(residual_);
    return enc;
  }
  if (residual_.size() != delta.size()) residual_.assign(delta.size(), 0.0f);
  for (size_t i = 0; i < delta.size(); ++i) residual_[i] += delta[i];
  std::string enc = codec.Encode(residual_.data(), residual_.size(), p);
  std::vector<float> sent;
  // Our own encoding always decodes; the check guards the invariant.
  Status st = codec.Decode(enc, residual_.size(), &sent);
  assert(st.ok());
  (void)st;
  for (size_t i = 0; i < delta.size(); ++i) residual_[i] -= sent[i];
  return enc;
}

std::string ErrorFeedback::Encode(const std::vector<float>& delta, const CodecParams& p) {
  return Encode(*FindCodec(kDefaultCodec), delta, p);
}

}  // namespace fl
