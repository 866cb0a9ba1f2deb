#include "server/enrollment.h"

#include <dirent.h>
#include <spdlog/spdlog.h>

namespace fl {

Result<std::map<std::string, EnrolledDevice>> ReadEnrollment(const std::string& dir,
                                                             bool with_curve,
                                                             std::set<std::string>* reported) {
  DIR* d = ::opendir(dir.c_str());
  if (!d) return Status::IOError(dir, "cannot open enrollment folder");
  std::map<std::string, EnrolledDevice> devices;
  while (dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (name.size() < 5 || name.compare(name.size() - 4, 4, ".pub") != 0) continue;
    const std::string path = dir + "/" + name;
    auto pub = with_curve ? LoadPublicIdentityWithCurve(path) : LoadPublicIdentity(path);
    if (!pub.ok()) {
      // Logged once per file content, not at every round.
      if (reported->insert(pub.status().ToString()).second) {
        spdlog::warn("enrollment: skipping {}", pub.status().ToString());
      }
      continue;
    }
    auto verifier = Ed25519Verifier::Create(pub->signing);
    if (!verifier.ok()) {
      if (reported->insert(path + verifier.status().ToString()).second) {
        spdlog::warn("enrollment: skipping {}: {}", path, verifier.status().ToString());
      }
      continue;
    }
    devices.emplace(NodeId(pub->signing), EnrolledDevice{*verifier, pub->curve});
  }
  ::closedir(d);
  return devices;
}

}  // namespace fl
