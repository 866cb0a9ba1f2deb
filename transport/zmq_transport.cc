// ZeroMQ backend of transport.h: ROUTER for listening, DEALER for connecting.
#include <zmq.h>

#include <cerrno>
#include <cstring>

#include "transport/transport.h"

namespace fl {
namespace transport {
namespace {

Status ZmqError(const std::string& what) {
  return Status::Unavailable(what, zmq_strerror(zmq_errno()));
}

class ZmqSocket final : public Socket {
 public:
  ZmqSocket(void* sock, bool listening, SocketOptions options)
      : sock_(sock), listening_(listening), options_(options) {}
  ~ZmqSocket() override { zmq_close(sock_); }

  Status Send(const std::string& peer, const std::vector<std::string>& frames) override {
    if (listening_) {
      if (zmq_send(sock_, peer.data(), peer.size(), ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) {
        return ZmqError("send to peer");
      }
    }
    for (size_t i = 0; i < frames.size(); ++i) {
      const int flags = ZMQ_DONTWAIT | (i + 1 < frames.size() ? ZMQ_SNDMORE : 0);
      if (zmq_send(sock_, frames[i].data(), frames[i].size(), flags) < 0) {
        return ZmqError("send frame " + std::to_string(i));
      }
    }
    return Status::OK();
  }

  Result<bool> TryReceive(Received* out) override {
    out->peer.clear();
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
        out->frame_count++;
        out->bytes += size;
        if (out->frames.size() < options_.max_frames) out->frames.emplace_back(data, size);
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
  SocketOptions options_;
};

class ZmqContext final : public Context {
 public:
  explicit ZmqContext(int max_sockets) : ctx_(zmq_ctx_new()) {
    zmq_ctx_set(ctx_, ZMQ_MAX_SOCKETS, max_sockets);
  }
  ~ZmqContext() override { zmq_ctx_term(ctx_); }

  Result<std::unique_ptr<Socket>> Listen(const std::string& endpoint,
                                         const SocketOptions& options) override {
    void* s = zmq_socket(ctx_, ZMQ_ROUTER);
    if (!s) return ZmqError("creating ROUTER socket");
    auto st = Configure(s, options);
    // Sending to a peer that is gone fails (EHOSTUNREACH) instead of vanishing.
    const int one = 1;
    if (st.ok() && zmq_setsockopt(s, ZMQ_ROUTER_MANDATORY, &one, sizeof(one)) != 0) {
      st = ZmqError("ZMQ_ROUTER_MANDATORY");
    }
    if (st.ok() && zmq_bind(s, endpoint.c_str()) != 0) st = ZmqError("bind " + endpoint);
    if (!st.ok()) {
      zmq_close(s);
      return st;
    }
    return std::unique_ptr<Socket>(new ZmqSocket(s, /*listening=*/true, options));
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
    if (st.ok() && zmq_connect(s, endpoint.c_str()) != 0) st = ZmqError("connect " + endpoint);
    if (!st.ok()) {
      zmq_close(s);
      return st;
    }
    return std::unique_ptr<Socket>(new ZmqSocket(s, /*listening=*/false, options));
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
    return Status::OK();
  }

  void* ctx_;
};

}  // namespace

std::shared_ptr<Context> CreateZmqContext(int max_sockets) {
  return std::make_shared<ZmqContext>(max_sockets);
}

}  // namespace transport
}  // namespace fl
