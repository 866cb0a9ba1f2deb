// The enrollment folder: one public identity (NAME.pub from fl-keygen) per
// device allowed to take part. The server re-reads it every round and on
// SIGHUP, so enrolling or removing a device is adding or removing a file.
#ifndef FEDGE_SERVER_ENROLLMENT_H_
#define FEDGE_SERVER_ENROLLMENT_H_

#include <map>
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

}  // namespace fl

#endif  // FEDGE_SERVER_ENROLLMENT_H_
