// Message transport: the small interface fedge's client and server talk
// through, after TensorPipe's transport/connection.h. The ZeroMQ backend is
// reached only through CreateZmqContext(); nothing outside transport/ includes
// ZeroMQ headers.
//
// Threading: a Socket is owned by one thread at a time. A Context may be shared.
#ifndef FEDGE_TRANSPORT_TRANSPORT_H_
#define FEDGE_TRANSPORT_TRANSPORT_H_

#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"

namespace fl {
namespace transport {

// Encrypted, authenticated transport: ZeroMQ CURVE (Curve25519 key agreement,
// XSalsa20-Poly1305 per frame). Keys are raw 32-byte Curve25519 keys. A socket
// without a secret key speaks plaintext.
struct CurveOptions {
  // This end's key pair. Empty secret = no CURVE.
  std::string secret_key;
  std::string public_key;
  // Connecting sockets: the server's public key (pinned; a server holding
  // another key fails the handshake).
  std::string server_key;
  // Listening sockets: decides whether a client presenting `client_key` (raw,
  // 32 bytes) may connect. Runs on the context's authentication (ZAP) thread,
  // during the handshake, so it must be thread-safe and quick. Required when
  // `secret_key` is set on a listening socket: CURVE never admits everyone.
  std::function<bool(const std::string& client_key)> authorize;
};

struct SocketOptions {
  // Frames larger than this are refused by the transport before they are read
  // (ZMQ_MAXMSGSIZE); the offending connection is dropped.
  size_t max_frame_bytes{64u << 20};
  // Messages with more frames than this are received but flagged (the extra
  // frames are discarded), so the caller can reject them.
  size_t max_frames{4};
  // Outgoing queue limits, per peer: in messages, and in bytes ZeroMQ has not
  // written out yet. A send that would exceed either fails with Unavailable
  // instead of blocking. (Over CURVE a frame counts until it is encrypted.)
  int send_queue{1000};
  int64_t send_queue_bytes{256ll << 20};
  // Receive queue limit in messages per peer (ZMQ_RCVHWM): past it ZeroMQ
  // stops reading that connection until the application catches up.
  int receive_queue{1000};
  // ZeroMQ heartbeats (ZMTP PING/PONG): sent every `heartbeat_ms`; a
  // connection that carries nothing, not even a PONG, for
  // `heartbeat_timeout_ms` is closed, with whatever partial frame it was
  // sending (0 = no heartbeats).
  int heartbeat_ms{2000};
  int heartbeat_timeout_ms{20000};
  // Listening sockets: connections past this many are refused at their
  // handshake (0 = no cap), and a connection that has not completed its
  // handshake within `handshake_ms` is closed (0 = ZeroMQ's default, 30 s).
  int max_connections{0};
  int handshake_ms{10000};
  // Listening sockets: connections the kernel queues before they are
  // accepted (listen(2)'s backlog; the kernel caps it at net.core.somaxconn).
  // ZeroMQ's default of 100 overflows when thousands of devices connect at
  // once (a server restart, a simulation starting): their SYNs are dropped and
  // retried after 1, 3, 7, ... s.
  int backlog{4096};
  // Reconnect backoff of a connecting socket: first retry and cap (ms).
  int reconnect_ms{100};
  int reconnect_max_ms{5000};
  CurveOptions curve;
};

// One received message.
struct Received {
  // Routing id of the sender (listening sockets only; empty otherwise).
  std::string peer;
  // The sender's authenticated CURVE public key, raw 32 bytes (listening CURVE
  // sockets only; empty otherwise).
  std::string peer_key;
  // The frames, at most max_frames of them.
  std::vector<std::string> frames;
  // Frames the sender sent, including discarded ones.
  size_t frame_count{0};
  // Total bytes of all frames received (excluding the routing id).
  size_t bytes{0};
};

// A frame several sends can share without copying it (a TASK goes to every
// selected client; an UPDATE is a few MB a device would otherwise hold twice).
using SharedFrame = std::shared_ptr<const std::string>;

class Socket {
 public:
  virtual ~Socket() = default;

  // Sends `frames` as one multipart message, to `peer` on a listening socket (a
  // routing id from Received::peer) or to the remote end on a connecting one.
  // Never blocks: Unavailable when the peer is unknown or gone, or the queue is full.
  virtual Status Send(const std::string& peer, const std::vector<std::string>& frames) = 0;

  // The same without copying the frames: the transport holds a reference to
  // each until it has written it, so the bytes exist once however many peers
  // they go to.
  virtual Status SendShared(const std::string& peer, const std::vector<SharedFrame>& frames) = 0;

  // Receives one message if one is waiting. Returns true and fills `out`, or
  // false when nothing is waiting. Never blocks.
  virtual Result<bool> TryReceive(Received* out) = 0;

  // The endpoint actually bound or connected (resolves "tcp://127.0.0.1:*").
  virtual std::string endpoint() const = 0;

  // Backend handle for Context::Poll.
  virtual void* handle() = 0;

  // A connecting CURVE socket: why the last handshake failed since the
  // previous call (e.g. the server refused this device's key), or "" when
  // none did. Other sockets always return "".
  virtual std::string TakeHandshakeError() { return ""; }

  // A listening socket with a connection cap: handshakes refused at the cap
  // since the previous call.
  virtual int64_t TakeRefusedConnections() { return 0; }
};

class Context {
 public:
  virtual ~Context() = default;

  // A listening socket (ZeroMQ ROUTER) bound to `endpoint`, e.g. "tcp://*:5555".
  virtual Result<std::unique_ptr<Socket>> Listen(const std::string& endpoint,
                                                 const SocketOptions& options) = 0;

  // A connecting socket (ZeroMQ DEALER) to `endpoint`; connection happens in the
  // background and is retried with backoff.
  virtual Result<std::unique_ptr<Socket>> Connect(const std::string& endpoint,
                                                  const SocketOptions& options) = 0;

  // Waits up to `timeout_ms` (-1: forever) until one of `sockets` has a message.
  // Sets (*ready)[i] for each readable socket; returns how many are readable.
  virtual Result<int> Poll(const std::vector<Socket*>& sockets, int timeout_ms,
                           std::vector<bool>* ready) = 0;
};

// OK when `endpoint` is one a participant can connect to: tcp://HOST:PORT
// (PORT 1..65535), ipc://PATH or inproc://NAME; InvalidArgument saying what is
// wrong otherwise. (ZeroMQ connects lazily: a typo in a failover endpoint
// would otherwise surface only when a device fails over to it.)
Status CheckConnectEndpoint(const std::string& endpoint);

// The ZeroMQ backend. `max_sockets` raises ZeroMQ's per-context socket limit
// (simulations host one socket per virtual client).
std::shared_ptr<Context> CreateZmqContext(int max_sockets = 1024);

}  // namespace transport
}  // namespace fl

#endif  // FEDGE_TRANSPORT_TRANSPORT_H_
