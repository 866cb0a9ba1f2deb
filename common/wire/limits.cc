#include "common/wire/limits.h"

#include <cmath>
#include <cstdio>
#include <string>

#include "common/fixed_point.h"
#include "common/codec.h"
#include "common/text.h"
#include "common/wire/envelope.h"

namespace fl {
namespace wire {
namespace {

std::string Num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%g", v);
  return buf;
}

Status OutOfRange(const char* field, const std::string& value, const std::string& range) {
  return Status::InvalidArgument(std::string("training configuration: ") + field + " " + value +
                                 " is not in " + range);
}

}  // namespace

size_t UpdatePayloadLimit(size_t kept_values, const TrainConfig& c) {
  const Codec* codec = FindCodec(c.codec);
  const size_t encoded = codec ? codec->EncodedSize(kept_values, CodecParamsOf(c)) : 0;
  return kUpdateOverheadBytes + kExtensionRoomBytes + encoded;
}

CodecParams CodecParamsOf(const TrainConfig& c, uint64_t seed) {
  CodecParams p;
  p.bits = c.uplink_bits;
  p.block = c.block;
  p.stochastic = c.stochastic_rounding;
  p.seed = seed;
  return p;
}

size_t ExactSumPayloadLimit(size_t kept_values) {
  return kUpdateOverheadBytes + kExtensionRoomBytes + FixedSumEncodedSize(kept_values, 16);
}

size_t TaskPayloadLimit(size_t values, size_t tensors) {
  // Config and model header; per tensor: name, up to 8 dims, the length fields,
  // the mask bits and the fp32 values.
  // Optional fields of this protocol's own: the normalisation (8 bytes a
  // channel), the trainable bitmap (a bit a tensor) and the class names.
  // A relay's root endorsement: one envelope.
  return 1024 + kExtensionRoomBytes + kEnvelopeBytes + 8 * kMaxNormalizationChannels + 4 +
         tensors / 8 + 1 + 4 + kMaxClassNames * (2 + kMaxClassNameBytes) +
         tensors * (256 + 8 * 8 + 64) + values / 8 + 1 + 4 * values;
}

Status CheckTrainConfig(const TrainConfig& c) {
  if (c.epochs < 1 || c.epochs > kMaxEpochs) {
    return OutOfRange("epochs", std::to_string(c.epochs), "1.." + std::to_string(kMaxEpochs));
  }
  if (c.batch_size < 0 || c.batch_size > kMaxBatchSize) {
    return OutOfRange("batch size", std::to_string(c.batch_size),
                      "0.." + std::to_string(kMaxBatchSize));
  }
  if (!(c.lr > 0 && c.lr <= kMaxLearningRate)) {  // also NaN
    return OutOfRange("learning rate", Num(c.lr), "(0, " + Num(kMaxLearningRate) + "]");
  }
  if (!(c.momentum >= 0 && c.momentum < 1)) {
    return OutOfRange("momentum", Num(c.momentum), "[0, 1)");
  }
  if (!(c.weight_decay >= 0 && c.weight_decay <= kMaxWeightDecay)) {
    return OutOfRange("weight decay", Num(c.weight_decay), "[0, " + Num(kMaxWeightDecay) + "]");
  }
  if (!(c.deadline_seconds > 0 && c.deadline_seconds <= kMaxDeadlineSeconds)) {
    return OutOfRange("deadline", Num(c.deadline_seconds) + " s",
                      "(0, " + Num(kMaxDeadlineSeconds) + "] s");
  }
  const Codec* codec = FindCodec(c.codec);
  if (!codec) {
    std::string known;
    for (const auto& n : CodecNames()) known += (known.empty() ? "" : ", ") + n;
    return Status::InvalidArgument("training configuration: codec '" + Printable(c.codec) +
                                   "' is not one of " + known);
  }
  if (c.uplink_bits != 32 && c.uplink_bits != 8 && c.uplink_bits != 4 && c.uplink_bits != 2 &&
      c.uplink_bits != 1) {
    return OutOfRange("uplink bits", std::to_string(c.uplink_bits), "{32, 8, 4, 2, 1}");
  }
  if (c.block < 1 || c.block > kMaxQuantBlock) {
    return OutOfRange("quantization block", std::to_string(c.block),
                      "1.." + std::to_string(kMaxQuantBlock));
  }
  if (Status st = codec->Check(CodecParamsOf(c)); !st.ok()) {
    return Status::InvalidArgument("training configuration: " + st.message());
  }
  if (!(c.proximal_mu >= 0 && c.proximal_mu <= kMaxProximalMu)) {
    return OutOfRange("proximal mu", Num(c.proximal_mu), "[0, " + Num(kMaxProximalMu) + "]");
  }
  if (c.normalize_mean.size() != c.normalize_std.size() ||
      c.normalize_mean.size() > kMaxNormalizationChannels) {
    return OutOfRange("normalization channels", std::to_string(c.normalize_mean.size()),
                      "0.." + std::to_string(kMaxNormalizationChannels) + " mean/std pairs");
  }
  for (size_t i = 0; i < c.normalize_mean.size(); ++i) {
    if (!std::isfinite(c.normalize_mean[i]) || !std::isfinite(c.normalize_std[i]) ||
        !(c.normalize_std[i] > 0)) {
      return OutOfRange(
          "normalization pair",
          std::to_string(i) + " (" + Num(c.normalize_mean[i]) + "," + Num(c.normalize_std[i]) + ")",
          "finite mean, finite std > 0");
    }
  }
  if (c.class_names.size() > kMaxClassNames) {
    return OutOfRange("class names", std::to_string(c.class_names.size()),
                      "0.." + std::to_string(kMaxClassNames));
  }
  for (size_t i = 0; i < c.class_names.size(); ++i) {
    const std::string& name = c.class_names[i];
    if (name.empty() || name.size() > kMaxClassNameBytes) {
      return OutOfRange("class name length",
                        std::to_string(name.size()) + " (class " + std::to_string(i) + ")",
                        "1.." + std::to_string(kMaxClassNameBytes) + " bytes");
    }
    for (size_t j = 0; j < i; ++j) {
      if (c.class_names[j] == name) {
        return Status::InvalidArgument("training configuration: class name '" + Printable(name) +
                                       "' appears twice (classes " + std::to_string(j) + " and " +
                                       std::to_string(i) + ")");
      }
    }
  }
  return Status::OK();
}

}  // namespace wire
}  // namespace fl
