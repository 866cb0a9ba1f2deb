#include "server/run_store.h"

#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "common/file_util.h"
#include "crypto/model_file.h"

namespace fl {

RunStore::RunStore(std::string out_dir, bool privacy, bool async, const SigningKey* signer)
    : dir_(std::move(out_dir)), privacy_(privacy), async_(async), signer_(signer) {}

std::string RunStore::WalPath() const { return writes() ? dir_ + "/round.wal" : ""; }
std::string RunStore::CheckpointPath() const { return dir_ + "/checkpoint.fl"; }
std::string RunStore::ModelPath() const { return dir_ + "/global.flm"; }
std::string RunStore::RowsPath() const { return dir_ + "/rounds.csv"; }

Status RunStore::Prepare() const { return writes() ? CreateDirectories(dir_) : Status::OK(); }

namespace {

// One row of rounds.csv (RoundsCsvHeader's columns), with its newline.
std::string RowText(const RoundMetrics& rm, bool privacy, bool async) {
  char buf[256];
  // Rounds without evaluation leave the accuracy and loss fields empty.
  char acc_s[32] = "", loss_s[32] = "";
  if (!std::isnan(rm.test_accuracy)) {
    std::snprintf(acc_s, sizeof(acc_s), "%.6f", rm.test_accuracy);
    std::snprintf(loss_s, sizeof(loss_s), "%.6f", rm.test_loss);
  }
  std::snprintf(buf, sizeof(buf), "%llu,%d,%s,%s,%llu,%llu,%.3f,%.3f,%.6g",
                static_cast<unsigned long long>(rm.round), rm.participants, acc_s, loss_s,
                static_cast<unsigned long long>(rm.upload_bytes),
                static_cast<unsigned long long>(rm.download_bytes), rm.round_seconds,
                rm.eval_seconds, rm.max_delta_norm);
  std::string row = buf;
  if (privacy) {
    // Empty for a row restored without it (its round's accountant is gone).
    if (!std::isnan(rm.epsilon)) std::snprintf(buf, sizeof(buf), ",%.6g", rm.epsilon);
    row += std::isnan(rm.epsilon) ? "," : buf;
  }
  if (async) {
    std::snprintf(buf, sizeof(buf), ",%d,%.3f,%u,%d", rm.selected, rm.mean_staleness,
                  rm.max_staleness, rm.expired);
    row += buf;
  }
  return row + "\n";
}

}  // namespace

Status RunStore::AppendRow(const RoundMetrics& rm) const {
  if (!writes()) return Status::OK();
  const std::string path = RowsPath();
  struct stat st;
  const bool exists = ::stat(path.c_str(), &st) == 0 && st.st_size > 0;
  std::string text = exists ? "" : RoundsCsvHeader(privacy_, async_) + "\n";
  text += RowText(rm, privacy_, async_);
  FILE* f = std::fopen(path.c_str(), "a");
  if (!f) return Status::IOError(path, std::string("cannot open for append: ") + std::strerror(errno));
  // The row is durable before the round is reported done.
  bool ok = std::fwrite(text.data(), 1, text.size(), f) == text.size();
  ok = std::fflush(f) == 0 && ok;
  ok = ::fsync(fileno(f)) == 0 && ok;
  const int saved = errno;
  ok = std::fclose(f) == 0 && ok;
  if (!ok) {
    return Status::IOError(path, std::string("writing a row failed: ") + std::strerror(saved));
  }
  return Status::OK();
}

uint64_t RunStore::ReconcileRows(uint64_t checkpoint_round) const {
  if (!writes()) return 0;
  const std::string path = RowsPath();
  const std::string columns = RoundsCsvHeader(privacy_, async_);
  auto text = ReadFile(path);
  if (!text.ok() || text->empty()) return 0;
  const std::string header = text->substr(0, text->find('\n'));
  if (header != columns) {
    const std::string aside = path + ".old";
    if (std::rename(path.c_str(), aside.c_str()) == 0) {
      spdlog::warn("{} has other columns (an older fl-server wrote it); moved it to {}", path,
                   aside);
    }
    return 0;
  }
  // Rows of rounds after the checkpoint (resumed from an older generation):
  // those rounds run again, so their old rows go.
  std::string kept = header + "\n";
  uint64_t last = 0;
  size_t dropped = 0;
  for (size_t pos = header.size() + 1; pos < text->size();) {
    size_t end = text->find('\n', pos);
    if (end == std::string::npos) end = text->size();
    const uint64_t r = std::strtoull(text->c_str() + pos, nullptr, 10);
    if (r <= checkpoint_round) {
      kept.append(*text, pos, end - pos).push_back('\n');
      last = std::max(last, r);
    } else {
      ++dropped;
    }
    pos = end + 1;
  }
  if (dropped > 0) {
    Status st = WriteFileAtomic(path, kept);
    if (st.ok()) {
      spdlog::warn(
          "{}: removed {} row(s) of rounds after the checkpoint's round {}; they run again", path,
          dropped, checkpoint_round);
    } else {
      spdlog::error("{}: {}", path, st.ToString());
    }
  }
  return last;
}

Status RunStore::Commit(const Checkpoint& checkpoint,
                        const std::function<void(const char*)>& after) const {
  if (!writes()) return Status::OK();
  FL_RETURN_IF_ERROR(WriteCheckpoint(CheckpointPath(), checkpoint, signer_));
  after("checkpoint");
  std::remove(WalPath().c_str());
  after("log_removed");
  FL_RETURN_IF_ERROR(WriteModel(checkpoint.model));
  after("model_file");
  return Status::OK();
}

Status RunStore::WriteModel(const ModelState& model) const {
  if (!writes()) return Status::OK();
  // The model as it leaves the server: a model file, signed when the server
  // has a key (fl-compress inspect --signer checks it).
  ModelFileOptions options;
  options.meta = meta_;
  return WriteModelFile(ModelPath(), model, options, signer_);
}

}  // namespace fl
