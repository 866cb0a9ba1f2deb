// A transfer window: how many model-sized bytes may be on their way at once.
//
// Devices that train side by side finish side by side. Ten dense CNN updates
// (6.65 MB each) then arrive within a few milliseconds, and ZeroMQ holds all of
// them in memory until the server's one thread has checked and logged each in
// turn. Over CURVE the same happens the other way: every connection encrypts
// its own copy of the TASK, all at once. The server keeps one window per
// direction:
//   uploads  a device whose TASK asked for it sends READY (its update's size)
//            when the update is encoded, and the UPDATE only once granted;
//            its grant ends when the update arrives.
//   TASKs    over CURVE, a TASK goes out only while the TASK bytes not yet
//            received fit; a device says it received one with a HELLO that
//            names the round.
// Grants go in arrival order while the granted bytes stay within the window
// (one transfer is always granted, whatever its size). On a fast network the
// cost is a round trip per device, overlapped with the server's work on the
// transfer before it.
//
// A grant counts toward the window until its transfer is done, the device is
// given up on, or hold_seconds have passed, whichever comes first. So transfers
// that move at LAN speed are bounded, while a slow link (a 6.65 MB update takes
// 53 s at 1 Mbit/s), a device that was granted and went quiet, or one that asks
// and never sends, holds the others back for hold_seconds at most; past that
// its bytes are outside the bound. A window is cooperation, not a security
// control: an UPDATE sent without a grant is still handled (devices older than
// admission send that way), and what bounds a hostile device's bytes is the
// per-type size limit and one update per device per round.
//
// Plain bookkeeping, no I/O: the server sends what Ask and Pump decide.
#ifndef FEDGE_SERVER_TRANSFER_WINDOW_H_
#define FEDGE_SERVER_TRANSFER_WINDOW_H_

#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <string>
#include <vector>

namespace fl {

class TransferWindow final {
 public:
  // `window_bytes` 0 = no window: every upload is granted at once.
  TransferWindow(size_t window_bytes, double hold_seconds);

  // `id` asks to transfer `bytes`. True: granted now (or already, this round).
  // False: it waits its turn (or already waits), and Pump grants it later.
  bool Ask(const std::string& id, size_t bytes, double now);

  // `id`'s transfer arrived, or it is out of the round: its grant or place in
  // the queue ends.
  void Release(const std::string& id);

  // Stops counting grants older than hold_seconds, then grants waiting devices
  // in arrival order while they fit. Returns the ids granted now.
  std::vector<std::string> Pump(double now);

  // Forgets every grant and waiting device (the round closed).
  void Clear();
  // Starts the peak, queued and outlasted counts afresh, keeping the grants
  // and the queue (asynchronous mode: transfers span server steps).
  void ResetStats() {
    peak_granted_bytes_ = granted_bytes_;
    queued_ = 0;
    outlasted_ = 0;
  }

  // Bytes of the grants that count toward the window.
  size_t granted_bytes() const { return granted_bytes_; }
  size_t waiting() const { return queue_.size(); }
  // Largest granted_bytes() since construction or the last Clear().
  size_t peak_granted_bytes() const { return peak_granted_bytes_; }
  // Transfers that had to wait, and grants that outlasted hold_seconds, since
  // the last Clear().
  int64_t queued() const { return queued_; }
  int64_t outlasted() const { return outlasted_; }

 private:
  struct Grant {
    size_t bytes;
    double at;
    bool counted;  // still toward granted_bytes_
  };
  struct Waiting {
    std::string id;
    size_t bytes;
  };
  bool Fits(size_t bytes) const;
  void GrantNow(const std::string& id, size_t bytes, double now);
  void StopCounting(Grant* g);

  const size_t window_bytes_;
  const double hold_seconds_;
  std::map<std::string, Grant> grants_;
  std::deque<Waiting> queue_;
  size_t granted_bytes_{0};
  size_t counted_{0};
  size_t peak_granted_bytes_{0};
  int64_t queued_{0};
  int64_t outlasted_{0};
};

}  // namespace fl

#endif  // FEDGE_SERVER_TRANSFER_WINDOW_H_
