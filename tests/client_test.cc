// The client's side of signed models: a ClientSession pinned to the server's
// key, talking to a scripted server in the test. A TASK signed by another key,
// an unsigned TASK, one whose payload was altered, and one whose model does not
// match its version hash are all dropped before the client trains on anything;
// a genuine TASK is trained on and answered with an UPDATE that carries the
// round nonce under the device's signature.
#include <gtest/gtest.h>

#include <chrono>

#include "client/local_client.h"
#include "client/session.h"
#include "common/dataset.h"
#include "common/model_zoo.h"
#include "common/wire/compact.h"
#include "common/wire/serialize.h"
#include "crypto/ed25519.h"
#include "crypto/message.h"
#include "tests/test_util.h"

namespace fl {
namespace {

TEST(ClientSessionTest, OnlyGenuineSignedModelsAreTrainedOn) {
  auto data = LoadMnistFolder(test::MnistDir(), Split::kTrain);
  ASSERT_FL_OK(data);
  std::vector<int64_t> idx(100);
  for (int i = 0; i < 100; ++i) idx[i] = i;
  auto local = LocalClient::Create("mnist_2nn", *data, idx);
  ASSERT_FL_OK(local);
  auto server_key = SigningKey::Generate();
  auto other_key = SigningKey::Generate();
  auto device_key = SigningKey::Generate();
  ASSERT_FL_OK(server_key);
  ASSERT_FL_OK(other_key);
  ASSERT_FL_OK(device_key);

  auto ctx = transport::CreateZmqContext();
  auto listen = ctx->Listen("tcp://127.0.0.1:*", transport::SocketOptions());
  ASSERT_FL_OK(listen);
  transport::Socket* server = listen->get();
  ClientOptions co;
  co.server = server->endpoint();
  co.id = NodeId(device_key->public_key());
  co.key = &*device_key;
  co.server_key = server_key->public_key();
  co.verbose = false;
  ClientSession session(co, ctx, local->get());
  ASSERT_FL_OK(session.Start());

  // Drives the session and the scripted server until `until` holds (5 s at most).
  std::string peer;
  std::vector<transport::Received> from_client;
  auto pump = [&](const std::function<bool()>& until) {
    std::vector<bool> ready;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (!until() && std::chrono::steady_clock::now() < deadline) {
      EXPECT_TRUE(ctx->Poll({server, session.socket()}, 20, &ready).ok());
      EXPECT_FL_OK(session.Step());
      transport::Received rx;
      while (server->TryReceive(&rx).value()) {
        peer = rx.peer;
        from_client.push_back(rx);
      }
    }
    return until();
  };
  ASSERT_TRUE(pump([&] { return !from_client.empty(); }));  // the HELLO

  auto model = CreateModel("mnist_2nn", 3);
  ASSERT_FL_OK(model);
  wire::Task task;
  task.config.epochs = 1;
  task.config.batch_size = 10;
  task.config.lr = 0.05;
  task.config.uplink_bits = 8;
  task.model = wire::Compact(GetModelState("mnist_2nn", **model), wire::ValueFormat::kFp32);
  const std::string payload = wire::Encode(task);
  wire::Envelope env;
  env.type = wire::MessageType::kTask;
  env.sender = "server";
  env.round = 1;
  env.model_version = ModelVersion(task.model);
  env.nonce = RandomNonce();

  auto send = [&](const SealedMessage& m) {
    ASSERT_FL_OK(server->Send(peer, {m.envelope, m.payload}));
  };
  int64_t dropped = 0;
  auto expect_dropped = [&](const SealedMessage& m, const char* what) {
    send(m);
    EXPECT_TRUE(pump([&] { return session.stats().bad_messages > dropped; })) << what;
    dropped = session.stats().bad_messages;
    EXPECT_EQ(session.stats().rounds_trained, 0) << what;
  };
  expect_dropped(SealMessage(env, payload, &*other_key), "signed by another key");
  expect_dropped(SealMessage(env, payload, nullptr), "unsigned");
  SealedMessage altered = SealMessage(env, payload, &*server_key);
  altered.payload[altered.payload.size() / 2] ^= 0x01;
  expect_dropped(altered, "payload altered after signing");
  wire::Envelope wrong_version = env;
  wrong_version.model_version[0] ^= 0xFF;
  expect_dropped(SealMessage(wrong_version, payload, &*server_key), "version hash mismatch");
  EXPECT_EQ(dropped, 4);

  // The genuine TASK: trained on, answered with a signed UPDATE carrying the nonce.
  from_client.clear();
  send(SealMessage(env, payload, &*server_key));
  auto is_update = [&] {
    for (const auto& rx : from_client) {
      auto e = wire::DecodeEnvelope(rx.frames[0]);
      if (e.ok() && e->type == wire::MessageType::kUpdate) return true;
    }
    return false;
  };
  ASSERT_TRUE(pump(is_update));
  EXPECT_EQ(session.stats().rounds_trained, 1);
  for (const auto& rx : from_client) {
    auto e = OpenMessage(rx.frames[0], rx.frames[1], 64 << 20);
    ASSERT_FL_OK(e);
    if (e->type != wire::MessageType::kUpdate) continue;
    EXPECT_EQ(e->round, 1u);
    EXPECT_EQ(e->nonce, env.nonce);
    EXPECT_EQ(e->model_version, env.model_version);
    EXPECT_FL_OK(VerifyMessageSignature(rx.frames[0], device_key->public_key()));
  }
}

}  // namespace
}  // namespace fl
