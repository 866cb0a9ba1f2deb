// What one side of the protocol may ask of the other: bounds on the values of a
// TASK's training configuration. A client checks every TASK against them before
// it decodes the model or allocates anything for it, and fl-server checks its
// own configuration against them at start, so an operator hears of a value no
// client would accept before the fleet does.
#ifndef FEDGE_COMMON_WIRE_LIMITS_H_
#define FEDGE_COMMON_WIRE_LIMITS_H_

#include <cstdint>

#include "common/status.h"
#include "common/wire/messages.h"

namespace fl {
namespace wire {

constexpr int32_t kMaxEpochs = 1000;
// Examples per local batch (0 = the whole shard).
constexpr int64_t kMaxBatchSize = int64_t{1} << 20;
constexpr double kMaxLearningRate = 100.0;
constexpr double kMaxWeightDecay = 1.0;
// Seconds a round may last (30 days).
constexpr double kMaxDeadlineSeconds = 30.0 * 24 * 3600;
// Values per quantization scale. The encoder holds one block of levels.
constexpr uint32_t kMaxQuantBlock = 1u << 16;

// OK when every field of `c` is within the bounds above: epochs in
// [1, kMaxEpochs], batch in [0, kMaxBatchSize], lr in (0, kMaxLearningRate],
// momentum in [0, 1), weight decay in [0, kMaxWeightDecay], deadline in
// (0, kMaxDeadlineSeconds], uplink bits 32, 8, 4 or 2, block in
// [1, kMaxQuantBlock]; all finite. InvalidArgument naming the field otherwise.
Status CheckTrainConfig(const TrainConfig& c);

}  // namespace wire
}  // namespace fl

#endif  // FEDGE_COMMON_WIRE_LIMITS_H_
