// The enrollment folder: one public identity (NAME.pub from fl-keygen) per
// device allowed to take part. The server re-reads it every round and on
// SIGHUP, so enrolling or removing a device is adding or removing a file.
#ifndef FEDGE_SERVER_ENROLLMENT_H_
#define FEDGE_SERVER_ENROLLMENT_H_

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>

#include "common/status.h"
#include "crypto/ed25519.h"
#include "crypto/identity.h"

namespace fl {

struct EnrolledDevice {
  // Checks the device's signatures.
  Ed25519Verifier verifier;
  // The CURVE key its connections must present (identities made before
  // transport keys have none: they work only with --insecure).
  std::optional<CurveKey> curve;
};

// Reads every *.pub in `dir`, keyed by node id. `with_curve`: each must hold a
// CURVE key too. A file that does not parse is skipped and logged once (its
// message goes into `*reported`, which the caller keeps across reads).
// IOError when the folder cannot be opened.
Result<std::map<std::string, EnrolledDevice>> ReadEnrollment(const std::string& dir,
                                                             bool with_curve,
                                                             std::set<std::string>* reported);

// The CURVE keys the transport admits, shared with the ZAP thread.
struct Admission {
  std::mutex mu;
  std::set<std::string> keys;  // raw 32-byte Curve25519 public keys
  std::atomic<int64_t> denied{0};

  // Whether a handshake with `key` may go on; logs a refusal (the first few,
  // then at every power of two, so that a flood stays readable).
  bool Admit(const std::string& key);
};

// Who may take part: the enrolled devices (--clients DIR) and relays
// (--relays DIR, or "any" with --insecure: whoever sends a partial
// aggregate). Not thread-safe apart from `admission()`.
class Enrollment {
 public:
  Enrollment(std::string clients_dir, std::string relays_dir, bool insecure, bool verbose)
      : clients_dir_(std::move(clients_dir)),
        relays_dir_(std::move(relays_dir)),
        insecure_(insecure),
        verbose_(verbose) {}

  // An enrollment folder of devices or of relays is set.
  bool enrolling() const {
    return !clients_dir_.empty() || (!relays_dir_.empty() && relays_dir_ != "any");
  }
  // Re-reads the folders: every *.pub is a device (or a relay). A file that
  // does not parse is logged and skipped; the others stay enrolled. The
  // transport admits their CURVE keys from here on.
  Status Load();
  const std::map<std::string, EnrolledDevice>& enrolled() const { return enrolled_; }
  bool Has(const std::string& id) const { return enrolled_.count(id) > 0; }

  // True when `id`'s updates may be relays' partial aggregates: an enrolled
  // relay, or under --relays any (with --insecure) one that sent a partial or
  // whose HELLO says how many devices it serves (`claims_devices`).
  bool IsRelay(const std::string& id, bool claims_devices) const;
  // May `id` send partial aggregates at all.
  bool MaySendPartials(const std::string& id) const {
    return (relays_dir_ == "any" && insecure_) || relay_ids_.count(id) > 0;
  }
  // `id` sent a partial aggregate (under --relays any, what makes it a relay).
  void SentPartial(const std::string& id) { partial_senders_.insert(id); }

  const std::shared_ptr<Admission>& admission() const { return admission_; }

 private:
  const std::string clients_dir_;
  const std::string relays_dir_;
  const bool insecure_;
  const bool verbose_;
  std::map<std::string, EnrolledDevice> enrolled_;
  // Enrollment files already reported as unusable.
  std::set<std::string> skipped_;
  std::set<std::string> relay_ids_;
  std::set<std::string> partial_senders_;
  std::shared_ptr<Admission> admission_ = std::make_shared<Admission>();
};

}  // namespace fl

#endif  // FEDGE_SERVER_ENROLLMENT_H_
