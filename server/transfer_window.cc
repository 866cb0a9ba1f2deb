#include "server/transfer_window.h"

#include <algorithm>

namespace fl {

TransferWindow::TransferWindow(size_t window_bytes, double hold_seconds)
    : window_bytes_(window_bytes), hold_seconds_(hold_seconds) {}

bool TransferWindow::Fits(size_t bytes) const {
  return window_bytes_ == 0 || counted_ == 0 || granted_bytes_ + bytes <= window_bytes_;
}

void TransferWindow::GrantNow(const std::string& id, size_t bytes, double now) {
  grants_[id] = {bytes, now, true};
  granted_bytes_ += bytes;
  counted_++;
  peak_granted_bytes_ = std::max(peak_granted_bytes_, granted_bytes_);
}

void TransferWindow::StopCounting(Grant* g) {
  if (!g->counted) return;
  granted_bytes_ -= g->bytes;
  counted_--;
  g->counted = false;
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
    StopCounting(&it->second);
    grants_.erase(it);
    return;
  }
  queue_.erase(
      std::remove_if(queue_.begin(), queue_.end(), [&id](const Waiting& w) { return w.id == id; }),
      queue_.end());
}

std::vector<std::string> TransferWindow::Pump(double now) {
  for (auto& [id, g] : grants_) {
    if (g.counted && now - g.at > hold_seconds_) {
      StopCounting(&g);
      outlasted_++;
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
  counted_ = 0;
  peak_granted_bytes_ = 0;
  queued_ = 0;
  outlasted_ = 0;
}

}  // namespace fl
