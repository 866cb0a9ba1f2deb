#include "server/registry.h"

#include <algorithm>

namespace fl {

bool ClientRegistry::AllowHello(const std::string& id, double now) {
  auto it = clients_.find(id);
  if (it == clients_.end()) return true;
  ClientEntry& c = it->second;
  c.hello_tokens =
      std::min(kHelloBurst, c.hello_tokens + (now - c.hello_refilled_at) * kHelloPerSecond);
  c.hello_refilled_at = now;
  if (c.hello_tokens < 1) return false;
  c.hello_tokens -= 1;
  return true;
}

void ClientRegistry::StartHelloBucket(ClientEntry* c, double now) {
  c->hello_tokens = kHelloBurst - 1;
  c->hello_refilled_at = now;
}

bool ClientRegistry::MakeRoom(double now, const std::function<bool(const std::string&)>& in_round) {
  if (clients_.size() < capacity_) return true;
  auto oldest = clients_.end();
  for (auto it = clients_.begin(); it != clients_.end(); ++it) {
    const bool live = now - it->second.last_seen <= timeout_;
    if (live || in_round(it->first)) continue;
    if (oldest == clients_.end() || it->second.last_seen < oldest->second.last_seen) oldest = it;
  }
  if (oldest == clients_.end()) return false;
  clients_.erase(oldest);
  return true;
}

int ClientRegistry::Live(double now, std::vector<std::string>* ids) const {
  int n = 0;
  for (const auto& [id, c] : clients_) {
    if (c.reachable && now - c.last_seen <= timeout_) {
      ++n;
      if (ids) ids->push_back(id);
    }
  }
  return n;
}

}  // namespace fl
