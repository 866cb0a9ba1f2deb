// The client's side of signed models: a ClientSession pinned to the server's
// key, talking to a scripted server in the test. A TASK signed by another key,
// an unsigned TASK, one whose payload was altered, and one whose model does not
// match its version hash are all dropped before the client trains on anything;
// a genuine TASK is trained on and answered with an UPDATE that carries the
// round nonce under the device's signature.
#include <gtest/gtest.h>
#include <torch/script.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <functional>
#include <sstream>

#include "client/local_client.h"
#include "client/session.h"
#include "common/dataset.h"
#include "common/model_zoo.h"
#include "common/wire/compact.h"
#include "common/wire/serialize.h"
#include "crypto/ed25519.h"
#include "crypto/message.h"
#include "crypto/model_code.h"
#include "experiments/bench/script_models.h"
#include "tests/test_util.h"
#include "transport/simulated_network.h"

namespace fl {
namespace {

// A ClientSession pinned to a scripted server's key, driven from the test.
class ClientSessionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto data = test::LoadMnist(Split::kTrain);
    ASSERT_FL_OK(data);
    std::vector<int64_t> idx(100);
    for (int i = 0; i < 100; ++i) idx[i] = i;
    auto local = LocalClient::Create("", *data, idx);  // follows the server's architecture
    ASSERT_FL_OK(local);
    local_ = std::move(local).value();
    auto server_key = SigningKey::Generate();
    auto device_key = SigningKey::Generate();
    ASSERT_FL_OK(server_key);
    ASSERT_FL_OK(device_key);
    server_key_ = std::make_unique<SigningKey>(std::move(server_key).value());
    device_key_ = std::make_unique<SigningKey>(std::move(device_key).value());
    // In simulated time (transport/simulated_network.h), this thread the one
    // participant: a wait for a heartbeat or a timeout takes none of the
    // machine's.
    net_->Join();
    ctx_ = net_;
    auto listen = ctx_->Listen("tcp://127.0.0.1:*", transport::SocketOptions());
    ASSERT_FL_OK(listen);
    server_ = std::move(listen).value();
    ASSERT_NO_FATAL_FAILURE(StartSession(""));

    auto model = CreateModel("mnist_2nn", 3);
    ASSERT_FL_OK(model);
    task_.config.epochs = 1;
    task_.config.batch_size = 10;
    task_.config.lr = 0.05;
    task_.config.uplink_bits = 8;
    task_.model = wire::Compact(GetModelState("mnist_2nn", **model), wire::ValueFormat::kFp32);
    env_.type = wire::MessageType::kTask;
    env_.sender = "server";
    env_.round = 1;
    env_.nonce = RandomNonce();
  }

  void TearDown() override { net_->Leave(); }

  // A new session (the fixture's replaced), with `model_cache_dir` (empty:
  // none), up to its HELLO.
  void StartSession(const std::string& model_cache_dir) {
    session_.reset();
    from_client_.clear();
    ClientOptions co;
    co.server = server_->endpoint();
    co.id = NodeId(device_key_->public_key());
    co.key = device_key_.get();
    co.server_key = server_key_->public_key();
    co.model_cache_dir = model_cache_dir;
    co.verbose = false;
    co.clock = net_.get();
    session_ = std::make_unique<ClientSession>(co, ctx_, local_.get());
    ASSERT_FL_OK(session_->Start());
    ASSERT_TRUE(Pump([&] { return !from_client_.empty(); }));  // the HELLO
  }

  // Drives the session and the scripted server until `until` holds (5 s of
  // simulated time at most).
  bool Pump(const std::function<bool()>& until) {
    std::vector<bool> ready;
    const double deadline = net_->Now() + 5;
    while (!until() && net_->Now() < deadline) {
      EXPECT_TRUE(ctx_->Poll({server_.get(), session_->socket()}, 20, &ready).ok());
      EXPECT_FL_OK(session_->Step());
      transport::Received rx;
      while (server_->TryReceive(&rx).value()) {
        peer_ = rx.peer;
        from_client_.push_back(rx);
      }
    }
    return until();
  }

  // `task` as the server sends it: its envelope names the model's version.
  SealedMessage Sealed(const wire::Task& task, const SigningKey* key) {
    wire::Envelope env = env_;
    env.model_version = ModelVersion(task.model);
    return SealMessage(env, wire::Encode(task), key);
  }

  void Send(const SealedMessage& m) { ASSERT_FL_OK(server_->Send(peer_, {m.envelope, m.payload})); }

  // Sends the server's reply `code` about a message of type `about`: an ACK
  // ("granted" about a READY) or a REJECT ("not_needed" about a TASK), under
  // the task's envelope with `nonce`.
  void SendReply(wire::MessageType type, wire::MessageType about, const std::string& code,
                 const std::array<uint8_t, wire::kNonceBytes>& nonce) {
    wire::Envelope e = env_;
    e.type = type;
    e.nonce = nonce;
    Send(SealMessage(e, wire::Encode(wire::Reply{static_cast<uint8_t>(about), code, ""}),
                     server_key_.get()));
  }
  void Grant() {
    SendReply(wire::MessageType::kAck, wire::MessageType::kReady, "granted", env_.nonce);
  }

  // Sends `m` and expects the session to drop it without training.
  void ExpectDropped(const SealedMessage& m, const std::string& what) {
    const int64_t before = session_->stats().bad_messages;
    Send(m);
    EXPECT_TRUE(Pump([&] { return session_->stats().bad_messages > before; })) << what;
    EXPECT_EQ(session_->stats().rounds_trained, 0) << what;
    EXPECT_FL_OK(session_->Step());  // and the session carries on
  }

  // Sends a genuine TASK and expects a signed UPDATE carrying its nonce.
  void ExpectTrainedOn(const wire::Task& task) {
    from_client_.clear();
    Send(Sealed(task, server_key_.get()));
    auto is_update = [&] {
      for (const auto& rx : from_client_) {
        auto e = wire::DecodeEnvelope(rx.frames[0]);
        if (e.ok() && e->type == wire::MessageType::kUpdate) return true;
      }
      return false;
    };
    ASSERT_TRUE(Pump(is_update));
    EXPECT_EQ(session_->stats().rounds_trained, 1);
    for (const auto& rx : from_client_) {
      auto e = OpenMessage(rx.frames[0], rx.frames[1], 64 << 20);
      ASSERT_FL_OK(e);
      if (e->type != wire::MessageType::kUpdate) continue;
      EXPECT_EQ(e->round, 1u);
      EXPECT_EQ(e->nonce, env_.nonce);
      EXPECT_EQ(e->model_version, ModelVersion(task.model));
      EXPECT_FL_OK(VerifyMessageSignature(rx.frames[0], device_key_->public_key()));
    }
  }

  std::unique_ptr<LocalClient> local_;
  std::unique_ptr<SigningKey> server_key_, device_key_;
  const std::shared_ptr<transport::SimulatedNetwork> net_ =
      std::make_shared<transport::SimulatedNetwork>();
  std::shared_ptr<transport::Context> ctx_;
  std::unique_ptr<transport::Socket> server_;
  std::unique_ptr<ClientSession> session_;
  std::string peer_;
  std::vector<transport::Received> from_client_;
  wire::Task task_;
  wire::Envelope env_;
};

TEST_F(ClientSessionTest, OnlyGenuineSignedModelsAreTrainedOn) {
  auto other_key = SigningKey::Generate();
  ASSERT_FL_OK(other_key);
  ExpectDropped(Sealed(task_, &*other_key), "signed by another key");
  ExpectDropped(Sealed(task_, nullptr), "unsigned");
  SealedMessage altered = Sealed(task_, server_key_.get());
  altered.payload[altered.payload.size() / 2] ^= 0x01;
  ExpectDropped(altered, "payload altered after signing");
  wire::Envelope env = env_;
  env.model_version = ModelVersion(task_.model);
  env.model_version[0] ^= 0xFF;
  ExpectDropped(SealMessage(env, wire::Encode(task_), server_key_.get()), "version hash mismatch");
  EXPECT_EQ(session_->stats().bad_messages, 4);
  ExpectTrainedOn(task_);
}

// A model file from the server, signed with the pinned key, whose code writes
// the device's data to a file: refused before any of it runs
// (common/script_check.h). The device drops the TASK, says why, never trains,
// and carries on to the genuine TASK that follows.
TEST_F(ClientSessionTest, ASignedHostileModelFileIsRefusedBeforeItRuns) {
  test::TempDir dir;
  ASSERT_NO_FATAL_FAILURE(StartSession(dir.path() + "/cache"));
  const std::string leak = dir.path() + "/leaked.pt";
  torch::jit::Module leaky("Leaky");
  leaky.register_parameter("w", torch::zeros({10, 784}), false);
  leaky.define("def forward(self, x):\n    torch.save(x, \"" + leak +
               "\")\n    return torch.linear(torch.flatten(x, 1), self.w)\n");
  std::ostringstream file;
  leaky.save(file);
  wire::Task task = task_;
  task.model_code = file.str();
  task.model_code_signature = SignModelCode(task.model_code, *server_key_);
  ModelState state;
  state.architecture = ModelCodeId(task.model_code);
  state.tensors.push_back({"w", {10, 784}, std::vector<float>(7840, 0.0f), {}});
  task.model = wire::Compact(state, wire::ValueFormat::kFp32);
  ExpectDropped(Sealed(task, server_key_.get()), "a signed model file that saves its input");
  EXPECT_FALSE(std::filesystem::exists(leak)) << "the refused script ran";
  EXPECT_EQ(session_->stats().bad_messages, 1);
  ExpectTrainedOn(task_);
}

// A malicious (or misconfigured) server cannot crash a client or make it
// allocate what the TASK says: every training setting is bounded and the
// model's layout is checked against the architecture before it is expanded.
// Each TASK below is signed by the pinned server key; the client drops it,
// says why, and still trains on the genuine TASK that follows.
TEST_F(ClientSessionTest, HostileTrainingConfigurationsAndShapesAreRefused) {
  struct Case {
    const char* what;
    std::function<void(wire::Task*)> make;
  };
  const std::vector<Case> cases = {
      {"block 2^32-1", [](wire::Task* t) { t->config.block = 0xFFFFFFFFu; }},
      {"block 0", [](wire::Task* t) { t->config.block = 0; }},
      {"3 bits", [](wire::Task* t) { t->config.uplink_bits = 3; }},
      {"0 epochs", [](wire::Task* t) { t->config.epochs = 0; }},
      {"2^31-1 epochs", [](wire::Task* t) { t->config.epochs = 0x7FFFFFFF; }},
      {"batch -1", [](wire::Task* t) { t->config.batch_size = -1; }},
      {"batch 2^40", [](wire::Task* t) { t->config.batch_size = int64_t{1} << 40; }},
      {"lr NaN", [](wire::Task* t) { t->config.lr = std::nan(""); }},
      {"lr -1", [](wire::Task* t) { t->config.lr = -1; }},
      {"lr Inf", [](wire::Task* t) { t->config.lr = INFINITY; }},
      {"momentum 1", [](wire::Task* t) { t->config.momentum = 1; }},
      {"weight decay -1", [](wire::Task* t) { t->config.weight_decay = -1; }},
      {"deadline NaN", [](wire::Task* t) { t->config.deadline_seconds = std::nan(""); }},
      // A first tensor of 2^34 values whose mask (2^31 bytes would be needed)
      // is not even there: refused on its shape, nothing expanded.
      {"shape of 2^34 values",
       [](wire::Task* t) {
         t->model.tensors[0].shape = {int64_t{1} << 17, int64_t{1} << 17};
       }},
      {"transposed shape",
       [](wire::Task* t) {
         t->model.tensors[0].shape = {784, 200};
       }},
      {"renamed tensor", [](wire::Task* t) { t->model.tensors[1].name = "fc9.bias"; }},
      {"missing tensor", [](wire::Task* t) { t->model.tensors.pop_back(); }},
  };
  for (const auto& c : cases) {
    wire::Task t = task_;
    c.make(&t);
    ExpectDropped(Sealed(t, server_key_.get()), c.what);
  }
  EXPECT_EQ(session_->stats().bad_messages, static_cast<int64_t>(cases.size()));
  ExpectTrainedOn(task_);
}

// Size and freshness of what the server says: small messages are small; a DONE must echo the
// freshness stamp of a HELLO this connection sent, so a DONE captured earlier (another connection,
// another run) cannot stop the client; a TASK for a round before the one the
// server's welcome named is a replay and is not trained on.
TEST_F(ClientSessionTest, StaleDoneAndReplayedTasksAreRefused) {
  auto hello = wire::DecodeEnvelope(from_client_.at(0).frames[0]);
  ASSERT_FL_OK(hello);
  const uint64_t stamp = wire::HelloStampOf(hello->nonce);
  ASSERT_GT(stamp, 0u);
  auto done = [&](uint64_t echoed) {
    wire::Envelope e = env_;
    e.type = wire::MessageType::kDone;
    e.nonce = wire::HelloStampNonce(echoed);
    return SealMessage(e, wire::Encode(wire::Done{3, 0.9, "finished"}), server_key_.get());
  };
  auto welcome = [&](uint64_t round) {
    wire::Envelope e = env_;
    e.type = wire::MessageType::kAck;
    e.round = round;
    wire::Reply r;
    r.in_reply_to = static_cast<uint8_t>(wire::MessageType::kHello);
    r.reason = "welcome";
    return SealMessage(e, wire::Encode(r), server_key_.get());
  };
  {
    // ACK, REJECT and DONE are small: one over 4 KiB is dropped unread.
    wire::Envelope e = env_;
    e.type = wire::MessageType::kReject;
    wire::Reply big;
    big.reason = "x";
    big.message.assign(8 << 10, 'm');
    ExpectDropped(SealMessage(e, wire::Encode(big), server_key_.get()), "an 8 KiB REJECT");
  }
  {
    // A TASK larger than any model this client could train (the largest in the
    // zoo, the CNN, is under 7 MB): dropped unread.
    wire::Task big = task_;
    big.model.tensors.push_back({"junk", {int64_t{3} << 20}, "", std::string(12 << 20, 'x')});
    const int64_t before = session_->stats().bad_messages;
    ExpectDropped(Sealed(big, server_key_.get()), "a 12 MiB TASK");
    EXPECT_EQ(session_->stats().bad_messages, before + 1);
  }
  ExpectDropped(done(stamp - 1), "a DONE from before this connection");
  ExpectDropped(done(0), "a DONE with no stamp");
  EXPECT_FALSE(session_->done());
  // The server is at round 2: a TASK for round 1 is a replay.
  Send(welcome(2));
  ExpectDropped(Sealed(task_, server_key_.get()), "a TASK for round 1 after a welcome at 2");
  // The round the server is at is trained on; then a fresh DONE ends the session.
  env_.round = 2;
  wire::Task t = task_;
  from_client_.clear();
  Send(Sealed(t, server_key_.get()));
  ASSERT_TRUE(Pump([&] { return session_->stats().rounds_trained == 1; }));
  Send(done(stamp));
  EXPECT_TRUE(Pump([&] { return session_->done(); }));
}

// A TASK that asks before upload: the client confirms it (a HELLO naming the
// round), trains, sends READY and holds its UPDATE until the grant. A READY
// left unanswered is sent again (the server drops messages over a device's
// rate limit); the same round's TASK sent again is not trained on twice.
TEST_F(ClientSessionTest, AskBeforeUploadHoldsTheUpdateUntilTheGrant) {
  auto count = [&](wire::MessageType type, uint64_t round) {
    int n = 0;
    for (const auto& rx : from_client_) {
      auto e = wire::DecodeEnvelope(rx.frames[0]);
      if (e.ok() && e->type == type && e->round == round) ++n;
    }
    return n;
  };
  from_client_.clear();
  wire::Task task = task_;
  task.ask_before_upload = true;
  Send(Sealed(task, server_key_.get()));
  ASSERT_TRUE(Pump([&] { return count(wire::MessageType::kReady, 1) == 1; }));
  EXPECT_EQ(count(wire::MessageType::kHello, 1), 1);  // the receipt
  EXPECT_EQ(count(wire::MessageType::kUpdate, 1), 0);
  EXPECT_EQ(session_->stats().rounds_trained, 1);
  Send(Sealed(task, server_key_.get()));  // the same round again: not retrained
  // Unanswered, the READY goes again after two heartbeats (4 s here).
  ASSERT_TRUE(Pump([&] { return count(wire::MessageType::kReady, 1) == 2; }) ||
              Pump([&] { return count(wire::MessageType::kReady, 1) == 2; }));
  EXPECT_EQ(session_->stats().rounds_trained, 1);
  EXPECT_EQ(count(wire::MessageType::kUpdate, 1), 0);
  Grant();
  ASSERT_TRUE(Pump([&] { return count(wire::MessageType::kUpdate, 1) == 1; }));
  for (const auto& rx : from_client_) {
    auto e = OpenMessage(rx.frames[0], rx.frames[1], 64 << 20);
    ASSERT_FL_OK(e);
    if (e->type != wire::MessageType::kUpdate) continue;
    EXPECT_EQ(e->nonce, env_.nonce);
    wire::Update u;
    ASSERT_FL_OK(wire::Decode(rx.frames[1], &u));
    EXPECT_EQ(u.num_examples, 100);
  }
}

// A withdrawal (REJECT not_needed about a TASK) drops the held update only
// when it names the task's round and nonce: a copy of one sent for another
// task of the same round number withdraws nothing.
TEST_F(ClientSessionTest, OnlyAWithdrawalNamingTheTasksNonceDropsItsUpdate) {
  from_client_.clear();
  wire::Task task = task_;
  task.ask_before_upload = true;
  Send(Sealed(task, server_key_.get()));
  auto readies = [&] {
    int n = 0;
    for (const auto& rx : from_client_) {
      auto e = wire::DecodeEnvelope(rx.frames[0]);
      if (e.ok() && e->type == wire::MessageType::kReady) ++n;
    }
    return n;
  };
  ASSERT_TRUE(Pump([&] { return readies() == 1; }));
  auto withdraw = [&](const std::array<uint8_t, wire::kNonceBytes>& nonce) {
    SendReply(wire::MessageType::kReject, wire::MessageType::kTask, "not_needed", nonce);
  };
  const int64_t bad = session_->stats().bad_messages;
  withdraw(RandomNonce());  // another task's
  ASSERT_TRUE(Pump([&] { return session_->stats().bad_messages > bad; }));
  EXPECT_EQ(session_->stats().withdrawn, 0);
  withdraw(env_.nonce);  // this task's
  ASSERT_TRUE(Pump([&] { return session_->stats().withdrawn == 1; }));
  // Withdrawn: a grant now sends nothing.
  Grant();
  Pump([] { return false; });
  for (const auto& rx : from_client_) {
    auto e = wire::DecodeEnvelope(rx.frames[0]);
    ASSERT_FL_OK(e);
    EXPECT_NE(e->type, wire::MessageType::kUpdate);
  }
}

// A device numbers its classes as the federation does on a copy of its data,
// kept only when its model takes the federation's classes: a TASK naming four
// classes for a model with three outputs is refused, and the device's data is
// left as it was, so the next TASK (the federation's three classes in another
// order) trains. Renumbered in place, the data would keep the refused list,
// and its class 'd' would then stop the device.
TEST(LocalClientTest, ClassesAreRenumberedOnACopyKeptOnlyWhenTheModelTakesThem) {
  test::TempDir dir;
  ModelState mlp;
  mlp.tensors.push_back({"fc.weight", {3, 4}, std::vector<float>(12, 0.1f), {}});
  mlp.tensors.push_back({"fc.bias", {3}, std::vector<float>(3, 0.0f), {}});
  const std::string pt = dir.path() + "/mlp.pt";
  ScriptModuleOf(
      mlp, "Mlp",
      "def forward(self, x):\n    return torch.linear(x, self.fc.weight, self.fc.bias)\n")
      .save(pt);
  Dataset data;
  data.count = 30;
  data.shape = {4};
  data.num_classes = 3;
  data.class_names = {"a", "b", "c"};
  data.floats = true;
  std::vector<int64_t> idx;
  for (int i = 0; i < 30; ++i) {
    data.labels.push_back(static_cast<uint8_t>(i % 3));
    for (int f = 0; f < 4; ++f) data.features.push_back(static_cast<float>(i % 3 + f));
    idx.push_back(i);
  }
  auto local = LocalClient::Create(pt, data, idx);
  ASSERT_FL_OK(local);
  auto model = CreateModel(pt, 0);
  ASSERT_FL_OK(model);
  FitIns ins;
  ins.parameters = GetModelState((*model)->architecture, **model);
  ins.lr = 0.1;
  ins.class_names = {"a", "b", "c", "d"};
  auto refused = (*local)->Fit(ins);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), Status::Code::kFailedPrecondition)
      << refused.status().ToString();
  EXPECT_NE(refused.status().ToString().find("the federation's classes"), std::string::npos)
      << refused.status().ToString();
  ins.class_names = {"c", "b", "a"};
  auto fit = (*local)->Fit(ins);
  ASSERT_FL_OK(fit);
  EXPECT_EQ(fit->num_examples, 30);
}

}  // namespace
}  // namespace fl
