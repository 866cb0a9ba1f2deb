// What a run keeps in its output folder (--out), in one place:
//   rounds.csv        one row per completed round, appended durably
//   checkpoint.fl     the round's commit point (server/checkpoint.h), with
//                     two older generations beside it
//   round.wal         the open round's write-ahead log (server/wal.h)
//   global.flm        the model as it leaves the server, derived from the
//                     checkpoint (rewritten on resume), signed with a key
// A store without a folder writes nothing (experiments that keep results in
// memory); its round log is not durable.
#ifndef FEDGE_SERVER_RUN_STORE_H_
#define FEDGE_SERVER_RUN_STORE_H_

#include <cstdint>
#include <functional>
#include <string>

#include "common/model_state.h"
#include "common/status.h"
#include "crypto/model_file.h"
#include "server/checkpoint.h"
#include "server/round_metrics.h"

namespace fl {

class SigningKey;

class RunStore {
 public:
  // `privacy`: rounds.csv has the epsilon column; `async`: the columns of
  // asynchronous mode (RoundsCsvHeader). `signer` (may be null, not
  // owned) signs the checkpoint and the model file.
  RunStore(std::string out_dir, bool privacy, bool async, const SigningKey* signer);

  bool writes() const { return !dir_.empty(); }
  const std::string& dir() const { return dir_; }
  // "" when the store writes nothing.
  std::string WalPath() const;
  std::string CheckpointPath() const;
  std::string ModelPath() const;
  std::string RowsPath() const;

  // Creates the folder.
  Status Prepare() const;

  // Appends `m`'s row to rounds.csv (the header first when the file is new)
  // and syncs it.
  Status AppendRow(const RoundMetrics& m) const;

  // At --resume: a rounds.csv with other columns is moved aside to
  // rounds.csv.old (rows of two layouts in one file would not parse), and rows
  // of rounds after `checkpoint_round` (an older checkpoint generation was
  // resumed: they run again) are removed. Returns the last round with a row.
  uint64_t ReconcileRows(uint64_t checkpoint_round) const;

  // The round's commit: the checkpoint (the commit point; from here on the
  // round's log is spent), the log removed, then global.flm. `after(step)` is
  // called after each ("checkpoint", "log_removed", "model_file"): the crash
  // tests' hook.
  Status Commit(const Checkpoint& checkpoint,
                const std::function<void(const char* step)>& after) const;

  // Writes global.flm (signed when the store has a signer), with the
  // normalisation and class names set by SetModelMeta.
  Status WriteModel(const ModelState& model) const;
  void SetModelMeta(ModelFileMeta meta) { meta_ = std::move(meta); }

 private:
  std::string dir_;
  ModelFileMeta meta_;
  bool privacy_;
  bool async_;
  const SigningKey* signer_;
};

}  // namespace fl

#endif  // FEDGE_SERVER_RUN_STORE_H_
