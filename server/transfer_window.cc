#include "server/transfer_window.h"

#include <algorithm>

namespace fl {

TransferWindow::TransferWindow(size_t window_bytes, double grant_seconds)
    : window_bytes_(window_bytes), grant_seconds_(grant_seconds) {}

bool TransferWindow::Fits(size_t bytes) const {
  return window_bytes_ == 0 || grants_.empty() || granted_bytes_ + bytes <= window_bytes_;
}

void TransferWindow::GrantNow(const std::string& id, size_t bytes, double now) {
  grants_[id] = {bytes, now};
  granted_bytes_ += bytes;
  peak_granted_bytes_ = std::max(peak_granted_bytes_, granted_bytes_);
}

bool TransferWindow::Ask(const std::string& id, size_t bytes, double now) {
  if (grants_.count(id)) return true;  // asked again (a reconnect): still granted
  for (const auto& w : queue_) {
    if (w.id == id) return false;
  }
  // First come, first served: nobody overtakes a device already waiting.
  if (queue_.empty() && Fits(bytes)) {
    GrantNow(id, bytes, now);
    return true;
  }
  queue_.push_back({id, bytes});
  queued_++;
  return false;
}

void TransferWindow::Release(const std::string& id) {
  auto it = grants_.find(id);
  if (it != grants_.end()) {
    granted_bytes_ -= it->second.bytes;
    grants_.erase(it);
    return;
  }
  queue_.erase(
      std::remove_if(queue_.begin(), queue_.end(), [&id](const Waiting& w) { return w.id == id; }),
      queue_.end());
}

std::vector<std::string> TransferWindow::Pump(double now) {
  for (auto it = grants_.begin(); it != grants_.end();) {
    if (now - it->second.at > grant_seconds_) {
      granted_bytes_ -= it->second.bytes;
      it = grants_.erase(it);
      lapsed_++;
    } else {
      ++it;
    }
  }
  std::vector<std::string> granted;
  while (!queue_.empty() && Fits(queue_.front().bytes)) {
    GrantNow(queue_.front().id, queue_.front().bytes, now);
    granted.push_back(std::move(queue_.front().id));
    queue_.pop_front();
  }
  return granted;
}

void TransferWindow::Clear() {
  grants_.clear();
  queue_.clear();
  granted_bytes_ = 0;
  peak_granted_bytes_ = 0;
  queued_ = 0;
  lapsed_ = 0;
}

}  // namespace fl
