// CheckUpdate, the server's checks of an UPDATE, one refusal at a time; and
// Authenticate, the only way to a VerifiedMessage.
#include "server/update_check.h"

#include <gtest/gtest.h>

#include <cmath>

#include "common/codec.h"
#include "common/fixed_point.h"
#include "common/quant_codec.h"
#include "common/wire/serialize.h"
#include "crypto/ed25519.h"
#include "crypto/message.h"
#include "tests/test_util.h"

namespace fl {
namespace {

class UpdateCheckTest : public ::testing::Test {
 protected:
  void SetUp() override {
    global_.architecture = "toy";
    global_.tensors.push_back({"w", {4}, {1, 0, -1, 0.5f}, {1, 0, 1, 1}});  // 3 kept
    train_.uplink_bits = 32;
    bounds_.base = ModelVersion(global_);
    bounds_.global = &global_;
    bounds_.kept_count = 3;
    bounds_.global_max_abs = 1;
    bounds_.train = &train_;
    bounds_.registered = 100;
    bounds_.weight_cap = 50;
    bounds_.norm_bound = 10;
    bounds_.norm_bound_source = "--max-update-norm";
    bounds_.step_scale = 1;
    bounds_.value_limit = 100;
  }

  // An UPDATE of `delta` (32-bit) claiming `examples`, from `base`; from a
  // relay when `contributors` > 1 (a partial aggregate of that many devices).
  // `within_clip` >= 0 makes it a private partial. Codec "x": a relay's exact
  // sum, `delta` being its mean, of `sum_weight` (-1: `examples`).
  void Make(std::vector<float> delta, int64_t examples = 80, std::string codec = "q",
            uint32_t contributors = 1, int64_t within_clip = -1, int64_t sum_weight = -1) {
    QuantOptions q;
    q.bits = 32;
    std::string data = QuantEncode(delta.data(), delta.size(), q);
    if (codec == "sign") {
      CodecParams p;
      p.bits = 1;
      p.block = train_.block;
      data = FindCodec("sign")->Encode(delta.data(), delta.size(), p);
    }
    if (codec == "x") {
      FixedSum sum;
      const int64_t w = sum_weight >= 0 ? sum_weight : examples;
      if (w > 0) {
        EXPECT_FL_OK(AddWeighted(&sum, w, delta.data(), delta.size()));
      } else {
        sum.values.assign(delta.size(), 0);
      }
      data = EncodeFixedSum(sum);
    }
    wire::Update u{examples, 0.5, 2.0, codec, data};
    u.contributors = contributors;
    u.within_clip = within_clip;
    wire::Envelope env;
    env.type = wire::MessageType::kUpdate;
    env.sender = "dev";
    env.round = 1;
    env.model_version = base_;
    SealedMessage m = SealMessage(env, wire::Encode(u));
    envelope_ = m.envelope;
    payload_ = m.payload;
  }

  // Runs Authenticate then CheckUpdate; returns the refusal reason ("" = accepted).
  std::string Check(AcceptedUpdate* out = nullptr) {
    IngressPolicy policy;
    frames_ = Frames();
    auto v = Authenticate(2, &frames_, "", policy, nullptr);
    if (auto* r = std::get_if<Refusal>(&v)) return "ingress:" + r->reason;
    auto c = CheckUpdate(std::get<VerifiedMessage>(v), bounds_, &delta_);
    if (auto* r = std::get_if<Refusal>(&c)) {
      message_ = r->message;
      return r->reason;
    }
    if (out) *out = std::get<AcceptedUpdate>(c);
    return "";
  }

  ModelState global_;
  wire::TrainConfig train_;
  UpdateBounds bounds_;
  std::array<uint8_t, 32> base_ = {};
  std::string envelope_, payload_, message_;
  // Frames as received: {envelope, payload}.
  std::vector<std::string> Frames() const { return {envelope_, payload_}; }
  std::vector<float> delta_;
  std::vector<std::string> frames_;
};

TEST_F(UpdateCheckTest, AGoodUpdateIsAcceptedWithItsWeightCapped) {
  base_ = bounds_.base;
  Make({3, 4, 0});
  AcceptedUpdate a;
  ASSERT_EQ(Check(&a), "");
  EXPECT_EQ(a.weight, 50);  // 80 claimed, capped at 50
  EXPECT_DOUBLE_EQ(a.norm, 5.0);
  EXPECT_EQ(delta_, (std::vector<float>{3, 4, 0}));
  EXPECT_DOUBLE_EQ(a.train_loss, 0.5);
}

TEST_F(UpdateCheckTest, EachRefusalHasItsReason) {
  Make({1, 1, 1});  // base_ all zeros: another model
  EXPECT_EQ(Check(), "wrong_base");
  base_ = bounds_.base;
  Make({1, 1, 1}, 101);
  EXPECT_EQ(Check(), "bad_weight");
  EXPECT_NE(message_.find("1..100"), std::string::npos) << message_;
  Make({1, 1, 1}, 0);
  EXPECT_EQ(Check(), "bad_weight");
  Make({1, 1, 1}, 10, "zstd");
  EXPECT_EQ(Check(), "bad_codec");
  Make({1, 1});  // two values for three kept
  EXPECT_EQ(Check(), "bad_delta");
  Make({30, 40, 0});  // norm 50 > 10
  EXPECT_EQ(Check(), "norm_too_large");
  EXPECT_NE(message_.find("--max-update-norm"), std::string::npos);
  bounds_.norm_bound = 0;
  bounds_.value_limit = 20;
  Make({30, 0, 0});  // 1 + 30 > 20
  EXPECT_EQ(Check(), "out_of_range");
  bounds_.step_scale = 0;  // a strategy without the per-update check
  EXPECT_EQ(Check(), "");
  // Momentum: the step is 1 * (0.9 * m + d); with m = 10 at the first value,
  // 1 + 9 + 5 = 15 is within 20, 1 + 9 + 15 = 25 is not.
  bounds_.step_scale = 1;
  const std::vector<float> momentum = {10, 0, 0};
  bounds_.offset = &momentum;
  bounds_.offset_factor = 0.9;
  bounds_.offset_max_abs = 9;
  Make({5, 0, 0});
  EXPECT_EQ(Check(), "");
  Make({15, 0, 0});
  EXPECT_EQ(Check(), "out_of_range");
  bounds_.offset = nullptr;
  bounds_.offset_max_abs = 0;
  EXPECT_EQ(Check(), "");  // without the momentum, 1 + 15 fits
  Make({30, 0, 0});
  bounds_.step_scale = 0;
  train_.uplink_bits = 8;
  EXPECT_EQ(Check(), "wrong_codec");
  EXPECT_NE(message_.find("the round asked for 8-bit"), std::string::npos) << message_;
  // Not a decodable UPDATE at all.
  wire::Envelope env;
  env.type = wire::MessageType::kUpdate;
  env.sender = "dev";
  env.model_version = base_;
  SealedMessage m = SealMessage(env, "garbage");
  envelope_ = m.envelope;
  payload_ = m.payload;
  EXPECT_EQ(Check(), "bad_payload");
}

// The codec is the one the TASK named: in a round of 1-bit signs an update
// in signs is taken (each value its block's mean magnitude, signed), one in
// another codec or another block size is refused.
TEST_F(UpdateCheckTest, ARoundOfSignsTakesSignsOnly) {
  base_ = bounds_.base;
  train_.codec = "sign";
  train_.uplink_bits = 1;
  train_.block = 2;
  Make({3, -1, 0.5f}, 80, "sign");
  AcceptedUpdate a;
  ASSERT_EQ(Check(&a), "") << message_;
  EXPECT_EQ(delta_, (std::vector<float>{2, -2, 0.5f}));  // blocks {3, -1} and {0.5}
  Make({3, -1, 0.5f}, 80, "q");
  EXPECT_EQ(Check(), "bad_codec");
  EXPECT_NE(message_.find("('sign')"), std::string::npos) << message_;
  Make({3, -1, 0.5f}, 80, "sign");  // blocks of 2
  train_.block = 4;                 // and the round asks for 4
  EXPECT_EQ(Check(), "wrong_codec");
  EXPECT_NE(message_.find("1-bit signs, a scale per 4 values"), std::string::npos) << message_;
}

// A relay's partial aggregate: refused from a participant that is not an
// enrolled relay, with more devices than --relay-devices, or weighing more
// than its devices x --max-examples; otherwise it counts with its whole
// weight (a sum of devices' weights, not one device's, so neither what it
// registered with nor the per-device cap applies).
TEST_F(UpdateCheckTest, ARelaysPartialIsBoundedByItsDevices) {
  base_ = bounds_.base;
  Make({0.1f, 0.2f, 0.3f}, 3000, "x", 4);
  EXPECT_EQ(Check(), "relay_weight");  // not a relay
  EXPECT_NE(message_.find("not an enrolled relay"), std::string::npos) << message_;
  bounds_.relay_devices = 3;
  bounds_.device_cap = 1000;
  EXPECT_EQ(Check(), "relay_weight");  // 4 devices > 3
  EXPECT_NE(message_.find("--relay-devices"), std::string::npos) << message_;
  bounds_.relay_devices = 100;
  Make({0.1f, 0.2f, 0.3f}, 4001, "x", 4);
  EXPECT_EQ(Check(), "relay_weight");  // 4001 > 4 x 1000
  EXPECT_NE(message_.find("4 device(s) x --max-examples 1000"), std::string::npos) << message_;
  Make({0.1f, 0.2f, 0.3f}, 4000, "x", 4);
  AcceptedUpdate a;
  EXPECT_EQ(Check(&a), "");
  EXPECT_EQ(a.weight, 4000);  // above registered (100) and weight_cap (50)
  // The checks saw its mean, what it moves the model by per example.
  ASSERT_EQ(delta_.size(), 3u);
  EXPECT_EQ(delta_[2], 0.3f);
  // A relay hands up its exact sum, and the sum's weight is what it claims.
  Make({0.1f, 0.2f, 0.3f}, 4000, "q", 4);
  EXPECT_EQ(Check(), "wrong_codec");
  EXPECT_NE(message_.find("is the relay older than the root?"), std::string::npos) << message_;
  Make({0.1f, 0.2f, 0.3f}, 4000, "x", 4, -1, 400);
  EXPECT_EQ(Check(), "relay_weight");
  EXPECT_NE(message_.find("the partial sum is of weight 400 and its UPDATE claims 4000"),
            std::string::npos)
      << message_;
  Make({0.1f, 0.2f}, 4000, "x", 4);  // two values for three kept
  EXPECT_EQ(Check(), "bad_delta");
  // None of its devices answered: an empty partial, refused so the round
  // does not wait for it.
  Make({0, 0, 0}, 0, "x");
  EXPECT_EQ(Check(), "relay_empty");
  // A participant that may send partials but is not known as a relay
  // (--relays any, before its first partial): its one-device update is a
  // device's, held to what it registered with and to the round's cap.
  Make({0.1f, 0.2f, 0.3f}, 1000);
  EXPECT_EQ(Check(), "bad_weight");
  Make({0.1f, 0.2f, 0.3f}, 80);
  EXPECT_EQ(Check(&a), "");
  EXPECT_EQ(a.weight, 50);
  // ... and it cannot send an exact sum as a device.
  Make({0.1f, 0.2f, 0.3f}, 80, "x");
  EXPECT_EQ(Check(), "relay_weight");
  // An enrolled relay with one device behind it this round: no contributors
  // field, the relay's bound.
  bounds_.relay = true;
  Make({0.1f, 0.2f, 0.3f}, 1001, "x");
  EXPECT_EQ(Check(), "relay_weight");
  Make({0.1f, 0.2f, 0.3f}, 1000, "x");
  EXPECT_EQ(Check(&a), "");
  EXPECT_EQ(a.weight, 1000);
}

// Under central privacy a relay's partial is the exact sum of its devices'
// clipped deltas, each weighing one, with their within-clip count: one
// without the count, or weighing other than its devices, is refused; a
// private partial is refused from a device and in a round that is not
// private.
TEST_F(UpdateCheckTest, APrivateRoundTakesOnlyPrivatePartialsFromRelays) {
  base_ = bounds_.base;
  bounds_.relay_devices = 100;
  bounds_.device_cap = 1000;
  bounds_.relay = true;
  Make({0.1f, 0.2f, 0.3f}, 4, "x", 4, 3);
  EXPECT_EQ(Check(), "relay_private");  // the round is not private
  bounds_.private_partials = true;
  AcceptedUpdate a;
  EXPECT_EQ(Check(&a), "");
  EXPECT_EQ(a.weight, 4);
  EXPECT_EQ(a.contributors, 4);
  EXPECT_EQ(a.within_clip, 3);
  Make({0.1f, 0.2f, 0.3f}, 4000, "x", 4);  // a relay that does not take part
  EXPECT_EQ(Check(), "relay_private");
  EXPECT_NE(message_.find("within-clip count"), std::string::npos) << message_;
  Make({0.1f, 0.2f, 0.3f}, 40, "x", 4, 3);  // weighs more than one per device
  EXPECT_EQ(Check(), "relay_weight");
  EXPECT_NE(message_.find("one per device"), std::string::npos) << message_;
  // It is exact whatever the round's codec, and beyond the norm bound it is
  // not refused (the aggregator clips it to the privacy clip).
  train_.uplink_bits = 8;
  Make({30.0f, 0.2f, 0.3f}, 4, "x", 4, 3);
  EXPECT_EQ(Check(&a), "");
  Make({30.0f, 0.2f, 0.3f}, 4, "x", 4);  // (without the count: refused first)
  EXPECT_EQ(Check(), "relay_private");
  train_.uplink_bits = 32;
  // A device's own update in a private round is as ever; a device cannot
  // send a private partial.
  bounds_.relay = false;
  bounds_.relay_devices = 0;
  Make({0.1f, 0.2f, 0.3f}, 80);
  EXPECT_EQ(Check(&a), "");
  EXPECT_EQ(a.within_clip, -1);
  Make({0.1f, 0.2f, 0.3f}, 1, "q", 1, 1);
  EXPECT_EQ(Check(), "relay_weight");
}

// Aggregation sums in fixed point, up to 2^23 a value: a delta beyond it is
// refused on arrival (out_of_range), even where no per-update range check
// applies (step_scale 0, norm bound off).
TEST_F(UpdateCheckTest, ADeltaBeyondTheFixedPointRangeIsRefused) {
  base_ = bounds_.base;
  bounds_.norm_bound = 0;
  bounds_.step_scale = 0;
  Make({8388607.0f, 0, 0});
  EXPECT_EQ(Check(), "");
  Make({0, -8388608.0f, 0});
  EXPECT_EQ(Check(), "out_of_range");
  EXPECT_NE(message_.find("fixed-point range"), std::string::npos) << message_;
}

TEST_F(UpdateCheckTest, IngressRefusesBeforeAnythingIsDecoded) {
  base_ = bounds_.base;
  Make({1, 1, 1});
  IngressPolicy policy;
  // Frame count, then a flipped payload byte (digest).
  auto reason = [&](size_t count, std::vector<std::string> frames, const std::string& key) {
    auto v = Authenticate(count, &frames, key, policy, nullptr);
    auto* r = std::get_if<Refusal>(&v);
    return r ? r->reason : std::string("accepted");
  };
  EXPECT_EQ(reason(3, Frames(), ""), "bad_frames");
  // A sender that claims 2 frames but whose second never arrived.
  EXPECT_EQ(reason(2, {envelope_}, ""), "bad_frames");
  std::string flipped = payload_;
  flipped[flipped.size() / 2] ^= 1;
  EXPECT_EQ(reason(2, {envelope_, flipped}, ""), "bad_digest");
  // Size limit by type.
  policy.payload_limit = [](wire::MessageType) { return size_t{10}; };
  EXPECT_EQ(reason(2, Frames(), ""), "too_large");
  policy.payload_limit = nullptr;
  // With senders: unknown, unsigned, signed by another key, over another
  // device's transport key, and finally right.
  auto generated = SigningKey::Generate();
  ASSERT_FL_OK(generated);
  const SigningKey& key = *generated;
  auto verifier = Ed25519Verifier::Create(key.public_key());
  ASSERT_FL_OK(verifier);
  bool known = false;
  KnownSender sender;
  sender.verifier = &*verifier;
  policy.sender = [&](const std::string&) -> std::optional<KnownSender> {
    if (!known) return std::nullopt;
    return sender;
  };
  EXPECT_EQ(reason(2, Frames(), ""), "not_enrolled");
  known = true;
  EXPECT_EQ(reason(2, Frames(), ""), "bad_signature");
  auto env = wire::DecodeEnvelope(envelope_);
  ASSERT_FL_OK(env);
  SealedMessage signed_msg = SealMessage(*env, payload_, &key);
  sender.check_transport = true;
  sender.transport_key = std::array<uint8_t, 32>{};
  const std::string other(32, '\x07');
  EXPECT_EQ(reason(2, {signed_msg.envelope, payload_}, other), "key_mismatch");
  const std::string own(32, '\0');
  std::vector<std::string> good = {signed_msg.envelope, payload_};
  auto ok = Authenticate(2, &good, own, policy, nullptr);
  ASSERT_TRUE(std::holds_alternative<VerifiedMessage>(ok));
  wire::Update u;
  EXPECT_FL_OK(std::get<VerifiedMessage>(ok).Decode(&u));
}

}  // namespace
}  // namespace fl
