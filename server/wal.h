// The open round's write-ahead log: the server appends every update it
// accepts, makes the log durable, and only then acknowledges the update. After
// a crash, `fl-server --resume` reopens the round from the log: same nonce,
// same selection, the acknowledged updates kept, their devices not asked again.
// At the round's end the updates are averaged from the log in the order of
// their senders' ids, not in arrival order, so an interrupted and resumed run
// ends with the bit-identical model of an uninterrupted one.
//
// Layout (little-endian), as LevelDB's log_format.h:
// Versions 1 to 10, each pair an unkeyed (odd) and a keyed (even) one; a
// writer uses 3/4 (synchronous rounds), 5/6 (asynchronous steps) or 9/10 (a
// server with relays), and every version is read.
//   header:  magic "FLWL" (4) | version u32 (4) | round u64 | nonce (16)
//            | model version (32) | weight cap i64 | norm bound f64
//            | selected count u32 | per selected device: id length u16, id,
//              registered examples i64 | population u32 (versions 3 and up)
//            | tag of the header's preceding bytes (32)
//   records: body length u32 | body | tag (32): of the body, and in a keyed
//            log of the tag before it (the header's, for the first record)
//            body: sender length u16 | sender | weight i64 | train loss f64
//                  | train seconds f64 | staleness u32 (versions 5 and up)
//                  | contributors u32 (versions 7 and up) | within clip u32
//                  (versions 9 and 10; all ones: not a private partial)
//                  | delta length u64
//                  | encoded delta (its first byte names its codec,
//                    common/codec.h, or a relay's exact sum)
// A record cut short or not matching its tag ends the log (a crash in the
// middle of an append): its update was never acknowledged.
//
// Tags: odd versions, a SHA-256 (integrity only: a server without a key);
// even versions, HMAC-SHA256 under the server's log key (WalKeyFor), so a log
// written, altered or extended by anyone without the server's identity is not
// resumed: its header is refused, and a record of its, or one copied from
// another log of the same server or moved within the log (a keyed record's
// tag also covers the tag before it), is the end of the log.
#ifndef FEDGE_SERVER_WAL_H_
#define FEDGE_SERVER_WAL_H_

#include <array>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "common/clock.h"
#include "common/status.h"

namespace fl {

class SigningKey;

// The key that authenticates a server's round logs; none for a server
// without an identity (lab runs with --insecure).
using WalKey = std::optional<std::array<uint8_t, 32>>;

// The log key of the server holding `signer` (null: none). Derived from an
// Ed25519 signature over a fixed label: deterministic, so the same identity
// gets the same key after a restart, and only its holder can compute it.
WalKey WalKeyFor(const SigningKey* signer);

struct WalHeader {
  uint64_t round{0};
  std::array<uint8_t, 16> nonce{};
  std::array<uint8_t, 32> model_version{};
  int64_t weight_cap{0};
  double norm_bound{0};
  // Selected device -> examples it had registered when selected.
  std::map<std::string, int64_t> selected;
  // Live devices the selection was made from (the expected participants of a
  // private round are the sampling rate times this).
  uint32_t population{0};
  // The log's format version (set when read; a writer uses the newest).
  uint32_t format{0};
};

// One accepted update as the log keeps it.
struct WalRecord {
  std::string sender;
  int64_t weight{0};
  double train_loss{0};
  double train_seconds{0};
  // Asynchronous mode: server steps between the update's task and the step
  // it joins (0 in synchronous rounds).
  uint32_t staleness{0};
  uint32_t contributors{1};
  // A relay's private partial: its contributors' deltas within the clip
  // (versions 9 and 10); -1 for any other record.
  int64_t within_clip{-1};
  std::string delta;  // the encoded delta (common/codec.h) or exact sum
};

// Where a record's body is in the file, for reading it back at the round's end.
struct WalEntry {
  std::string sender;
  int64_t weight{0};
  uint64_t offset{0};  // of the body
  uint32_t length{0};
  uint32_t staleness{0};
  // Devices the record averages (1; more for a relay's partial aggregate;
  // versions 7 to 10 keep it).
  uint32_t contributors{1};
  // A relay's private partial: its devices' deltas within the clip (versions
  // 9 and 10 keep it); -1 for any other record.
  int64_t within_clip{-1};
};

// Appends from one thread; a thread of its own makes them durable
// (fdatasync) in the background, so the server keeps reading and checking
// updates while the disk syncs the previous batch (group commit).
struct WalContents;

class WalWriter final {
 public:
  // Creates (truncates) `path` and writes `header`, durably when `durable`.
  // An empty `path` logs to an unlinked temporary file: the same code path for
  // a server without an output folder, nothing kept.
  // With a `key`, the log is authenticated (an even version).
  // `with_staleness`: records carry a staleness (versions 5 and 6, for
  // asynchronous mode); `with_contributors`: a staleness and the devices each
  // record averages and, for a private partial, how many of them were
  // within the clip (versions 9 and 10, for a server with relays); else
  // versions 3 and 4, which older servers read.
  static Result<std::unique_ptr<WalWriter>> Create(const std::string& path, const WalHeader& header,
                                                   bool durable, const WalKey& key,
                                                   bool with_staleness = false,
                                                   bool with_contributors = false);
  // Continues the log at `path` after its last whole record (`contents` from
  // WalReadAll, with the same key): a torn tail is cut off.
  static Result<std::unique_ptr<WalWriter>> Reopen(const std::string& path,
                                                   const WalContents& contents, bool durable,
                                                   const WalKey& key);
  WalWriter(const WalWriter&) = delete;
  WalWriter& operator=(const WalWriter&) = delete;
  ~WalWriter();

  // Appends a record (in the kernel's cache until synced), writing `delta`
  // from where it is, without a copy. Returns its entry; the record ends at
  // entry.offset + entry.length + 32.
  Result<WalEntry> Append(const std::string& sender, int64_t weight, double train_loss,
                          double train_seconds, std::string_view delta, uint32_t staleness = 0,
                          uint32_t contributors = 1, int64_t within_clip = -1);
  // A sync the sync thread owes is work handed over on `clock`
  // (Clock::BeginWork): simulated time waits for it. Set before the first
  // RequestSync; the steady clock until then.
  void set_clock(const Clock* clock) { clock_ = clock; }
  // Asks the sync thread to make everything appended so far durable, and
  // returns at once.
  void RequestSync();
  // Bytes known durable (everything, when not durable). Records ending at or
  // before it survive a crash.
  uint64_t durable_end() const;
  // Requests a sync and waits for it. IOError if a sync failed.
  Status Sync();
  // The first sync error, if any (the log can then not be trusted).
  Status error() const;
  // Reads the body at `entry` back and parses it.
  Result<WalRecord> Read(const WalEntry& entry) const;
  // Reads the body at `entry` into `buffer` (reused across calls) and points
  // `delta` at its encoded delta: one copy of an update in memory, not two.
  Status ReadDelta(const WalEntry& entry, std::string* buffer, std::string_view* delta) const;

 private:
  WalWriter(int fd, std::string path, uint64_t end, bool durable, const WalKey& key,
            const std::array<uint8_t, 32>& chain, uint32_t format);
  void SyncLoop();

  int fd_{-1};
  uint32_t format_{0};  // the log's version: which fields a record has
  std::string path_;
  uint64_t end_{0};
  bool durable_{false};
  WalKey key_;
  std::array<uint8_t, 32> chain_;  // the last tag written
  mutable std::mutex mu_;
  std::condition_variable cv_;
  uint64_t requested_{0};  // end_ at the latest RequestSync
  uint64_t synced_{0};     // durable bytes
  bool stopping_{false};
  bool owing_{false};  // a sync is requested and not done: work begun on clock_
  const Clock* clock_{SystemClock()};
  Status error_;
  std::thread syncer_;
};

struct WalContents {
  WalHeader header;
  std::vector<WalEntry> entries;
  // Bytes up to the end of the last whole record.
  uint64_t valid_bytes{0};
  // A torn or altered tail was found (and is ignored).
  bool torn_tail{false};
  // The tag of the last whole record (the header's when there is none).
  std::array<uint8_t, 32> chain{};
};

// Reads a log. NotFound when absent; Corruption when its header is damaged
// or not authenticated by `key` (a keyed log read without the key, an
// unkeyed one read with a key, or a tag that does not match).
Result<WalContents> WalReadAll(const std::string& path, const WalKey& key);
// The same over a log's bytes (WalReadAll reads the file, then this).
Result<WalContents> ParseWal(const std::string& bytes, const WalKey& key);

}  // namespace fl

#endif  // FEDGE_SERVER_WAL_H_
