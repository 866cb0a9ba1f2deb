// What one side of the protocol may ask of the other: bounds on the values of a
// TASK's training configuration. A client checks every TASK against them before
// it decodes the model or allocates anything for it, and fl-server checks its
// own configuration against them at start, so an operator hears of a value no
// client would accept before the fleet does.
#ifndef FEDGE_COMMON_WIRE_LIMITS_H_
#define FEDGE_COMMON_WIRE_LIMITS_H_

#include <cstddef>
#include <cstdint>

#include "common/status.h"
#include "common/codec.h"
#include "common/wire/messages.h"

namespace fl {
namespace wire {

constexpr int32_t kMaxEpochs = 1000;
// Examples per local batch (0 = the whole shard).
constexpr int64_t kMaxBatchSize = int64_t{1} << 20;
constexpr double kMaxLearningRate = 100.0;
constexpr double kMaxWeightDecay = 1.0;
constexpr double kMaxProximalMu = 100.0;
// Most input channels a TASK's normalisation may name (a CSV's features are
// its channels).
constexpr size_t kMaxNormalizationChannels = 4096;
// Most classes a TASK's class names may list, and the longest name.
constexpr size_t kMaxClassNames = 256;
constexpr size_t kMaxClassNameBytes = 255;
// Most tensors a TASK's trainable set may name.
constexpr uint32_t kMaxTrainableTensors = 1u << 16;
// Seconds a round may last (30 days).
constexpr double kMaxDeadlineSeconds = 30.0 * 24 * 3600;
// Values per quantization scale. The encoder holds one block of levels.
constexpr uint32_t kMaxQuantBlock = 1u << 16;

// Payload limits by message type, checked before a payload is hashed or
// decoded. HELLO, ACK/REJECT and DONE carry a few numbers and short strings.
// An UPDATE's size is exact given the round's codec: UpdatePayloadLimit. A
// TASK's follows from the model the client expects: TaskPayloadLimit.
constexpr size_t kMaxSmallPayloadBytes = 4096;
// An UPDATE's payload beyond its encoded delta: the three numbers, the codec
// name with its length and the delta's length (41 bytes for codec "q"), plus
// room for a codec name of up to 23 bytes.
constexpr size_t kUpdateOverheadBytes = 64;
// Room the UPDATE and TASK limits leave for optional fields (messages.h,
// "Optional fields"): a newer peer's extension block of up to this many bytes
// is not refused as too large. (The 4 KiB of the small payloads leave more.)
constexpr size_t kExtensionRoomBytes = 1024;
size_t UpdatePayloadLimit(size_t kept_values, const TrainConfig& c);
// A relay's UPDATE: its exact partial sum (codec "x") of `kept_values`
// values at the widest encoding, 16 bytes each (common/fixed_point.h).
size_t ExactSumPayloadLimit(size_t kept_values);
// A TASK carrying a model of `values` parameters in `tensors` tensors (fp32,
// every mask present, tensor names up to 256 bytes). Both include
// kExtensionRoomBytes.
size_t TaskPayloadLimit(size_t values, size_t tensors);

// OK when every field of `c` is within the bounds above: epochs in
// [1, kMaxEpochs], batch in [0, kMaxBatchSize], lr in (0, kMaxLearningRate],
// momentum in [0, 1), weight decay in [0, kMaxWeightDecay], deadline in
// (0, kMaxDeadlineSeconds], a registered codec (common/codec.h) that takes
// the uplink bits (32, 8, 4 or 2 for "q", 1 for "sign"), block in
// [1, kMaxQuantBlock], proximal mu in [0, kMaxProximalMu], at most
// kMaxNormalizationChannels normalisation pairs with std > 0, at most
// kMaxClassNames distinct class names of 1..kMaxClassNameBytes bytes; all finite. InvalidArgument
// naming the field otherwise.
Status CheckTrainConfig(const TrainConfig& c);

// What `c` asks of its codec; `seed` seeds its rounding.
CodecParams CodecParamsOf(const TrainConfig& c, uint64_t seed = 1);

}  // namespace wire
}  // namespace fl

#endif  // FEDGE_COMMON_WIRE_LIMITS_H_
