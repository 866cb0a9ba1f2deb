// ZeroMQ backend of transport.h: ROUTER for listening, DEALER for connecting.
#include <zmq.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <deque>
#include <iterator>
#include <map>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "transport/transport.h"

namespace fl {
namespace transport {
namespace {

Status ZmqError(const std::string& what) {
  return Status::Unavailable(what, zmq_strerror(zmq_errno()));
}

constexpr size_t kCurveKeyBytes = 32;

// Reads one event waiting on a socket monitor (zmq_socket_monitor's PAIR end),
// without blocking: false when none is waiting. An event is two frames, u16
// event + u32 value (a descriptor, an errno, a ZAP status), then the endpoint.
bool NextMonitorEvent(void* monitor, uint16_t* event, uint32_t* value) {
  zmq_msg_t m;
  zmq_msg_init(&m);
  if (zmq_msg_recv(&m, monitor, ZMQ_DONTWAIT) < 0) {
    zmq_msg_close(&m);
    return false;
  }
  *event = 0;
  *value = 0;
  if (zmq_msg_size(&m) == 6) {
    std::memcpy(event, zmq_msg_data(&m), 2);
    std::memcpy(value, static_cast<const char*>(zmq_msg_data(&m)) + 2, 4);
  }
  const bool more = zmq_msg_more(&m);
  zmq_msg_close(&m);
  if (more) {
    zmq_msg_t endpoint;
    zmq_msg_init(&endpoint);
    zmq_msg_recv(&endpoint, monitor, 0);
    zmq_msg_close(&endpoint);
  }
  return true;
}

// What the ZAP handler knows of one listening socket (its ZAP domain).
struct ZapDomain {
  // CURVE: admits a client's raw public key. Null for plaintext sockets
  // (ZeroMQ's NULL mechanism), which are asked about only for the cap.
  std::function<bool(const std::string&)> authorize;
  // The connection cap (0 = none) and the socket's connection events
  // (ACCEPTED, DISCONNECTED), through a PAIR socket the ZAP thread owns.
  int max_connections{0};
  void* monitor{nullptr};
  // Seconds ZeroMQ gives a connection to finish its handshake.
  double handshake_seconds{30};
  // Open connections (by descriptor) and when they were accepted; when this
  // handler admitted handshakes, over the last handshake window.
  std::map<uint32_t, double> open;
  std::deque<double> admitted_at;
  // Handshakes refused at the cap, for the socket's owner.
  std::shared_ptr<std::atomic<int64_t>> refused;

  // Connections other than the one asking that completed a handshake, as far
  // as the events tell: every connection older than the handshake window did
  // (ZeroMQ closes the others), and of the younger ones (but the one asking),
  // at most as many as were admitted in the window. Connections that never
  // handshake do not count, so opening idle TCP connections cannot fill the
  // cap (the handshake timeout closes them).
  int Admitted(double now) {
    const double window = handshake_seconds + 1;
    while (!admitted_at.empty() && now - admitted_at.front() > window) admitted_at.pop_front();
    int old_open = 0, young_open = 0;
    for (const auto& [fd, at] : open) (now - at > window ? old_open : young_open)++;
    return old_open + std::min(std::max(young_open - 1, 0), static_cast<int>(admitted_at.size()));
  }
};

double SteadySeconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// The ZeroMQ Authentication Protocol handler (RFC 27) of one context: a REP
// socket on inproc://zeromq.zap.01 served by its own thread. Each CURVE
// listening socket, and each plaintext one with a connection cap, gets a ZAP
// domain. A handshake is refused when the socket already has its cap of
// connections (counted from the socket's ACCEPTED and DISCONNECTED events),
// and, over CURVE, unless the socket's authorizer accepts the client's public
// key. Admitted CURVE connections carry the key (Z85) as their User-Id, which
// the receive path reports as Received::peer_key.
class ZapHandler {
 public:
  explicit ZapHandler(void* ctx) {
    sock_ = zmq_socket(ctx, ZMQ_REP);
    const int zero = 0;
    if (sock_ && zmq_setsockopt(sock_, ZMQ_LINGER, &zero, sizeof(zero)) == 0 &&
        zmq_bind(sock_, "inproc://zeromq.zap.01") == 0) {
      thread_ = std::thread([this] { Serve(); });
    } else {
      error_ = zmq_strerror(zmq_errno());
    }
  }
  ~ZapHandler() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
    for (auto& [name, d] : domains_) {
      if (d.monitor) zmq_close(d.monitor);
    }
    for (void* m : retiring_) zmq_close(m);
    for (void* m : retired_monitors_) zmq_close(m);
    if (sock_) zmq_close(sock_);
  }
  bool ok() const { return thread_.joinable(); }
  const std::string& error() const { return error_; }

  // `d.monitor` passes to the ZAP thread (closed by it or on Unregister's
  // next loop).
  std::string Register(ZapDomain d) {
    std::lock_guard<std::mutex> lock(mu_);
    const std::string domain = "fedge-" + std::to_string(++next_domain_);
    domains_[domain] = std::move(d);
    return domain;
  }
  void Unregister(const std::string& domain) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = domains_.find(domain);
    if (it == domains_.end()) return;
    // Closed on the ZAP thread, which owns it.
    if (it->second.monitor) retiring_.push_back(it->second.monitor);
    domains_.erase(it);
  }

 private:
  static std::string Frame(zmq_msg_t* m) {
    return std::string(static_cast<const char*>(zmq_msg_data(m)), zmq_msg_size(m));
  }

  // Reads every socket's connection events (under mu_).
  void CountConnections() {
    for (auto& [name, d] : domains_) {
      while (d.monitor) {
        uint16_t event = 0;
        uint32_t fd = 0;
        if (!NextMonitorEvent(d.monitor, &event, &fd)) break;
        if (event == ZMQ_EVENT_ACCEPTED) d.open[fd] = SteadySeconds();
        if (event == ZMQ_EVENT_DISCONNECTED) d.open.erase(fd);
      }
    }
    for (void* m : retiring_) retired_monitors_.push_back(m);
    retiring_.clear();
    for (void* m : retired_monitors_) zmq_close(m);
    retired_monitors_.clear();
  }

  void Serve() {
    while (!stop_) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        CountConnections();
      }
      zmq_pollitem_t item{sock_, 0, ZMQ_POLLIN, 0};
      if (zmq_poll(&item, 1, 100) <= 0) continue;
      // Request: version, request id, domain, address, routing id, mechanism,
      // then the mechanism's credentials (CURVE: the client's public key).
      std::vector<std::string> req;
      for (;;) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, sock_, 0) < 0) {
          zmq_msg_close(&m);
          break;
        }
        req.push_back(Frame(&m));
        const bool more = zmq_msg_more(&m);
        zmq_msg_close(&m);
        if (!more) break;
      }
      if (req.size() < 2) continue;  // cannot even answer; libzmq never sends this
      std::string code = "400", text = "denied", user;
      std::function<bool(const std::string&)> authorize;
      bool known = false, full = false;
      if (req.size() >= 6 && req[0] == "1.0") {
        std::lock_guard<std::mutex> lock(mu_);
        CountConnections();
        auto it = domains_.find(req[2]);
        if (it != domains_.end()) {
          known = true;
          ZapDomain& d = it->second;
          authorize = d.authorize;
          full = d.max_connections > 0 && d.Admitted(SteadySeconds()) >= d.max_connections;
          if (full) ++*d.refused;
        }
      }
      if (!known) {
        // Not one of ours: refused.
      } else if (full) {
        // Not RFC 27's 300 (temporary error): over CURVE, libzmq then sends no
        // ERROR and the refused connection lingers, counted, until its
        // handshake times out. With 500 the peer hears at once and the
        // connection closes; clients retry after their backoff.
        code = "500";
        text = "too many connections";
      } else if (!authorize && req[5] == "NULL") {
        code = "200";
        text = "OK";
      } else if (req.size() >= 7 && req[5] == "CURVE" && req[6].size() == kCurveKeyBytes) {
        if (authorize && authorize(req[6])) {
          char z85[41];
          zmq_z85_encode(z85, reinterpret_cast<const uint8_t*>(req[6].data()), kCurveKeyBytes);
          code = "200";
          text = "OK";
          user = z85;
        } else {
          text = "CURVE key not enrolled";
        }
      }
      if (code == "200") {
        std::lock_guard<std::mutex> lock(mu_);
        auto it = domains_.find(req[2]);
        if (it != domains_.end() && it->second.max_connections > 0) {
          it->second.admitted_at.push_back(SteadySeconds());
        }
      }
      const std::string reply[] = {"1.0", req[1], code, text, user, ""};
      for (size_t i = 0; i < 6; ++i) {
        zmq_send(sock_, reply[i].data(), reply[i].size(), i + 1 < 6 ? ZMQ_SNDMORE : 0);
      }
    }
  }

  void* sock_{nullptr};
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::string error_;
  std::mutex mu_;
  std::map<std::string, ZapDomain> domains_;
  // Monitors of unregistered sockets, closed on the ZAP thread.
  std::vector<void*> retiring_;
  std::vector<void*> retired_monitors_;
  uint64_t next_domain_{0};
};

// Bytes of one peer's queue that ZeroMQ has not written out yet.
struct QueuedBytes {
  std::atomic<int64_t> n{0};
};

// What a frame being sent holds: the bytes, and the queue they count in.
struct FrameRef {
  SharedFrame frame;
  std::shared_ptr<QueuedBytes> queue;
};

// zmq_msg_init_data's free function for SharedFrame sends (on ZeroMQ's I/O
// thread, once the frame is written).
void ReleaseFrame(void* /*data*/, void* hint) {
  auto* ref = static_cast<FrameRef*>(hint);
  ref->queue->n -= static_cast<int64_t>(ref->frame->size());
  delete ref;
}

class ZmqSocket final : public Socket {
 public:
  ZmqSocket(void* sock, bool listening, size_t max_frames,
            std::shared_ptr<ZapHandler> zap = nullptr, std::string zap_domain = "",
            std::shared_ptr<std::atomic<int64_t>> refused = nullptr, bool curve = false)
      : sock_(sock),
        listening_(listening),
        max_frames_(max_frames),
        zap_(std::move(zap)),
        zap_domain_(std::move(zap_domain)),
        refused_(std::move(refused)),
        curve_(curve) {}
  ~ZmqSocket() override {
    if (monitor_) {
      zmq_close(monitor_);
      zmq_socket_monitor(sock_, nullptr, 0);
    }
    // A listening socket's monitor belongs to the ZAP thread: stop its events
    // before the socket goes.
    if (zap_) zmq_socket_monitor(sock_, nullptr, 0);
    zmq_close(sock_);
    if (zap_) zap_->Unregister(zap_domain_);
  }

  int64_t TakeRefusedConnections() override { return refused_ ? refused_->exchange(0) : 0; }

  // Watches this socket's handshakes through `monitor`, a PAIR socket.
  void SetMonitor(void* monitor) { monitor_ = monitor; }

  std::string TakeHandshakeError() override {
    std::string error;
    uint16_t event = 0;
    uint32_t value = 0;
    while (monitor_ && NextMonitorEvent(monitor_, &event, &value)) {
      if (event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH && value == 500) {
        error =
            "the server turned the connection away (status 500): it holds as many "
            "connections as it takes (--max-connections)";
      } else if (event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) {
        error = "the server refused this device's CURVE key (status " + std::to_string(value) +
                "): is its .pub in the server's enrollment folder?";
      } else if (event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL ||
                 event == ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL) {
        error =
            "CURVE handshake failed: the server's key is not the one pinned (--server-key), "
            "or it does not speak CURVE";
      }
    }
    return error;
  }

  // Small messages go through the same path: ZeroMQ would copy them anyway.
  Status Send(const std::string& peer, const std::vector<std::string>& frames) override {
    std::vector<SharedFrame> shared;
    shared.reserve(frames.size());
    for (const auto& f : frames) shared.push_back(std::make_shared<const std::string>(f));
    return SendShared(peer, shared);
  }

  Status SendShared(const std::string& peer, const std::vector<SharedFrame>& frames) override {
    int64_t total = 0;
    for (const auto& f : frames) total += static_cast<int64_t>(f->size());
    std::shared_ptr<QueuedBytes> queue = QueueOf(peer);
    const int64_t queued = queue->n.load();
    if (queued + total > send_queue_bytes_) {
      return Status::Unavailable("send queue of this peer holds " + std::to_string(queued) +
                                 " bytes; another " + std::to_string(total) +
                                 " would pass its limit of " + std::to_string(send_queue_bytes_));
    }
    if (listening_) {
      if (zmq_send(sock_, peer.data(), peer.size(), ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) {
        // (ZMQ_ROUTER_MANDATORY: a peer whose connection closed is unknown.)
        if (zmq_errno() == EHOSTUNREACH) return Status::NotFound("peer", "its connection is gone");
        return ZmqError("send to peer");
      }
    }
    for (size_t i = 0; i < frames.size(); ++i) {
      const int flags = ZMQ_DONTWAIT | (i + 1 < frames.size() ? ZMQ_SNDMORE : 0);
      // ZeroMQ calls ReleaseFrame (on its I/O thread) once the frame is
      // written; the reference keeps the bytes alive until then.
      auto* ref = new FrameRef{frames[i], queue};
      queue->n += static_cast<int64_t>(frames[i]->size());
      zmq_msg_t msg;
      if (zmq_msg_init_data(&msg, const_cast<char*>(ref->frame->data()), ref->frame->size(),
                            ReleaseFrame, ref) != 0) {
        queue->n -= static_cast<int64_t>(frames[i]->size());
        delete ref;
        return ZmqError("send frame " + std::to_string(i));
      }
      if (zmq_msg_send(&msg, sock_, flags) < 0) {
        zmq_msg_close(&msg);  // releases `ref`
        return ZmqError("send frame " + std::to_string(i));
      }
    }
    return Status::OK();
  }

  // The byte counter of `peer`'s queue. Counters of queues that are empty are
  // dropped now and then, so peers that came and went do not accumulate.
  std::shared_ptr<QueuedBytes> QueueOf(const std::string& peer) {
    auto& q = queues_[peer];
    if (!q) q = std::make_shared<QueuedBytes>();
    std::shared_ptr<QueuedBytes> out = q;
    if (queues_.size() > 4096) {
      for (auto it = queues_.begin(); it != queues_.end();) {
        it = it->second->n.load() == 0 && it->second != out ? queues_.erase(it) : std::next(it);
      }
    }
    return out;
  }

  Result<bool> TryReceive(Received* out) override {
    out->peer.clear();
    out->peer_key.clear();
    out->frames.clear();
    out->frame_count = 0;
    out->bytes = 0;
    bool first = true;
    for (;;) {
      zmq_msg_t msg;
      zmq_msg_init(&msg);
      const int rc = zmq_msg_recv(&msg, sock_, first ? ZMQ_DONTWAIT : 0);
      if (rc < 0) {
        const int err = zmq_errno();
        zmq_msg_close(&msg);
        if (first && err == EAGAIN) return false;
        if (err == EINTR) return Status::Unavailable("receive interrupted");
        return Status::Unavailable("receive", zmq_strerror(err));
      }
      const bool more = zmq_msg_more(&msg);
      const char* data = static_cast<const char*>(zmq_msg_data(&msg));
      const size_t size = zmq_msg_size(&msg);
      if (first && listening_) {
        out->peer.assign(data, size);  // the routing id ROUTER prepends
      } else {
        if (out->frame_count == 0 && curve_) {
          // The ZAP handler set User-Id to the client's CURVE key (Z85).
          const char* user = zmq_msg_gets(&msg, "User-Id");
          uint8_t raw[kCurveKeyBytes];
          if (user && std::strlen(user) == 40 && zmq_z85_decode(raw, user)) {
            out->peer_key.assign(reinterpret_cast<const char*>(raw), kCurveKeyBytes);
          }
        }
        out->frame_count++;
        out->bytes += size;
        if (out->frames.size() < max_frames_) out->frames.emplace_back(data, size);
      }
      first = false;
      zmq_msg_close(&msg);
      if (!more) break;
    }
    return true;
  }

  std::string endpoint() const override {
    char buf[256];
    size_t len = sizeof(buf);
    if (zmq_getsockopt(sock_, ZMQ_LAST_ENDPOINT, buf, &len) != 0 || len == 0) return "";
    return std::string(buf, strnlen(buf, len));
  }

  void* handle() override { return sock_; }

 private:
  void* sock_;
  bool listening_;
  size_t max_frames_;
  std::shared_ptr<ZapHandler> zap_;
  std::string zap_domain_;
  std::shared_ptr<std::atomic<int64_t>> refused_;
  bool curve_;
  void* monitor_{nullptr};
  int64_t send_queue_bytes_{INT64_MAX};
  std::unordered_map<std::string, std::shared_ptr<QueuedBytes>> queues_;

 public:
  void SetSendQueueBytes(int64_t n) { send_queue_bytes_ = n > 0 ? n : INT64_MAX; }
};

class ZmqContext final : public Context {
 public:
  explicit ZmqContext(int max_sockets) : ctx_(zmq_ctx_new()) {
    zmq_ctx_set(ctx_, ZMQ_MAX_SOCKETS, max_sockets);
  }
  ~ZmqContext() override {
    zap_.reset();  // its socket must close before the context terminates
    zmq_ctx_term(ctx_);
  }

  Result<std::unique_ptr<Socket>> Listen(const std::string& endpoint,
                                         const SocketOptions& options) override {
    const CurveOptions& c = options.curve;
    if (!c.secret_key.empty()) {
      if (c.secret_key.size() != kCurveKeyBytes) {
        return Status::InvalidArgument("CURVE secret key must be 32 bytes");
      }
      if (!c.authorize) {
        return Status::InvalidArgument("a CURVE listening socket needs an authorizer");
      }
    }
    void* s = zmq_socket(ctx_, ZMQ_ROUTER);
    if (!s) return ZmqError("creating ROUTER socket");
    auto st = Configure(s, options);
    // Sending to a peer that is gone fails (EHOSTUNREACH) instead of vanishing.
    const int one = 1;
    if (st.ok() && zmq_setsockopt(s, ZMQ_ROUTER_MANDATORY, &one, sizeof(one)) != 0) {
      st = ZmqError("ZMQ_ROUTER_MANDATORY");
    }
    if (st.ok() && options.backlog > 0 &&
        zmq_setsockopt(s, ZMQ_BACKLOG, &options.backlog, sizeof(int)) != 0) {
      st = ZmqError("ZMQ_BACKLOG");
    }
    // A connection that has not finished its handshake by then is closed.
    if (st.ok() && options.handshake_ms > 0 &&
        zmq_setsockopt(s, ZMQ_HANDSHAKE_IVL, &options.handshake_ms, sizeof(int)) != 0) {
      st = ZmqError("ZMQ_HANDSHAKE_IVL");
    }
    const bool curve = !c.secret_key.empty();
    std::shared_ptr<ZapHandler> zap;
    std::string domain;
    auto refused = std::make_shared<std::atomic<int64_t>>(0);
    if (st.ok() && (curve || options.max_connections > 0)) {
      ZapDomain d;
      d.authorize = c.authorize;
      d.max_connections = options.max_connections;
      if (options.handshake_ms > 0) d.handshake_seconds = options.handshake_ms / 1000.0;
      d.refused = refused;
      if (options.max_connections > 0) st = MonitorConnections(s, &d.monitor);
      auto z = st.ok() ? Zap() : Result<std::shared_ptr<ZapHandler>>(st);
      if (!z.ok()) {
        st = z.status();
        if (d.monitor) zmq_close(d.monitor);
      } else {
        zap = *z;
        domain = zap->Register(std::move(d));
        if (zmq_setsockopt(s, ZMQ_ZAP_DOMAIN, domain.data(), domain.size()) != 0) {
          st = ZmqError("ZMQ_ZAP_DOMAIN");
        }
        if (st.ok() && curve &&
            (zmq_setsockopt(s, ZMQ_CURVE_SERVER, &one, sizeof(one)) != 0 ||
             zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, c.secret_key.data(), kCurveKeyBytes) != 0)) {
          st = ZmqError("configuring CURVE");
        }
      }
    }
    if (st.ok() && zmq_bind(s, endpoint.c_str()) != 0) st = ZmqError("bind " + endpoint);
    if (!st.ok()) {
      if (zap) zmq_socket_monitor(s, nullptr, 0);
      zmq_close(s);
      if (zap) zap->Unregister(domain);
      return st;
    }
    auto sock =
        std::make_unique<ZmqSocket>(s, /*listening=*/true, options.max_frames, std::move(zap),
                                    std::move(domain), std::move(refused), curve);
    sock->SetSendQueueBytes(options.send_queue_bytes);
    return std::unique_ptr<Socket>(std::move(sock));
  }

  Result<std::unique_ptr<Socket>> Connect(const std::string& endpoint,
                                          const SocketOptions& options) override {
    void* s = zmq_socket(ctx_, ZMQ_DEALER);
    if (!s) return ZmqError("creating DEALER socket");
    auto st = Configure(s, options);
    if (st.ok() && zmq_setsockopt(s, ZMQ_RECONNECT_IVL, &options.reconnect_ms, sizeof(int)) != 0) {
      st = ZmqError("ZMQ_RECONNECT_IVL");
    }
    if (st.ok() &&
        zmq_setsockopt(s, ZMQ_RECONNECT_IVL_MAX, &options.reconnect_max_ms, sizeof(int)) != 0) {
      st = ZmqError("ZMQ_RECONNECT_IVL_MAX");
    }
    const CurveOptions& c = options.curve;
    if (st.ok() && !c.secret_key.empty()) {
      if (c.secret_key.size() != kCurveKeyBytes || c.public_key.size() != kCurveKeyBytes ||
          c.server_key.size() != kCurveKeyBytes) {
        st = Status::InvalidArgument("CURVE client needs 32-byte secret, public and server keys");
      } else if (zmq_setsockopt(s, ZMQ_CURVE_SERVERKEY, c.server_key.data(), kCurveKeyBytes) != 0 ||
                 zmq_setsockopt(s, ZMQ_CURVE_PUBLICKEY, c.public_key.data(), kCurveKeyBytes) != 0 ||
                 zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, c.secret_key.data(), kCurveKeyBytes) != 0) {
        st = ZmqError("configuring CURVE");
      }
    }
    // A CURVE client watches its handshakes, so a refusal can be reported.
    void* monitor = nullptr;
    if (st.ok() && !c.secret_key.empty()) {
      const std::string address = "inproc://fedge-monitor-" + std::to_string(++monitors_);
      const int zero = 0;
      if (zmq_socket_monitor(s, address.c_str(),
                             ZMQ_EVENT_HANDSHAKE_FAILED_AUTH | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                                 ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL) != 0 ||
          !(monitor = zmq_socket(ctx_, ZMQ_PAIR)) ||
          zmq_setsockopt(monitor, ZMQ_LINGER, &zero, sizeof(zero)) != 0 ||
          zmq_connect(monitor, address.c_str()) != 0) {
        st = ZmqError("monitoring the CURVE handshake");
      }
    }
    if (st.ok() && zmq_connect(s, endpoint.c_str()) != 0) st = ZmqError("connect " + endpoint);
    if (!st.ok()) {
      if (monitor) zmq_close(monitor);
      zmq_close(s);
      return st;
    }
    auto sock = std::make_unique<ZmqSocket>(s, /*listening=*/false, options.max_frames);
    sock->SetMonitor(monitor);
    sock->SetSendQueueBytes(options.send_queue_bytes);
    return std::unique_ptr<Socket>(std::move(sock));
  }

  Result<int> Poll(const std::vector<Socket*>& sockets, int timeout_ms,
                   std::vector<bool>* ready) override {
    std::vector<zmq_pollitem_t> items(sockets.size());
    for (size_t i = 0; i < sockets.size(); ++i) {
      items[i] = zmq_pollitem_t{sockets[i]->handle(), 0, ZMQ_POLLIN, 0};
    }
    const int rc = zmq_poll(items.data(), static_cast<int>(items.size()), timeout_ms);
    ready->assign(sockets.size(), false);
    if (rc < 0) {
      if (zmq_errno() == EINTR) return 0;  // a signal; the caller re-checks its flags
      return ZmqError("poll");
    }
    for (size_t i = 0; i < items.size(); ++i) (*ready)[i] = (items[i].revents & ZMQ_POLLIN) != 0;
    return rc;
  }

 private:
  static Status Configure(void* s, const SocketOptions& o) {
    const int zero = 0;
    const int64_t max = static_cast<int64_t>(o.max_frame_bytes);
    if (zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof(zero)) != 0) return ZmqError("ZMQ_LINGER");
    if (zmq_setsockopt(s, ZMQ_MAXMSGSIZE, &max, sizeof(max)) != 0) {
      return ZmqError("ZMQ_MAXMSGSIZE");
    }
    if (zmq_setsockopt(s, ZMQ_SNDHWM, &o.send_queue, sizeof(int)) != 0) {
      return ZmqError("ZMQ_SNDHWM");
    }
    if (zmq_setsockopt(s, ZMQ_RCVHWM, &o.receive_queue, sizeof(int)) != 0) {
      return ZmqError("ZMQ_RCVHWM");
    }
    if (o.heartbeat_ms > 0) {
      if (zmq_setsockopt(s, ZMQ_HEARTBEAT_IVL, &o.heartbeat_ms, sizeof(int)) != 0 ||
          zmq_setsockopt(s, ZMQ_HEARTBEAT_TIMEOUT, &o.heartbeat_timeout_ms, sizeof(int)) != 0 ||
          zmq_setsockopt(s, ZMQ_HEARTBEAT_TTL, &o.heartbeat_timeout_ms, sizeof(int)) != 0) {
        return ZmqError("ZMQ_HEARTBEAT_*");
      }
    }
    return Status::OK();
  }

  // A PAIR socket receiving `s`'s ACCEPTED and DISCONNECTED events, unbounded
  // (a lost event would skew the connection count).
  Status MonitorConnections(void* s, void** monitor) {
    const std::string address = "inproc://fedge-monitor-" + std::to_string(++monitors_);
    const int zero = 0;
    if (zmq_socket_monitor(s, address.c_str(), ZMQ_EVENT_ACCEPTED | ZMQ_EVENT_DISCONNECTED) != 0 ||
        !(*monitor = zmq_socket(ctx_, ZMQ_PAIR)) ||
        zmq_setsockopt(*monitor, ZMQ_LINGER, &zero, sizeof(zero)) != 0 ||
        zmq_setsockopt(*monitor, ZMQ_RCVHWM, &zero, sizeof(zero)) != 0 ||
        zmq_connect(*monitor, address.c_str()) != 0) {
      Status st = ZmqError("monitoring connections");
      if (*monitor) zmq_close(*monitor);
      *monitor = nullptr;
      return st;
    }
    return Status::OK();
  }

  // The context's ZAP handler, started with the first listening socket that
  // needs one.
  Result<std::shared_ptr<ZapHandler>> Zap() {
    std::lock_guard<std::mutex> lock(zap_mu_);
    if (!zap_) {
      auto z = std::make_shared<ZapHandler>(ctx_);
      if (!z->ok()) return Status::Unavailable("starting the ZAP handler", z->error());
      zap_ = std::move(z);
    }
    return zap_;
  }

  void* ctx_;
  std::atomic<uint64_t> monitors_{0};
  std::mutex zap_mu_;
  std::shared_ptr<ZapHandler> zap_;
};

}  // namespace

Status CheckConnectEndpoint(const std::string& endpoint) {
  const auto bad = [&](const std::string& why) {
    return Status::InvalidArgument("endpoint '" + endpoint + "': " + why);
  };
  const size_t scheme = endpoint.find("://");
  if (scheme == std::string::npos) return bad("expected tcp://HOST:PORT");
  const std::string proto = endpoint.substr(0, scheme), rest = endpoint.substr(scheme + 3);
  if (proto == "ipc" || proto == "inproc") {
    return rest.empty() ? bad("no path after " + proto + "://") : Status::OK();
  }
  if (proto != "tcp") return bad("transport '" + proto + "' (tcp, ipc or inproc)");
  const size_t colon = rest.rfind(':');
  if (colon == std::string::npos || colon == 0) return bad("expected tcp://HOST:PORT");
  const std::string port = rest.substr(colon + 1);
  if (port.empty() || port.size() > 5 ||
      port.find_first_not_of("0123456789") != std::string::npos || std::stoi(port) < 1 ||
      std::stoi(port) > 65535) {
    return bad("port '" + port + "' is not a number in 1..65535");
  }
  if (rest.substr(0, colon).find_first_of(" *") != std::string::npos) {
    return bad("host '" + rest.substr(0, colon) + "' (a name or address to connect to)");
  }
  return Status::OK();
}

std::shared_ptr<Context> CreateZmqContext(int max_sockets) {
  return std::make_shared<ZmqContext>(max_sockets);
}

}  // namespace transport
}  // namespace fl
