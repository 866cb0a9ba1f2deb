// One contract suite for the transport, run over inproc:// and tcp://127.0.0.1.
#include "transport/transport.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <thread>
#include <vector>

#include "crypto/identity.h"
#include "tests/test_util.h"
#include "transport/simulated_network.h"

namespace fl {
namespace transport {
namespace {

// A plain TCP connection to the "tcp://127.0.0.1:PORT" endpoint `ep`, outside
// ZeroMQ (a peer that speaks raw bytes, or nothing); -1 on failure.
int ConnectTcp(const std::string& ep) {
  const int port = std::atoi(ep.substr(ep.rfind(':') + 1).c_str());
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

class TransportTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    // "sim": the simulated network, this thread its one participant.
    if (GetParam() == "sim") {
      sim_ = std::make_shared<SimulatedNetwork>();
      sim_->Join();
      ctx_ = sim_;
    } else {
      ctx_ = CreateZmqContext();
    }
    SocketOptions so;
    so.max_frame_bytes = 1 << 16;
    so.max_frames = 4;
    auto l = ctx_->Listen(GetParam() == "sim" ? "tcp://127.0.0.1:*" : GetParam(), so);
    ASSERT_FL_OK(l);
    server_ = std::move(l).value();
    auto c = ctx_->Connect(server_->endpoint(), so);
    ASSERT_FL_OK(c);
    client_ = std::move(c).value();
  }

  // Waits up to 5 s for a message on `s`.
  bool ReceiveWithin(Socket* s, Received* out, int ms = 5000) {
    std::vector<bool> ready;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
    while (std::chrono::steady_clock::now() < deadline) {
      auto r = ctx_->Poll({s}, 50, &ready);
      EXPECT_TRUE(r.ok());
      auto got = s->TryReceive(out);
      EXPECT_TRUE(got.ok());
      if (got.ok() && *got) return true;
    }
    return false;
  }

  std::shared_ptr<SimulatedNetwork> sim_;
  std::shared_ptr<Context> ctx_;
  std::unique_ptr<Socket> server_;
  std::unique_ptr<Socket> client_;
};

TEST_P(TransportTest, RequestReply) {
  ASSERT_FL_OK(client_->Send("", {"env", "payload"}));
  Received r;
  ASSERT_TRUE(ReceiveWithin(server_.get(), &r));
  EXPECT_EQ(r.frames, (std::vector<std::string>{"env", "payload"}));
  EXPECT_EQ(r.frame_count, 2u);
  EXPECT_EQ(r.bytes, 10u);
  EXPECT_FALSE(r.peer.empty());
  ASSERT_FL_OK(server_->Send(r.peer, {"reply", ""}));
  Received back;
  ASSERT_TRUE(ReceiveWithin(client_.get(), &back));
  EXPECT_EQ(back.frames, (std::vector<std::string>{"reply", ""}));
  EXPECT_TRUE(back.peer.empty());
}

TEST_P(TransportTest, NothingWaitingIsNotAnError) {
  Received r;
  auto got = server_->TryReceive(&r);
  ASSERT_FL_OK(got);
  EXPECT_FALSE(*got);
}

TEST_P(TransportTest, TooManyFramesAreCountedNotKept) {
  ASSERT_FL_OK(client_->Send("", {"a", "b", "c", "d", "e", "f"}));
  Received r;
  ASSERT_TRUE(ReceiveWithin(server_.get(), &r));
  EXPECT_EQ(r.frame_count, 6u);
  EXPECT_EQ(r.frames.size(), 4u);
}

// Oversize frames are a wire property: over tcp ZMQ_MAXMSGSIZE refuses the
// frame before it is read and drops the connection; inproc passes messages by
// reference and never applies the limit, so this suite runs on tcp only.
class TcpTransportTest : public TransportTest {};

TEST_P(TcpTransportTest, OversizeFrameNeverDelivered) {
  ASSERT_FL_OK(client_->Send("", {"env", std::string(1 << 17, 'x')}));
  Received r;
  EXPECT_FALSE(ReceiveWithin(server_.get(), &r, 500));
  // A fresh connection still works: the server carried on.
  SocketOptions so;
  auto c2 = ctx_->Connect(server_->endpoint(), so);
  ASSERT_FL_OK(c2);
  ASSERT_FL_OK((*c2)->Send("", {"env", "small"}));
  ASSERT_TRUE(ReceiveWithin(server_.get(), &r));
  EXPECT_EQ(r.frames[1], "small");
}

// A peer whose connection is gone (or never was) is NotFound, which a full
// queue (Unavailable) is not: the server tells a closed connection from a
// busy one by it.
TEST_P(TransportTest, SendToUnknownPeerFails) {
  Status st = server_->Send("no-such-peer", {"x"});
  EXPECT_FALSE(st.ok());
  EXPECT_TRUE(st.IsNotFound()) << st.ToString();
}

// CURVE: an enrolled key gets through and is reported as the peer's key;
// unenrolled keys, a plaintext client and a client pinning the wrong server key

// A peer that completes the ZMTP handshake, starts a 32 MiB frame, sends half of
// it and stalls (answering no heartbeat) is disconnected once the heartbeat
// timeout passes: a half-sent frame cannot hold the receiver's memory.
// Endpoints a participant connects to are checked before any connection:
// ZeroMQ connects lazily, so a typo in a failover endpoint would otherwise
// surface only when a device fails over to it.
TEST(EndpointTest, ConnectEndpointsAreCheckedUpFront) {
  for (const char* good : {"tcp://127.0.0.1:5555", "tcp://relay-a.example:6000", "tcp://[::1]:5555",
                           "ipc:///tmp/fedge.sock", "inproc://server"}) {
    EXPECT_TRUE(CheckConnectEndpoint(good).ok()) << good;
  }
  for (const char* bad : {"relay-a:6000", "tcp://relay-a", "tcp://relay-a:70000",
                          "tcp://relay-a:", "tcp://relay-a:60x0", "udp://relay-a:6000",
                          "tcp://*:5555", "tcp://:5555", "ipc://"}) {
    const Status st = CheckConnectEndpoint(bad);
    EXPECT_TRUE(st.IsInvalidArgument()) << bad;
    EXPECT_NE(st.message().find(bad), std::string::npos) << st.message();
  }
}

TEST(HeartbeatTest, StalledPeerWithAHalfSentFrameIsDisconnected) {
  auto ctx = transport::CreateZmqContext();
  transport::SocketOptions so;
  so.max_frame_bytes = 64u << 20;
  so.heartbeat_ms = 200;
  so.heartbeat_timeout_ms = 1000;
  auto l = ctx->Listen("tcp://127.0.0.1:*", so);
  ASSERT_FL_OK(l);
  const std::string ep = (*l)->endpoint();
  const int fd = ConnectTcp(ep);
  ASSERT_GE(fd, 0);
  // ZMTP 3.0 greeting, NULL mechanism, then READY as a DEALER.
  std::string greeting(64, '\0');
  greeting[0] = '\xFF';
  greeting[9] = '\x7F';
  greeting[10] = 3;
  std::memcpy(&greeting[12], "NULL", 4);
  const std::string props =
      std::string("\x0BSocket-Type", 12) + std::string("\0\0\0\x06", 4) + "DEALER";
  const std::string ready = std::string("\x05READY") + props;
  std::string hello =
      greeting + std::string(1, '\x04') + std::string(1, static_cast<char>(ready.size())) + ready;
  ASSERT_EQ(::send(fd, hello.data(), hello.size(), MSG_NOSIGNAL),
            static_cast<ssize_t>(hello.size()));
  // A long frame header claiming 32 MiB, then half of it.
  const uint64_t size = 32u << 20;
  std::string frame(1, '\x02');
  for (int i = 7; i >= 0; --i) frame.push_back(static_cast<char>((size >> (8 * i)) & 0xFF));
  frame.append(size / 2, 'x');
  size_t sent = 0;
  while (sent < frame.size()) {
    const ssize_t n = ::send(fd, frame.data() + sent, frame.size() - sent, MSG_NOSIGNAL);
    ASSERT_GT(n, 0);
    sent += static_cast<size_t>(n);
  }
  // Now silent. The receiver pings, gets no answer, and drops the connection:
  // reading shows the close (EOF or reset) well within 5 s.
  timeval tv{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  const auto t0 = std::chrono::steady_clock::now();
  char buf[4096];
  bool closed = false;
  while (std::chrono::steady_clock::now() - t0 < std::chrono::seconds(5)) {
    transport::Received rx;
    (void)(*l)->TryReceive(&rx);  // the receiving side keeps running
    const ssize_t n = ::recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) {
      closed = true;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  const double after = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ::close(fd);
  EXPECT_TRUE(closed) << "the stalled peer was still connected after 5 s";
  std::printf("stalled peer disconnected %.2f s after it went silent (timeout 1 s)\n", after);
}

// The send queue to a peer is bounded in bytes: to a peer that reads
// nothing, sends of 1 MiB frames fail (Unavailable, naming the limit) once the
// bytes ZeroMQ has not written out would pass the limit, long before the
// 1000-message high-water mark; the queue drains once the peer reads.
TEST(SendQueueTest, BoundedInBytes) {
  auto ctx = transport::CreateZmqContext();
  transport::SocketOptions so;
  so.send_queue_bytes = 8 << 20;
  auto l = ctx->Listen("tcp://127.0.0.1:*", so);
  ASSERT_FL_OK(l);
  transport::SocketOptions co;
  co.receive_queue = 1;
  auto c = ctx->Connect((*l)->endpoint(), co);
  ASSERT_FL_OK(c);
  ASSERT_FL_OK((*c)->Send("", {"hello"}));
  transport::Received rx;
  std::vector<bool> ready;
  for (int i = 0; i < 100 && !(*l)->TryReceive(&rx).value(); ++i) {
    (void)ctx->Poll({l->get()}, 50, &ready);
  }
  ASSERT_FALSE(rx.peer.empty());
  const auto frame = std::make_shared<const std::string>(1 << 20, 'x');
  int sent = 0;
  Status refused;
  for (int i = 0; i < 200 && refused.ok(); ++i) {
    refused = (*l)->SendShared(rx.peer, {frame});
    if (refused.ok()) ++sent;
  }
  std::printf("1 MiB frames queued to a peer that reads nothing: %d, then: %s\n", sent,
              refused.ToString().c_str());
  ASSERT_FALSE(refused.ok()) << "200 MiB queued to a stalled peer";
  EXPECT_EQ(refused.code(), Status::Code::kUnavailable);
  EXPECT_NE(refused.message().find("limit of 8388608"), std::string::npos) << refused.ToString();
  EXPECT_LT(sent, 100);
  // The peer reads: the queue drains and sends succeed again.
  int received = 0;
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  Status again = Status::Unavailable("not tried");
  while (std::chrono::steady_clock::now() < until && !again.ok()) {
    (void)ctx->Poll({c->get()}, 20, &ready);
    transport::Received got;
    while ((*c)->TryReceive(&got).value()) ++received;
    again = (*l)->SendShared(rx.peer, {frame});
  }
  EXPECT_FL_OK(again);
  EXPECT_GT(received, 0);
}

TEST(CurveTransportTest, OnlyAuthorizedKeysGetThrough) {
  auto ctx = CreateZmqContext();
  auto server_keys = GenerateCurveKeyPair();
  auto good = GenerateCurveKeyPair();
  auto bad = GenerateCurveKeyPair();
  ASSERT_FL_OK(server_keys);
  ASSERT_FL_OK(good);
  ASSERT_FL_OK(bad);
  std::atomic<int> asked{0}, denied{0};
  SocketOptions lo;
  lo.curve.secret_key = KeyBytes(server_keys->secret_key);
  lo.curve.public_key = KeyBytes(server_keys->public_key);
  lo.curve.authorize = [&](const std::string& key) {
    asked++;
    const bool ok = key == KeyBytes(good->public_key);
    if (!ok) denied++;
    return ok;
  };
  auto l = ctx->Listen("tcp://127.0.0.1:*", lo);
  ASSERT_FL_OK(l);
  Socket* server = l->get();
  auto client = [&](const CurveKeyPair* kp, const CurveKey& server_pub) {
    SocketOptions co;
    if (kp) {
      co.curve.secret_key = KeyBytes(kp->secret_key);
      co.curve.public_key = KeyBytes(kp->public_key);
      co.curve.server_key = KeyBytes(server_pub);
    }
    auto c = ctx->Connect(server->endpoint(), co);
    EXPECT_FL_OK(c);
    return std::move(c).value();
  };
  auto receive = [&](Socket* s, Received* out, int ms) {
    std::vector<bool> ready;
    const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
    while (std::chrono::steady_clock::now() < until) {
      EXPECT_TRUE(ctx->Poll({s}, 50, &ready).ok());
      auto got = s->TryReceive(out);
      if (got.ok() && *got) return true;
    }
    return false;
  };
  // Refused first, so a message that got through could only be theirs.
  auto unenrolled = client(&*bad, server_keys->public_key);
  auto plaintext = client(nullptr, server_keys->public_key);
  auto wrong_pin = client(&*good, bad->public_key);  // thinks the server is `bad`
  ASSERT_FL_OK(unenrolled->Send("", {"from", "unenrolled"}));
  ASSERT_FL_OK(plaintext->Send("", {"from", "plaintext"}));
  ASSERT_FL_OK(wrong_pin->Send("", {"from", "wrong pin"}));
  Received r;
  EXPECT_FALSE(receive(server, &r, 1500)) << r.frames.back();
  EXPECT_GE(denied.load(), 1);
  // The refused device and the one pinning the wrong key are told why.
  EXPECT_NE(unenrolled->TakeHandshakeError().find("refused this device's CURVE key"),
            std::string::npos);
  EXPECT_NE(wrong_pin->TakeHandshakeError().find("handshake failed"), std::string::npos);

  auto enrolled = client(&*good, server_keys->public_key);
  ASSERT_FL_OK(enrolled->Send("", {"from", "enrolled"}));
  ASSERT_TRUE(receive(server, &r, 5000));
  EXPECT_EQ(r.frames[1], "enrolled");
  EXPECT_EQ(r.peer_key, KeyBytes(good->public_key));
  ASSERT_FL_OK(server->Send(r.peer, {"hi", ""}));
  Received back;
  ASSERT_TRUE(receive(enrolled.get(), &back, 5000));
  EXPECT_EQ(back.frames[0], "hi");
  EXPECT_FALSE(receive(server, &r, 300));  // still nothing from the others
}

TEST(CurveTransportTest, ListeningWithoutAuthorizerIsRefused) {
  auto ctx = CreateZmqContext();
  auto keys = GenerateCurveKeyPair();
  ASSERT_FL_OK(keys);
  SocketOptions lo;
  lo.curve.secret_key = KeyBytes(keys->secret_key);
  EXPECT_FALSE(ctx->Listen("tcp://127.0.0.1:*", lo).ok());
}

// The simulated network's clock moves only when every participant waits, and
// then to the earliest deadline among them.
TEST(SimulatedNetworkTest, TheClockJumpsToTheEarliestDeadlineOnceEveryoneWaits) {
  SimulatedNetwork net;
  const double t0 = net.Now();
  double woke[2] = {0, 0};
  net.Join();
  net.Join();
  std::thread a([&] {
    net.SleepFor(3);
    woke[0] = net.Now();
    net.Leave();
  });
  std::thread b([&] {
    net.SleepFor(5);
    woke[1] = net.Now();
    net.Leave();
  });
  a.join();
  b.join();
  EXPECT_EQ(woke[0], t0 + 3);
  EXPECT_EQ(woke[1], t0 + 5);
  EXPECT_EQ(net.Now(), t0 + 5);
}

// A participant that works (here: sleeps on the machine's clock) holds the
// simulated one still; a message it sends wakes the waiting receiver before
// any time passes, however long the receiver's timeout.
TEST(SimulatedNetworkTest, WorkTakesNoTimeAndAMessageWakesItsReceiverAtOnce) {
  auto net = std::make_shared<SimulatedNetwork>();
  SocketOptions so;
  auto server = net->Listen("tcp://127.0.0.1:*", so);
  ASSERT_FL_OK(server);
  auto client = net->Connect((*server)->endpoint(), so);
  ASSERT_FL_OK(client);
  const double t0 = net->Now();
  net->Join();  // the receiver (this thread)
  net->Join();  // the sender
  std::thread sender([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));  // work
    EXPECT_FL_OK((*client)->Send("", {"hello"}));
    net->SleepFor(60);  // then waits, a deadline far beyond the receiver's
    net->Leave();
  });
  std::vector<bool> ready;
  auto n = net->Poll({server->get()}, 10000, &ready);
  ASSERT_FL_OK(n);
  EXPECT_EQ(*n, 1);
  EXPECT_EQ(net->Now(), t0) << "time passed while a participant worked";
  net->Leave();
  sender.join();
  EXPECT_EQ(net->Now(), t0 + 60);
  // Work handed over to a thread outside (BeginWork/EndWork) holds it too:
  // the sleep below ends only after the work did, with no time passed during it.
  net->Join();
  net->BeginWork();
  std::atomic<bool> worked{false};
  std::thread worker([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    EXPECT_EQ(net->Now(), t0 + 60);
    worked = true;
    net->EndWork();
  });
  net->SleepFor(1);
  EXPECT_TRUE(worked.load());
  EXPECT_EQ(net->Now(), t0 + 61);
  worker.join();
  net->Leave();
}

// WaitFor ends when Notify finds its condition true, or at its deadline
// exactly; a Notify with the condition false wakes nothing.
TEST(SimulatedNetworkTest, WaitForEndsOnANotifiedConditionOrAtItsDeadline) {
  SimulatedNetwork net;
  const double t0 = net.Now();
  std::atomic<bool> flag{false};
  net.Join();
  net.Join();
  double woke = 0;
  bool got = false;
  std::thread waiter([&] {
    got = net.WaitFor(10, [&] { return flag.load(); });
    woke = net.Now();
    net.Leave();
  });
  net.SleepFor(2);
  net.Notify();  // false: the waiter waits on
  net.SleepFor(1);
  flag = true;
  net.Notify();
  waiter.join();
  EXPECT_TRUE(got);
  EXPECT_EQ(woke, t0 + 3);
  EXPECT_FALSE(net.WaitFor(4, [] { return false; }));
  EXPECT_EQ(net.Now(), t0 + 7);
  net.Leave();
}

// The steady clock's WaitFor: woken by Notify once its condition holds.
TEST(SteadyClockTest, WaitForIsWokenByNotify) {
  const Clock* clock = SystemClock();
  std::atomic<bool> flag{false};
  std::thread notifier([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    flag = true;
    clock->Notify();
  });
  EXPECT_TRUE(clock->WaitFor(60, [&] { return flag.load(); }));
  notifier.join();
  EXPECT_FALSE(clock->WaitFor(0.05, [] { return false; }));
}

// CURVE in simulation: a key decides who may talk, as the handshake would.
TEST(SimulatedNetworkTest, CurveKeysDecideWhoGetsThrough) {
  SimulatedNetwork net;
  net.Join();
  SocketOptions ls;
  ls.curve.secret_key = std::string(32, 's');
  ls.curve.public_key = std::string(32, 'S');
  ls.curve.authorize = [](const std::string& key) { return key == std::string(32, 'A'); };
  auto server = net.Listen("tcp://127.0.0.1:*", ls);
  ASSERT_FL_OK(server);
  auto device = [&](char pub, const std::string& pinned) {
    SocketOptions cs;
    cs.curve.secret_key = std::string(32, 'd');
    cs.curve.public_key = std::string(32, pub);
    cs.curve.server_key = pinned;
    auto c = net.Connect((*server)->endpoint(), cs);
    EXPECT_FL_OK(c);
    return std::move(c).value();
  };
  auto enrolled = device('A', std::string(32, 'S'));
  auto stranger = device('B', std::string(32, 'S'));
  auto misled = device('A', std::string(32, 'X'));
  for (auto* c : {enrolled.get(), stranger.get(), misled.get()}) {
    ASSERT_FL_OK(c->Send("", {"hello"}));
  }
  Received rx;
  ASSERT_TRUE(*(*server)->TryReceive(&rx));
  EXPECT_EQ(rx.peer_key, std::string(32, 'A'));
  EXPECT_FALSE(*(*server)->TryReceive(&rx));
  EXPECT_EQ(enrolled->TakeHandshakeError(), "");
  EXPECT_NE(stranger->TakeHandshakeError().find("refused this device's CURVE key"),
            std::string::npos);
  EXPECT_NE(misled->TakeHandshakeError().find("not the one pinned"), std::string::npos);
  EXPECT_EQ(net.dropped(), 2);
  net.Leave();
}

// A restarted server on the same endpoint gets the connecting sockets'
// messages, as ZeroMQ reconnects; while nobody listens they are dropped.
TEST(SimulatedNetworkTest, AServerRestartedOnItsEndpointIsReachedAgain) {
  SimulatedNetwork net;
  net.Join();
  SocketOptions so;
  auto first = net.Listen("inproc://restart", so);
  ASSERT_FL_OK(first);
  auto device = net.Connect("inproc://restart", so);
  ASSERT_FL_OK(device);
  first->reset();
  ASSERT_FL_OK((*device)->Send("", {"lost"}));
  EXPECT_EQ(net.dropped(), 1);
  auto second = net.Listen("inproc://restart", so);
  ASSERT_FL_OK(second);
  EXPECT_FALSE(net.Listen("inproc://restart", so).ok()) << "two listeners on one endpoint";
  ASSERT_FL_OK((*device)->Send("", {"found"}));
  Received rx;
  ASSERT_TRUE(*(*second)->TryReceive(&rx));
  EXPECT_EQ(rx.frames, std::vector<std::string>{"found"});
  net.Leave();
}

INSTANTIATE_TEST_SUITE_P(Inproc, TransportTest, ::testing::Values("inproc://fedge-transport-test"));
INSTANTIATE_TEST_SUITE_P(Tcp, TransportTest, ::testing::Values("tcp://127.0.0.1:*"));
INSTANTIATE_TEST_SUITE_P(Simulated, TransportTest, ::testing::Values("sim"));
INSTANTIATE_TEST_SUITE_P(Tcp, TcpTransportTest, ::testing::Values("tcp://127.0.0.1:*"));
INSTANTIATE_TEST_SUITE_P(Simulated, TcpTransportTest, ::testing::Values("sim"));

// Receives on `s` until `ms` pass or `done(got)` holds; returns the payloads
// (frame 1) of what arrived.
std::vector<std::string> ReceiveUntil(
    Context* ctx, Socket* s, int ms,
    const std::function<bool(const std::vector<std::string>&)>& done) {
  std::vector<std::string> got;
  std::vector<bool> ready;
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
  while (std::chrono::steady_clock::now() < until && !done(got)) {
    EXPECT_TRUE(ctx->Poll({s}, 50, &ready).ok());
    Received r;
    for (;;) {
      auto ok = s->TryReceive(&r);
      if (!ok.ok() || !*ok) break;
      got.push_back(r.frames.size() > 1 ? r.frames[1] : "");
    }
  }
  return got;
}

// Receives on `s` for `ms`.
std::vector<std::string> ReceiveAll(Context* ctx, Socket* s, int ms) {
  return ReceiveUntil(ctx, s, ms, [](const std::vector<std::string>&) { return false; });
}

// Receives on `s` until a message came (at most 5 s).
std::vector<std::string> ReceiveOne(Context* ctx, Socket* s) {
  return ReceiveUntil(ctx, s, 5000,
                      [](const std::vector<std::string>& got) { return !got.empty(); });
}

// A listening socket holds at most max_connections connections: the handshake
// of one more is refused (counted for TakeRefusedConnections) and nothing it
// sends arrives; when a connection goes, a new one gets in. Plaintext (ZeroMQ's
// NULL mechanism, asked through ZAP only for the cap).
TEST(ConnectionCapTest, HandshakesPastTheCapAreRefused) {
  auto ctx = CreateZmqContext();
  SocketOptions lo;
  lo.max_connections = 2;
  auto l = ctx->Listen("tcp://127.0.0.1:*", lo);
  ASSERT_FL_OK(l);
  Socket* server = l->get();
  std::vector<std::unique_ptr<Socket>> clients;
  for (const char* name : {"first", "second"}) {
    auto c = ctx->Connect(server->endpoint(), SocketOptions{});
    ASSERT_FL_OK(c);
    clients.push_back(std::move(c).value());
    ASSERT_FL_OK(clients.back()->Send("", {"from", name}));
    auto got = ReceiveOne(ctx.get(), server);  // in before the next connects
    ASSERT_EQ(got.size(), 1u) << name;
    EXPECT_EQ(got[0], name);
  }
  auto third = ctx->Connect(server->endpoint(), SocketOptions{});
  ASSERT_FL_OK(third);
  ASSERT_FL_OK((*third)->Send("", {"from", "third"}));
  int64_t refused = 0;
  auto got_third = ReceiveUntil(ctx.get(), server, 5000, [&](const std::vector<std::string>&) {
    refused += server->TakeRefusedConnections();
    return refused > 0;
  });
  for (const auto& m : ReceiveAll(ctx.get(), server, 300)) got_third.push_back(m);
  EXPECT_TRUE(got_third.empty());
  EXPECT_GE(refused, 1);
  EXPECT_EQ(server->TakeRefusedConnections(), 0);  // taken
  // One goes; a new connection fits again.
  clients.pop_back();
  third->reset();
  ReceiveAll(ctx.get(), server, 500);  // the disconnects are seen
  auto fourth = ctx->Connect(server->endpoint(), SocketOptions{});
  ASSERT_FL_OK(fourth);
  ASSERT_FL_OK((*fourth)->Send("", {"from", "fourth"}));
  auto got = ReceiveOne(ctx.get(), server);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0], "fourth");
}

// TCP connections that never start a handshake do not fill the cap: a peer
// without keys cannot lock devices out by holding idle connections open (the
// handshake timeout closes them).
TEST(ConnectionCapTest, IdleConnectionsDoNotFillTheCap) {
  auto ctx = CreateZmqContext();
  SocketOptions lo;
  lo.max_connections = 2;
  auto l = ctx->Listen("tcp://127.0.0.1:*", lo);
  ASSERT_FL_OK(l);
  Socket* server = l->get();
  const std::string ep = server->endpoint();
  std::vector<int> idle;
  for (int i = 0; i < 8; ++i) {
    idle.push_back(ConnectTcp(ep));
    ASSERT_GE(idle.back(), 0);
  }
  ReceiveAll(ctx.get(), server, 300);  // their ACCEPTED events are in
  auto c = ctx->Connect(ep, SocketOptions{});
  ASSERT_FL_OK(c);
  ASSERT_FL_OK((*c)->Send("", {"from", "device"}));
  auto got = ReceiveOne(ctx.get(), server);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0], "device");
  EXPECT_EQ(server->TakeRefusedConnections(), 0);
  for (int fd : idle) ::close(fd);
}

// Over CURVE the cap comes before the key check, and the refused device is
// told that the server is full, not that its key is not enrolled. Once a
// connection has gone, a device gets in again.
TEST(ConnectionCapTest, CurveDeviceRefusedAtTheCapIsToldWhy) {
  auto ctx = CreateZmqContext();
  auto server_keys = GenerateCurveKeyPair();
  auto device = GenerateCurveKeyPair();
  ASSERT_FL_OK(server_keys);
  ASSERT_FL_OK(device);
  SocketOptions lo;
  lo.max_connections = 1;
  lo.curve.secret_key = KeyBytes(server_keys->secret_key);
  lo.curve.public_key = KeyBytes(server_keys->public_key);
  lo.curve.authorize = [&](const std::string& key) { return key == KeyBytes(device->public_key); };
  auto l = ctx->Listen("tcp://127.0.0.1:*", lo);
  ASSERT_FL_OK(l);
  Socket* server = l->get();
  SocketOptions co;
  co.curve.secret_key = KeyBytes(device->secret_key);
  co.curve.public_key = KeyBytes(device->public_key);
  co.curve.server_key = KeyBytes(server_keys->public_key);
  auto a = ctx->Connect(server->endpoint(), co);
  ASSERT_FL_OK(a);
  ASSERT_FL_OK((*a)->Send("", {"from", "a"}));
  ASSERT_EQ(ReceiveOne(ctx.get(), server).size(), 1u);
  auto b = ctx->Connect(server->endpoint(), co);  // the same device, a second connection
  ASSERT_FL_OK(b);
  ASSERT_FL_OK((*b)->Send("", {"from", "b"}));
  int64_t refused = 0;
  std::string why;
  auto got_b = ReceiveUntil(ctx.get(), server, 5000, [&](const std::vector<std::string>&) {
    refused += server->TakeRefusedConnections();
    if (why.empty()) why = (*b)->TakeHandshakeError();
    return refused > 0 && !why.empty();
  });
  for (const auto& m : ReceiveAll(ctx.get(), server, 300)) got_b.push_back(m);
  EXPECT_TRUE(got_b.empty());
  EXPECT_GE(refused, 1);
  EXPECT_NE(why.find("as many connections as it takes"), std::string::npos);
  a->reset();
  b->reset();
  ReceiveAll(ctx.get(), server, 500);  // the disconnect is seen
  auto c = ctx->Connect(server->endpoint(), co);
  ASSERT_FL_OK(c);
  ASSERT_FL_OK((*c)->Send("", {"from", "c"}));
  auto got = ReceiveOne(ctx.get(), server);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0], "c");
}

}  // namespace
}  // namespace transport
}  // namespace fl
