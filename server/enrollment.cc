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

bool Admission::Admit(const std::string& key) {
  bool ok;
  {
    std::lock_guard<std::mutex> lock(mu);
    ok = keys.count(key) > 0;
  }
  if (!ok) {
    const int64_t n = ++denied;
    if (n <= 5 || (n & (n - 1)) == 0) {
      spdlog::warn("refused a CURVE handshake: transport key {} is not enrolled ({} so far)",
                   Z85Encode(reinterpret_cast<const uint8_t*>(key.data()), key.size()), n);
    }
  }
  return ok;
}

Status Enrollment::Load() {
  if (!enrolling()) return Status::OK();
  std::map<std::string, EnrolledDevice> keys;
  if (!clients_dir_.empty()) {
    auto read = ReadEnrollment(clients_dir_, /*with_curve=*/!insecure_, &skipped_);
    if (!read.ok()) return read.status();
    keys = std::move(read).value();
  }
  if (!relays_dir_.empty() && relays_dir_ != "any") {
    // Relays are admitted like devices; their updates may be partials.
    auto relays = ReadEnrollment(relays_dir_, /*with_curve=*/!insecure_, &skipped_);
    if (!relays.ok()) return relays.status();
    std::set<std::string> ids;
    for (auto& [id, relay] : *relays) {
      ids.insert(id);
      keys.insert_or_assign(id, std::move(relay));
    }
    if (ids != relay_ids_ && verbose_) {
      spdlog::info("enrollment: {} relay(s) in {}", ids.size(), relays_dir_);
    }
    relay_ids_ = std::move(ids);
  }
  std::set<std::string> curve_keys;
  for (const auto& [id, device] : keys) {
    if (device.curve) curve_keys.insert(KeyBytes(*device.curve));
  }
  {
    std::lock_guard<std::mutex> lock(admission_->mu);
    admission_->keys = std::move(curve_keys);
  }
  if (keys.size() != enrolled_.size() && verbose_ && !clients_dir_.empty()) {
    spdlog::info("enrollment: {} device(s) in {}", keys.size() - relay_ids_.size(), clients_dir_);
  }
  enrolled_ = std::move(keys);
  return Status::OK();
}

bool Enrollment::IsRelay(const std::string& id, bool claims_devices) const {
  if (relays_dir_ != "any") return relay_ids_.count(id) > 0;
  if (!insecure_) return false;
  // (Under --relays any a participant may send partials anyway: the claim
  // grants nothing a partial would not.)
  return partial_senders_.count(id) > 0 || claims_devices;
}

}  // namespace fl
