// One contract suite for the transport, run over inproc:// and tcp://127.0.0.1.
#include "transport/transport.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "crypto/identity.h"
#include "tests/test_util.h"

namespace fl {
namespace transport {
namespace {

class TransportTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    ctx_ = CreateZmqContext();
    SocketOptions so;
    so.max_frame_bytes = 1 << 16;
    so.max_frames = 4;
    auto l = ctx_->Listen(GetParam(), so);
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

TEST_P(TransportTest, SendToUnknownPeerFails) {
  Status st = server_->Send("no-such-peer", {"x"});
  EXPECT_FALSE(st.ok());
}

// CURVE: an enrolled key gets through and is reported as the peer's key;
// unenrolled keys, a plaintext client and a client pinning the wrong server key

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

INSTANTIATE_TEST_SUITE_P(Inproc, TransportTest, ::testing::Values("inproc://fedge-transport-test"));
INSTANTIATE_TEST_SUITE_P(Tcp, TransportTest, ::testing::Values("tcp://127.0.0.1:*"));
INSTANTIATE_TEST_SUITE_P(Tcp, TcpTransportTest, ::testing::Values("tcp://127.0.0.1:*"));

}  // namespace
}  // namespace transport
}  // namespace fl
