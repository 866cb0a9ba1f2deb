// Durable server checkpoints: the global model after a completed round.
//
// Layout (little-endian), as LevelDB's log_format.h:
//   magic "FLCK" (4) | format version u32 (4) | round u64 (8) | seed u64 (8)
//   | model length u64 (8) | model (cereal ModelState) | SHA-256 of all preceding bytes (32)
// Written to a temp file, fsynced, renamed over the old one, and the directory
// fsynced, so a crash leaves either the old or the new checkpoint, never a torn one.
#ifndef FEDGE_SERVER_CHECKPOINT_H_
#define FEDGE_SERVER_CHECKPOINT_H_

#include <cstdint>
#include <string>

#include "common/file_util.h"
#include "common/model_state.h"
#include "common/status.h"

namespace fl {

struct Checkpoint {
  // Last completed round (0 = the initial model).
  uint64_t round{0};
  // The run's seed, so a resumed run selects clients as the original would have.
  uint64_t seed{0};
  ModelState model;
};

Status WriteCheckpoint(const std::string& path, const Checkpoint& checkpoint);

// NotFound if absent; Corruption naming the problem if truncated or altered.
Result<Checkpoint> ReadCheckpoint(const std::string& path);

}  // namespace fl

#endif  // FEDGE_SERVER_CHECKPOINT_H_
