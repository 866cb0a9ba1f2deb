// Durable server checkpoints: the global model after a completed round.
//
// Layout (little-endian), as LevelDB's log_format.h:
//   magic "FLCK" (4) | format version u32 (4) = 6 | round u64 (8) | seed u64 (8)
//   | reference norm f64 (8) | pending rows u32, each: round u64, participants
//     u32, upload bytes u64, download bytes u64, round seconds f64, largest
//     delta norm f64 | strategy name length u32, name | strategy state length
//     u64, state (server/aggregator.h) | pruning schedule length u32, text
//   | run settings length u32, text | model length u64 (8) | model (cereal ModelState)
//   | signed u8 (1) | signer's Ed25519 public key (32) | signature (64)
//   | SHA-256 of all preceding bytes (32)
// The signature (zeros when unsigned) is over the SHA-256 of the bytes before
// the signed flag. A server with a key signs its checkpoints and reads back
// only checkpoints its own key signed, so a file swapped into --out is refused
// rather than resumed from and signed into global.flm.
// Formats 1 (no reference norm, unsigned), 2 (unsigned), 3 (no strategy:
// fedavg), 4 (no pruning schedule) and 5 (no run settings) are still read,
// what they lack is not checked on resume;
// a server with a key refuses them as unsigned.
// Written to a temp file, fsynced, renamed over the old one, and the directory
// fsynced, so a crash leaves either the old or the new checkpoint, never a torn one.
// The two previous checkpoints stay beside it as PATH.1 and PATH.2, so a
// checkpoint that cannot be used (altered, or written by a faulty build) is not
// the only one.
#ifndef FEDGE_SERVER_CHECKPOINT_H_
#define FEDGE_SERVER_CHECKPOINT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "common/file_util.h"
#include "common/model_state.h"
#include "common/status.h"
#include "crypto/ed25519.h"

namespace fl {

struct Checkpoint {
  // Last completed round (0 = the initial model).
  uint64_t round{0};
  // The run's seed, so a resumed run selects clients as the original would have.
  uint64_t seed{0};
  ModelState model;
  // L2 norm of the run's starting model (the reference of the derived update
  // norm bound); 0 = unknown (a format-1 checkpoint).
  double reference_norm{0};
  // The rounds.csv rows not written yet when the checkpoint was (their
  // evaluation was still running), this round's included: the checkpoint is
  // the one commit point, and --resume writes what is missing from them.
  struct Row {
    uint64_t round{0};
    uint32_t participants{0};
    uint64_t upload_bytes{0};
    uint64_t download_bytes{0};
    double round_seconds{0};
    double max_delta_norm{0};
  };
  std::vector<Row> pending_rows;
  // The aggregation strategy and its state after `round` (momentum, moments;
  // empty when it has none), so --resume continues the same optimizer.
  std::string strategy{"fedavg"};
  std::string strategy_state;
  // The run's federated pruning schedule in words ("" when it prunes nothing
  // during the run), so --resume refuses flags that would change it midway.
  // Format 4 and older: unknown (has_pruning false).
  std::string pruning;
  bool has_pruning{true};
  // The settings that shape the run's trajectory and the meaning of the
  // strategy's state, one "--flag=value" per line (the options schema's run
  // settings, server/flags.h RunSettingsText), so --resume refuses a run that
  // would continue the same model under other hyperparameters. Empty: unknown
  // (format 5 and older), not checked.
  std::string settings;
};

// One line per setting whose value differs between two run-settings texts
// ("--lr-decay: 0.99 in the checkpoint, 1 in this run"), or that only one of
// them names; empty when equal. A setting added after the checkpoint's
// writer is compared with the default it had then (checkpoint.cc).
std::vector<std::string> SettingsDifferences(const std::string& checkpoint, const std::string& run);

// Checkpoints kept: PATH and PATH.1 .. PATH.(kCheckpointGenerations - 1).
constexpr int kCheckpointGenerations = 3;

// Moves PATH.1 to PATH.2 and PATH to PATH.1, then writes PATH.
Status WriteCheckpoint(const std::string& path, const Checkpoint& checkpoint,
                       const SigningKey* signer = nullptr);

// NotFound if absent; Corruption naming the problem if truncated, altered, or
// holding a value that is not finite.
// With `trusted`, the checkpoint must carry a valid signature by that key
// (Unauthenticated otherwise).
Result<Checkpoint> ReadCheckpoint(const std::string& path,
                                  const Ed25519PublicKey* trusted = nullptr);
// The same over a checkpoint's bytes; `name` is used in messages.
Result<Checkpoint> DecodeCheckpoint(const std::string& name, const std::string& bytes,
                                    const Ed25519PublicKey* trusted = nullptr);

// The newest usable generation: PATH, else PATH.1, else PATH.2. `*used` (when
// given) gets the file read and `*refused` one line per generation that exists
// but could not be used. NotFound when none exists; the newest generation's
// error when none is usable.
Result<Checkpoint> ReadNewestCheckpoint(const std::string& path, std::string* used = nullptr,
                                        std::vector<std::string>* refused = nullptr,
                                        const Ed25519PublicKey* trusted = nullptr);

}  // namespace fl

#endif  // FEDGE_SERVER_CHECKPOINT_H_
