#include "transport/simulated_network.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <utility>

namespace fl {
namespace transport {

class SimulatedNetwork::SimSocket final : public Socket {
 public:
  SimSocket(SimulatedNetwork* net, bool listening, std::string endpoint, std::string id,
            SocketOptions o)
      : net_(net),
        listening_(listening),
        endpoint_(std::move(endpoint)),
        id_(std::move(id)),
        o_(std::move(o)) {}
  ~SimSocket() override { net_->Remove(this); }

  Status Send(const std::string& peer, const std::vector<std::string>& frames) override {
    return net_->SendFrom(this, peer, frames);
  }
  Status SendShared(const std::string& peer, const std::vector<SharedFrame>& frames) override {
    std::vector<std::string> copy;
    copy.reserve(frames.size());
    for (const auto& f : frames) copy.push_back(*f);
    return net_->SendFrom(this, peer, std::move(copy));
  }
  Result<bool> TryReceive(Received* out) override {
    std::lock_guard<std::mutex> lock(net_->mu_);
    if (inbox_.empty()) return false;
    *out = std::move(inbox_.front());
    inbox_.pop_front();
    return true;
  }
  std::string endpoint() const override { return endpoint_; }
  void* handle() override { return this; }
  std::string TakeHandshakeError() override {
    std::lock_guard<std::mutex> lock(net_->mu_);
    return std::exchange(handshake_error_, "");
  }

 private:
  friend class SimulatedNetwork;
  SimulatedNetwork* const net_;
  const bool listening_;
  const std::string endpoint_;
  const std::string id_;  // routing id of a connecting socket
  const SocketOptions o_;
  // Guarded by net_->mu_.
  std::deque<Received> inbox_;
  std::string handshake_error_;
};

SimulatedNetwork::SimulatedNetwork(double start_seconds) : now_(start_seconds) {}

SimulatedNetwork::~SimulatedNetwork() = default;

Result<std::unique_ptr<Socket>> SimulatedNetwork::Listen(const std::string& endpoint,
                                                         const SocketOptions& options) {
  if (!options.curve.secret_key.empty() && !options.curve.authorize) {
    return Status::InvalidArgument("a CURVE listening socket needs an authorize callback");
  }
  std::lock_guard<std::mutex> lock(mu_);
  std::string name = endpoint;
  if (name.find('*') != std::string::npos) name = "inproc://sim-" + std::to_string(next_id_++);
  if (listeners_.count(name)) return Status::Unavailable("address in use", name);
  auto s = std::make_unique<SimSocket>(this, /*listening=*/true, name, "", options);
  listeners_[name] = s.get();
  return std::unique_ptr<Socket>(std::move(s));
}

Result<std::unique_ptr<Socket>> SimulatedNetwork::Connect(const std::string& endpoint,
                                                          const SocketOptions& options) {
  std::lock_guard<std::mutex> lock(mu_);
  const std::string id = "peer-" + std::to_string(next_id_++);
  auto s = std::make_unique<SimSocket>(this, /*listening=*/false, endpoint, id, options);
  connected_[id] = s.get();
  return std::unique_ptr<Socket>(std::move(s));
}

void SimulatedNetwork::Remove(SimSocket* s) {
  std::lock_guard<std::mutex> lock(mu_);
  if (s->listening_) {
    auto it = listeners_.find(s->endpoint_);
    if (it != listeners_.end() && it->second == s) listeners_.erase(it);
  } else {
    connected_.erase(s->id_);
  }
}

Status SimulatedNetwork::SendFrom(SimSocket* from, const std::string& peer,
                                  std::vector<std::string> frames) {
  std::lock_guard<std::mutex> lock(mu_);
  SimSocket* to = nullptr;
  Received rx;
  if (from->listening_) {
    auto it = connected_.find(peer);
    if (it == connected_.end() || it->second->endpoint_ != from->endpoint_) {
      return Status::NotFound("no such peer", peer);
    }
    to = it->second;
  } else {
    auto it = listeners_.find(from->endpoint_);
    if (it == listeners_.end()) {  // nobody listens (yet): ZeroMQ would retry; dropped here
      dropped_++;
      return Status::OK();
    }
    to = it->second;
    const CurveOptions& server = to->o_.curve;
    if (!server.secret_key.empty()) {
      const CurveOptions& device = from->o_.curve;
      if (device.secret_key.empty() || device.server_key != server.public_key) {
        from->handshake_error_ =
            "CURVE handshake failed: the server's key is not the one pinned (--server-key), "
            "or it does not speak CURVE";
        dropped_++;
        return Status::OK();
      }
      if (!server.authorize(device.public_key)) {
        from->handshake_error_ =
            "the server refused this device's CURVE key (status 400): is its .pub in the "
            "server's enrollment folder?";
        dropped_++;
        return Status::OK();
      }
      rx.peer_key = device.public_key;
    }
    rx.peer = from->id_;
  }
  for (const auto& f : frames) {
    rx.bytes += f.size();
    if (f.size() > to->o_.max_frame_bytes) {  // ZeroMQ drops the connection unread
      dropped_++;
      return Status::OK();
    }
  }
  rx.frame_count = frames.size();
  if (frames.size() > to->o_.max_frames) frames.resize(to->o_.max_frames);
  rx.frames = std::move(frames);
  Deliver(to, std::move(rx));
  return Status::OK();
}

void SimulatedNetwork::Deliver(SimSocket* to, Received rx) {
  to->inbox_.push_back(std::move(rx));
  delivered_++;
  // A waiter on `to` is busy from now on: the clock must not move before it
  // has handled the message.
  bool woke = false;
  for (Waiter* w : waiters_) {
    if (w->woken) continue;
    if (std::find(w->sockets.begin(), w->sockets.end(), to) != w->sockets.end()) {
      w->woken = true;
      busy_++;
      woke = true;
    }
  }
  if (woke) cv_.notify_all();
}

Result<int> SimulatedNetwork::Poll(const std::vector<Socket*>& sockets, int timeout_ms,
                                   std::vector<bool>* ready) {
  std::vector<const SimSocket*> mine;
  for (Socket* s : sockets) {
    auto* sim = dynamic_cast<SimSocket*>(s);
    if (!sim || sim->net_ != this) {
      return Status::InvalidArgument("not a socket of this simulated network");
    }
    mine.push_back(sim);
  }
  std::unique_lock<std::mutex> lock(mu_);
  const double deadline =
      timeout_ms < 0 ? std::numeric_limits<double>::infinity() : now_ + timeout_ms / 1000.0;
  while (true) {
    ready->assign(mine.size(), false);
    int n = 0;
    for (size_t i = 0; i < mine.size(); ++i) {
      if (!mine[i]->inbox_.empty()) (*ready)[i] = true, n++;
    }
    if (n > 0 || timeout_ms == 0 || now_ >= deadline) return n;
    Wait(&lock, deadline, mine);
  }
}

double SimulatedNetwork::Now() const {
  std::lock_guard<std::mutex> lock(mu_);
  return now_;
}

void SimulatedNetwork::SleepFor(double seconds) const {
  std::unique_lock<std::mutex> lock(mu_);
  const double until = now_ + std::max(0.0, seconds);
  while (now_ < until) Wait(&lock, until, {});
}

void SimulatedNetwork::BeginWork() const {
  std::lock_guard<std::mutex> lock(mu_);
  busy_++;
}

void SimulatedNetwork::EndWork() const {
  std::lock_guard<std::mutex> lock(mu_);
  busy_--;
  CheckBusy();
  MaybeAdvance();
}

void SimulatedNetwork::CheckBusy() const {
  if (busy_ >= 0) return;
  std::fprintf(stderr,
               "SimulatedNetwork: a thread waited or ended work without taking part "
               "(Join or BeginWork first)\n");
  std::abort();
}

bool SimulatedNetwork::WaitFor(double seconds, const std::function<bool()>& ready) const {
  std::unique_lock<std::mutex> lock(mu_);
  const double deadline = now_ + std::max(0.0, seconds);
  while (true) {
    if (ready()) return true;
    if (now_ >= deadline) return false;
    Wait(&lock, deadline, {}, &ready);
  }
}

void SimulatedNetwork::Notify() const {
  std::lock_guard<std::mutex> lock(mu_);
  bool woke = false;
  for (Waiter* w : waiters_) {
    if (!w->woken && w->ready && (*w->ready)()) {
      w->woken = true;
      busy_++;
      woke = true;
    }
  }
  if (woke) cv_.notify_all();
}

void SimulatedNetwork::Wait(std::unique_lock<std::mutex>* lock, double deadline,
                            std::vector<const SimSocket*> sockets,
                            const std::function<bool()>* ready) const {
  Waiter w{deadline, std::move(sockets), ready};
  waiters_.push_back(&w);
  busy_--;  // the caller's participation waits
  CheckBusy();
  MaybeAdvance();
  cv_.wait(*lock, [&w] { return w.woken; });  // whoever woke it counted it busy again
  waiters_.remove(&w);
}

void SimulatedNetwork::MaybeAdvance() const {
  if (busy_ > 0) return;
  double next = std::numeric_limits<double>::infinity();
  for (const Waiter* w : waiters_) {
    if (!w->woken) next = std::min(next, w->deadline);
  }
  if (std::isinf(next)) return;  // everyone waits for a message nobody will send
  now_ = std::max(now_, next);
  for (Waiter* w : waiters_) {
    if (!w->woken && w->deadline <= now_) {
      w->woken = true;
      busy_++;
    }
  }
  cv_.notify_all();
}

int64_t SimulatedNetwork::delivered() const {
  std::lock_guard<std::mutex> lock(mu_);
  return delivered_;
}

int64_t SimulatedNetwork::dropped() const {
  std::lock_guard<std::mutex> lock(mu_);
  return dropped_;
}

}  // namespace transport
}  // namespace fl
