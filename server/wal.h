// The open round's write-ahead log: the server appends every update it
// accepts, makes the log durable, and only then acknowledges the update. After
// a crash, `fl-server --resume` reopens the round from the log: same nonce,
// same selection, the acknowledged updates kept, their devices not asked again.
// At the round's end the updates are averaged from the log in the order of
// their senders' ids, not in arrival order, so an interrupted and resumed run
// ends with the bit-identical model of an uninterrupted one.
//
// Layout (little-endian), as LevelDB's log_format.h:
//   header:  magic "FLWL" (4) | version u32 (4) = 1 | round u64 | nonce (16)
//            | model version (32) | weight cap i64 | norm bound f64
//            | selected count u32 | per selected device: id length u16, id,
//              registered examples i64
//            | SHA-256 of the header's preceding bytes (32)
//   records: body length u32 | body | SHA-256 of the body (32)
//            body: sender length u16 | sender | weight i64 | train loss f64
//                  | train seconds f64 | delta length u64 | encoded delta
// A record cut short or not matching its hash ends the log (a crash in the
// middle of an append): its update was never acknowledged.
#ifndef FEDGE_SERVER_WAL_H_
#define FEDGE_SERVER_WAL_H_

#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "common/status.h"

namespace fl {

struct WalHeader {
  uint64_t round{0};
  std::array<uint8_t, 16> nonce{};
  std::array<uint8_t, 32> model_version{};
  int64_t weight_cap{0};
  double norm_bound{0};
  // Selected device -> examples it had registered when selected.
  std::map<std::string, int64_t> selected;
};

// One accepted update as the log keeps it.
struct WalRecord {
  std::string sender;
  int64_t weight{0};
  double train_loss{0};
  double train_seconds{0};
  std::string delta;  // the encoded delta (quant codec)
};

// Where a record's body is in the file, for reading it back at the round's end.
struct WalEntry {
  std::string sender;
  int64_t weight{0};
  uint64_t offset{0};  // of the body
  uint32_t length{0};
};

class WalWriter final {
 public:
  // Creates (truncates) `path` and writes `header`, durably when `durable`.
  // An empty `path` logs to an unlinked temporary file: the same code path for
  // a server without an output folder, nothing kept.
  static Result<WalWriter> Create(const std::string& path, const WalHeader& header, bool durable);
  // Continues the log at `path` after its last whole record (`valid_bytes`
  // from WalReadAll): a torn tail is cut off.
  static Result<WalWriter> Reopen(const std::string& path, uint64_t valid_bytes, bool durable);
  WalWriter(WalWriter&& other) noexcept;
  WalWriter& operator=(WalWriter&& other) noexcept;
  WalWriter(const WalWriter&) = delete;
  WalWriter& operator=(const WalWriter&) = delete;
  ~WalWriter();

  // Appends `record` (buffered by the kernel until Sync). Returns its entry.
  Result<WalEntry> Append(const WalRecord& record);
  // Makes every append so far durable (fdatasync; nothing when not durable).
  Status Sync();
  // Reads the body at `entry` back and parses it.
  Result<WalRecord> Read(const WalEntry& entry) const;

  const std::string& path() const { return path_; }

 private:
  WalWriter(int fd, std::string path, uint64_t end, bool durable)
      : fd_(fd), path_(std::move(path)), end_(end), durable_(durable) {}
  int fd_{-1};
  std::string path_;
  uint64_t end_{0};
  bool durable_{false};
  bool dirty_{false};
};

struct WalContents {
  WalHeader header;
  std::vector<WalEntry> entries;
  // Bytes up to the end of the last whole record.
  uint64_t valid_bytes{0};
  // A torn or altered tail was found (and is ignored).
  bool torn_tail{false};
};

// Reads a log. NotFound when absent; Corruption when its header is damaged.
Result<WalContents> WalReadAll(const std::string& path);

}  // namespace fl

#endif  // FEDGE_SERVER_WAL_H_
