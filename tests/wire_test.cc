// Wire protocol: envelope and payload round-trips, and rejection of every kind
// of malformed, truncated, padded or oversized input.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "common/quant_codec.h"
#include "common/text.h"
#include "common/wire/compact.h"
#include "common/wire/envelope.h"
#include "common/wire/limits.h"
#include "common/wire/serialize.h"
#include "crypto/ed25519.h"
#include "crypto/message.h"
#include "tests/test_util.h"

namespace fl {
namespace {

using wire::Envelope;
using wire::MessageType;

Envelope SampleEnvelope() {
  Envelope e;
  e.type = MessageType::kUpdate;
  e.flags = 0;
  e.sender = "edge-0042";
  e.round = 0x0102030405060708ULL;
  for (int i = 0; i < 32; ++i) e.model_version[i] = static_cast<uint8_t>(i * 3);
  for (int i = 0; i < 16; ++i) e.nonce[i] = static_cast<uint8_t>(0xA0 + i);
  e.payload_length = 1234;
  for (int i = 0; i < 32; ++i) e.payload_digest[i] = static_cast<uint8_t>(255 - i);
  return e;
}

ModelState SampleModel() {
  ModelState m;
  m.architecture = "toy";
  m.tensors.push_back({"w", {2, 3}, {1, 2, 3, 4, 5, 6}, {}});
  m.tensors.push_back({"b", {2}, {-1, 0.5}, {}});
  return m;
}

TEST(EnvelopeTest, RoundTrip) {
  const Envelope e = SampleEnvelope();
  const std::string bytes = wire::EncodeEnvelope(e);
  ASSERT_EQ(bytes.size(), wire::kEnvelopeBytes);
  auto d = wire::DecodeEnvelope(bytes);
  ASSERT_FL_OK(d);
  EXPECT_EQ(d->type, e.type);
  EXPECT_EQ(d->sender, e.sender);
  EXPECT_EQ(d->round, e.round);
  EXPECT_EQ(d->model_version, e.model_version);
  EXPECT_EQ(d->nonce, e.nonce);
  EXPECT_EQ(d->payload_length, e.payload_length);
  EXPECT_EQ(d->payload_digest, e.payload_digest);
}

TEST(EnvelopeTest, RejectsWrongSizes) {
  const std::string bytes = wire::EncodeEnvelope(SampleEnvelope());
  for (size_t len : {size_t{0}, size_t{1}, wire::kEnvelopeBytes - 1}) {
    EXPECT_TRUE(wire::DecodeEnvelope(bytes.substr(0, len)).status().IsCorruption()) << len;
  }
  EXPECT_TRUE(wire::DecodeEnvelope(bytes + "x").status().IsCorruption());
}

TEST(EnvelopeTest, FieldByFieldCorruption) {
  const std::string good = wire::EncodeEnvelope(SampleEnvelope());
  struct Case {
    size_t offset;
    char value;
    const char* expect;
  };
  const Case cases[] = {
      {0, 'X', "bad magic"},
      {4, 9, "protocol version"},
      {6, 0, "unknown message type"},
      {6, 8, "unknown message type"},
      {8, 0, "sender id"},     // empty sender
      {9, 0x01, "sender id"},  // non-printable
      {9 + 9, 'x', "after its terminator"},
  };
  for (const auto& c : cases) {
    std::string bad = good;
    bad[c.offset] = c.value;
    auto r = wire::DecodeEnvelope(bad);
    ASSERT_FALSE(r.ok()) << "offset " << c.offset;
    EXPECT_NE(r.status().message().find(c.expect), std::string::npos)
        << "offset " << c.offset << ": " << r.status().ToString();
  }
}

TEST(MessageTest, SealOpenRoundTrip) {
  Envelope e = SampleEnvelope();
  SealedMessage m = SealMessage(e, "payload bytes");
  auto opened = OpenMessage(m.envelope, m.payload, 1 << 20);
  ASSERT_FL_OK(opened);
  EXPECT_EQ(opened->payload_length, 13u);
}

TEST(MessageTest, SignedEnvelopeEveryByteFlipIsCaught) {
  auto key = SigningKey::Generate();
  ASSERT_FL_OK(key);
  SealedMessage m = SealMessage(SampleEnvelope(), "payload", &*key);
  ASSERT_FL_OK(OpenMessage(m.envelope, m.payload, 1 << 20));
  ASSERT_FL_OK(VerifyMessageSignature(m.envelope, key->public_key()));
  // Every single-byte change to the envelope is refused by the parser, the
  // digest check or the signature.
  for (size_t i = 0; i < m.envelope.size(); ++i) {
    std::string bad = m.envelope;
    bad[i] ^= 0x04;
    const bool opened = OpenMessage(bad, m.payload, 1 << 20).ok();
    const bool verified = VerifyMessageSignature(bad, key->public_key()).ok();
    ASSERT_FALSE(opened && verified) << "flip at byte " << i << " accepted";
  }
  // Another key, or an unsigned message, does not verify.
  auto other = SigningKey::Generate();
  EXPECT_TRUE(VerifyMessageSignature(m.envelope, other->public_key()).IsUnauthenticated());
  SealedMessage plain = SealMessage(SampleEnvelope(), "payload");
  EXPECT_NE(VerifyMessageSignature(plain.envelope, key->public_key()).message().find("not signed"),
            std::string::npos);
}

TEST(MessageTest, EveryPayloadByteFlipIsCaught) {
  SealedMessage m = SealMessage(SampleEnvelope(), wire::Encode(SampleModel()));
  for (size_t i = 0; i < m.payload.size(); ++i) {
    std::string bad = m.payload;
    bad[i] ^= 0x01;
    auto r = OpenMessage(m.envelope, bad, 1 << 20);
    ASSERT_FALSE(r.ok()) << "flip at " << i;
    EXPECT_TRUE(r.status().IsUnauthenticated());
  }
}

TEST(MessageTest, LengthAndSizeBounds) {
  SealedMessage m = SealMessage(SampleEnvelope(), std::string(100, 'a'));
  EXPECT_TRUE(OpenMessage(m.envelope, m.payload, 99).status().IsInvalidArgument());
  EXPECT_TRUE(OpenMessage(m.envelope, m.payload.substr(1), 1000).status().IsCorruption());
  EXPECT_TRUE(OpenMessage(m.envelope, m.payload + "b", 1000).status().IsCorruption());
}

TEST(PayloadTest, AllMessagesRoundTrip) {
  wire::Hello h{600, "mnist_cnn", {"fp32"}, 2.0};
  wire::Hello h2;
  ASSERT_FL_OK(wire::Decode(wire::Encode(h), &h2));
  EXPECT_EQ(h2.num_examples, 600);
  EXPECT_EQ(h2.codecs, h.codecs);

  wire::Task t;
  t.config.epochs = 5;
  t.config.lr = 0.1;
  t.config.uplink_bits = 4;
  t.config.error_feedback = false;
  t.model = wire::Compact(SampleModel(), wire::ValueFormat::kFp32);
  wire::Task t2;
  ASSERT_FL_OK(wire::Decode(wire::Encode(t), &t2));
  EXPECT_EQ(t2.config.epochs, 5);
  EXPECT_EQ(t2.config.uplink_bits, 4);
  EXPECT_FALSE(t2.config.error_feedback);
  ModelState back;
  ASSERT_FL_OK(wire::Expand(t2.model, &back));
  EXPECT_EQ(back.tensors[1].values, SampleModel().tensors[1].values);
  // The codec goes as an optional field only when it is not the default "q"
  // (a TASK without it is byte for byte what older servers send), and is
  // critical: a peer that does not know the tag refuses the TASK.
  EXPECT_TRUE(t2.config.codec.empty());
  const size_t default_bytes = wire::Encode(t).size();
  t.config.codec = "q";
  EXPECT_EQ(wire::Encode(t).size(), default_bytes);
  t.config.codec = "sign";
  ASSERT_FL_OK(wire::Decode(wire::Encode(t), &t2));
  EXPECT_EQ(t2.config.codec, "sign");
  EXPECT_EQ(wire::Encode(t).size(), default_bytes + 2 + 2 + 8 + 4);
  t.config.codec = std::string(24, 'c');
  EXPECT_FALSE(wire::Decode(wire::Encode(t), &t2).ok());
  t.config.codec.clear();

  const std::vector<float> delta = {1.5f, -2.0f};
  wire::Update u{600, 0.25, 3.5, wire::kCodecQuant, QuantEncode(delta.data(), 2, QuantOptions{})};
  wire::Update u2;
  ASSERT_FL_OK(wire::Decode(wire::Encode(u), &u2));
  EXPECT_EQ(u2.data, u.data);
  EXPECT_EQ(u2.contributors, 1u);
  // A relay's partial aggregate says how many devices it averages; a device's
  // update carries no such field (byte for byte what older peers send).
  const size_t device_bytes = wire::Encode(u).size();
  u.contributors = 40;
  ASSERT_FL_OK(wire::Decode(wire::Encode(u), &u2));
  EXPECT_EQ(u2.contributors, 40u);
  EXPECT_GT(wire::Encode(u).size(), device_bytes);
  // A private partial also says how many of its devices' deltas were within
  // the clip; a count above its devices is malformed.
  u.within_clip = 25;
  ASSERT_FL_OK(wire::Decode(wire::Encode(u), &u2));
  EXPECT_EQ(u2.within_clip, 25);
  u.within_clip = 41;
  EXPECT_FALSE(wire::Decode(wire::Encode(u), &u2).ok());
  u.within_clip = -1;
  ASSERT_FL_OK(wire::Decode(wire::Encode(u), &u2));
  EXPECT_EQ(u2.within_clip, -1);
  u.contributors = 1;

  // A relay's HELLO says how many devices it serves; a TASK to a relay under
  // the root's privacy carries the sampling rate and the clip.
  EXPECT_EQ(h2.devices, -1);  // a device's HELLO carries no such field
  h.devices = 0;              // a relay serving none yet still says it is one
  ASSERT_FL_OK(wire::Decode(wire::Encode(h), &h2));
  EXPECT_EQ(h2.devices, 0);
  h.devices = 1234;
  ASSERT_FL_OK(wire::Decode(wire::Encode(h), &h2));
  EXPECT_EQ(h2.devices, 1234);
  t.config.dp_sampling_rate = 0.25;
  t.config.dp_clip = 0.75;
  ASSERT_FL_OK(wire::Decode(wire::Encode(t), &t2));
  EXPECT_EQ(t2.config.dp_sampling_rate, 0.25);
  EXPECT_EQ(t2.config.dp_clip, 0.75);
  t.config.dp_sampling_rate = 1.5;  // not a rate
  EXPECT_FALSE(wire::Decode(wire::Encode(t), &t2).ok());

  wire::Reply r{3, "stale_round", "round 2 is closed"};
  wire::Reply r2;
  ASSERT_FL_OK(wire::Decode(wire::Encode(r), &r2));
  EXPECT_EQ(r2.reason, "stale_round");

  wire::Done d{10, 0.99, "bye"};
  wire::Done d2;
  ASSERT_FL_OK(wire::Decode(wire::Encode(d), &d2));
  EXPECT_EQ(d2.rounds_completed, 10u);

  wire::Ready ready{6653545};
  wire::Ready ready2;
  ASSERT_FL_OK(wire::Decode(wire::Encode(ready), &ready2));
  EXPECT_EQ(ready2.update_bytes, 6653545u);
  EXPECT_EQ(wire::Encode(ready).size(), 8u);
}

TEST(PayloadTest, EveryTruncationAndPaddingRejected) {
  wire::Task t;
  t.model = wire::Compact(SampleModel(), wire::ValueFormat::kFp32);
  const std::string good = wire::Encode(t);
  for (size_t len = 0; len < good.size(); ++len) {
    wire::Task out;
    Status st = wire::Decode(good.substr(0, len), &out);
    ASSERT_FALSE(st.ok()) << "truncated to " << len;
    EXPECT_TRUE(st.IsCorruption());
  }
  // Bytes after the fields are an extension block or nothing.
  wire::Task out;
  Status st = wire::Decode(good + std::string(3, '\0'), &out);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("extension block of 0 records"), std::string::npos) << st.ToString();
}

// An extension block (messages.h, "Optional fields"): u16 count, then per
// record u16 tag | u64 length | bytes, little-endian.
std::string ExtensionBlock(const std::vector<std::pair<uint16_t, std::string>>& records) {
  std::string b;
  auto put = [&b](uint64_t v, int bytes) {
    for (int i = 0; i < bytes; ++i) b.push_back(static_cast<char>(v >> (8 * i)));
  };
  put(records.size(), 2);
  for (const auto& [tag, value] : records) {
    put(tag, 2);
    put(value.size(), 8);
    b += value;
  }
  return b;
}

TEST(PayloadExtensionTest, WithoutOptionalFieldsAPayloadIsWhatOlderPeersSend) {
  wire::Task t;
  t.model = wire::Compact(SampleModel(), wire::ValueFormat::kFp32);
  const std::string plain = wire::Encode(t);
  t.ask_before_upload = true;
  const std::string asking = wire::Encode(t);
  // The same bytes plus one record: count 1, tag 1, empty value.
  EXPECT_EQ(asking, plain + ExtensionBlock({{wire::kTaskAskBeforeUpload, ""}}));
  wire::Task back;
  ASSERT_FL_OK(wire::Decode(asking, &back));
  EXPECT_TRUE(back.ask_before_upload);
  ASSERT_FL_OK(wire::Decode(plain, &back));
  EXPECT_FALSE(back.ask_before_upload);
}

// FedProx's mu travels as TASK extension 2, an f64 little-endian.
TEST(PayloadExtensionTest, ProximalMuIsAnOptionalTaskField) {
  wire::Task t;
  t.model = wire::Compact(SampleModel(), wire::ValueFormat::kFp32);
  const std::string plain = wire::Encode(t);
  t.config.proximal_mu = 0.01;
  const std::string with_mu = wire::Encode(t);
  uint64_t bits;
  std::memcpy(&bits, &t.config.proximal_mu, 8);
  std::string value;
  for (int i = 0; i < 8; ++i) value.push_back(static_cast<char>(bits >> (8 * i)));
  EXPECT_EQ(with_mu, plain + ExtensionBlock({{wire::kTaskProximalMu, value}}));
  wire::Task back;
  ASSERT_FL_OK(wire::Decode(with_mu, &back));
  EXPECT_EQ(back.config.proximal_mu, 0.01);
  ASSERT_FL_OK(wire::Decode(plain, &back));
  EXPECT_EQ(back.config.proximal_mu, 0.0);
  // Any other length is refused; a value out of range is refused by the
  // client's check of the configuration.
  EXPECT_FALSE(
      wire::Decode(plain + ExtensionBlock({{wire::kTaskProximalMu, "1234567"}}), &back).ok());
  t.config.proximal_mu = -1;
  ASSERT_FL_OK(wire::Decode(wire::Encode(t), &back));
  EXPECT_FALSE(wire::CheckTrainConfig(back.config).ok());
  t.config.proximal_mu = NAN;
  ASSERT_FL_OK(wire::Decode(wire::Encode(t), &back));
  EXPECT_FALSE(wire::CheckTrainConfig(back.config).ok());
}

// The federation's input normalisation travels as TASK extension 3: per
// channel an f32 mean and an f32 std, little-endian. Ragged values are refused
// by the decoder, a std <= 0 or a non-finite value by the configuration check.
TEST(PayloadExtensionTest, NormalisationIsAnOptionalTaskField) {
  wire::Task t;
  t.model = wire::Compact(SampleModel(), wire::ValueFormat::kFp32);
  const std::string plain = wire::Encode(t);
  t.config.normalize_mean = {0.5f, 0.25f};
  t.config.normalize_std = {2.0f, 1.0f};
  const std::string with = wire::Encode(t);
  std::string value;
  for (float f : {0.5f, 2.0f, 0.25f, 1.0f}) {
    uint32_t bits;
    std::memcpy(&bits, &f, 4);
    for (int i = 0; i < 4; ++i) value.push_back(static_cast<char>(bits >> (8 * i)));
  }
  EXPECT_EQ(with, plain + ExtensionBlock({{wire::kTaskNormalization, value}}));
  wire::Task back;
  ASSERT_FL_OK(wire::Decode(with, &back));
  EXPECT_EQ(back.config.normalize_mean, t.config.normalize_mean);
  EXPECT_EQ(back.config.normalize_std, t.config.normalize_std);
  EXPECT_FL_OK(wire::CheckTrainConfig(back.config));
  ASSERT_FL_OK(wire::Decode(plain, &back));
  EXPECT_TRUE(back.config.normalize_mean.empty());
  EXPECT_FALSE(
      wire::Decode(plain + ExtensionBlock({{wire::kTaskNormalization, value.substr(1)}}), &back)
          .ok());
  EXPECT_FALSE(wire::Decode(plain + ExtensionBlock({{wire::kTaskNormalization, ""}}), &back).ok());
  t.config.normalize_std = {2.0f, 0.0f};
  ASSERT_FL_OK(wire::Decode(wire::Encode(t), &back));
  EXPECT_NE(wire::CheckTrainConfig(back.config).ToString().find("normalization pair 1"),
            std::string::npos);
  t.config.normalize_std = {2.0f, NAN};
  ASSERT_FL_OK(wire::Decode(wire::Encode(t), &back));
  EXPECT_FALSE(wire::CheckTrainConfig(back.config).ok());
}

// The trainable set travels as TASK extension 4: the tensor count (u32) and a
// bitmap. A bitmap of the wrong length, with padding bits or naming no tensor
// is refused.
TEST(PayloadExtensionTest, TrainableTensorsAreAnOptionalTaskField) {
  wire::Task t;
  t.model = wire::Compact(SampleModel(), wire::ValueFormat::kFp32);
  const std::string plain = wire::Encode(t);
  t.config.trainable = {0, 1, 1};
  const std::string with = wire::Encode(t);
  EXPECT_EQ(with,
            plain + ExtensionBlock({{wire::kTaskTrainable, std::string("\x03\0\0\0\x06", 5)}}));
  wire::Task back;
  ASSERT_FL_OK(wire::Decode(with, &back));
  EXPECT_EQ(back.config.trainable, t.config.trainable);
  for (const std::string& bad :
       {std::string("\x03\0\0\0", 4), std::string("\x03\0\0\0\x0e", 5),
        std::string("\x03\0\0\0\0", 5), std::string("\0\0\0\0", 4), std::string("\x03\0", 2)}) {
    EXPECT_FALSE(wire::Decode(plain + ExtensionBlock({{wire::kTaskTrainable, bad}}), &back).ok());
  }
}

// The federation's class names travel as TASK extension 6: a count (u32),
// then each name as a u16 length and its bytes. Truncated, empty, too long or
// trailing bytes are refused at decoding, a name listed twice by
// CheckTrainConfig.
TEST(PayloadExtensionTest, ClassNamesAreAnOptionalTaskField) {
  wire::Task t, back;
  t.model = wire::Compact(SampleModel(), wire::ValueFormat::kFp32);
  const std::string plain = wire::Encode(t);
  t.config.class_names = {"cat", "dog"};
  const std::string with = wire::Encode(t);
  EXPECT_EQ(with, plain + ExtensionBlock({{wire::kTaskClassNames,
                                           std::string("\x02\0\0\0\x03\0cat\x03\0dog", 14)}}));
  ASSERT_FL_OK(wire::Decode(with, &back));
  EXPECT_EQ(back.config.class_names, t.config.class_names);
  EXPECT_FL_OK(wire::CheckTrainConfig(back.config));
  // Critical: a device that cannot renumber its classes refuses the TASK.
  EXPECT_NE(wire::kTaskClassNames & wire::kCriticalExtension, 0);
  for (const std::string& bad :
       {std::string("\x02\0\0\0\x03\0cat", 9), std::string("\0\0\0\0", 4),
        std::string("\x01\0\0\0\0\0", 6), std::string("\x01\0\0\0\x03\0catX", 10),
        std::string("\x01\0\0\0\x00\x01", 6), std::string("\x01\0", 2),
        std::string("\x01\x01\0\0\x01\0a", 7)}) {
    EXPECT_FALSE(wire::Decode(plain + ExtensionBlock({{wire::kTaskClassNames, bad}}), &back).ok())
        << Printable(bad);
  }
  t.config.class_names = {"cat", "dog", "cat"};
  ASSERT_FL_OK(wire::Decode(wire::Encode(t), &back));
  EXPECT_NE(wire::CheckTrainConfig(back.config).ToString().find("'cat' appears twice"),
            std::string::npos);
}

// The model's file travels as TASK extension 5 (signature, then file) to a
// device whose HELLO said it takes it (HELLO extension 1).
TEST(PayloadExtensionTest, ModelCodeAndTheAskForItAreOptionalFields) {
  wire::Hello h{600, "", {wire::kCodecQuant}, 2.0}, h2;
  const std::string plain = wire::Encode(h);
  h.takes_model_code = true;
  EXPECT_EQ(wire::Encode(h), plain + ExtensionBlock({{wire::kHelloTakesModelCode, ""}}));
  ASSERT_FL_OK(wire::Decode(wire::Encode(h), &h2));
  EXPECT_TRUE(h2.takes_model_code);
  EXPECT_FALSE(wire::Decode(plain + ExtensionBlock({{wire::kHelloTakesModelCode, "x"}}), &h2).ok());

  wire::Task t, back;
  t.model = wire::Compact(SampleModel(), wire::ValueFormat::kFp32);
  const std::string task_plain = wire::Encode(t);
  t.model_code = "the file";
  t.model_code_signature.fill(7);
  ASSERT_FL_OK(wire::Decode(wire::Encode(t), &back));
  EXPECT_EQ(back.model_code, "the file");
  EXPECT_EQ(back.model_code_signature, t.model_code_signature);
  // A signature without a file is refused.
  EXPECT_FALSE(
      wire::Decode(task_plain + ExtensionBlock({{wire::kTaskModelCode, std::string(64, 'x')}}),
                   &back)
          .ok());
}

// --trainable patterns against tensor names: shell patterns, comma-separated;
// one that matches nothing is named with the tensors there are.
TEST(TrainableTest, PatternsSelectTensors) {
  ModelState m;
  for (const char* name :
       {"conv1.weight", "conv1.bias", "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"}) {
    m.tensors.push_back({name, {1}, {0.0f}, {}});
  }
  auto w = MatchTrainable(m, "fc2.*");
  ASSERT_FL_OK(w);
  EXPECT_EQ(*w, (std::vector<uint8_t>{0, 0, 0, 0, 1, 1}));
  w = MatchTrainable(m, "fc*.weight,conv1.bias");
  ASSERT_FL_OK(w);
  EXPECT_EQ(*w, (std::vector<uint8_t>{0, 1, 1, 0, 1, 0}));
  const ModelState part = SelectTensors(m, *w);
  ASSERT_EQ(part.tensors.size(), 3u);
  EXPECT_EQ(part.tensors[0].name, "conv1.bias");
  auto bad = MatchTrainable(m, "fc2.*,head");
  EXPECT_NE(bad.status().ToString().find("'head': matches no tensor of the model (conv1.weight, "),
            std::string::npos)
      << bad.status().ToString();
  EXPECT_FALSE(MatchTrainable(m, ",").ok());
}

// A newer peer's optional field reaches an older receiver: skipped, the rest
// of the message decodes as before. Every payload type.
TEST(PayloadExtensionTest, UnknownOptionalFieldsAreSkippedInEveryPayload) {
  const std::string ext = ExtensionBlock({{0x0042, "a field from the future"}, {0x7fff, ""}});
  wire::Hello h{600, "mnist_cnn", {wire::kCodecQuant}, 2.0}, h2;
  ASSERT_FL_OK(wire::Decode(wire::Encode(h) + ext, &h2));
  EXPECT_EQ(h2.num_examples, 600);
  EXPECT_EQ(h2.codecs, h.codecs);
  wire::Task t, t2;
  t.model = wire::Compact(SampleModel(), wire::ValueFormat::kFp32);
  ASSERT_FL_OK(wire::Decode(wire::Encode(t) + ext, &t2));
  EXPECT_FALSE(t2.ask_before_upload);
  EXPECT_EQ(t2.model.tensors.size(), t.model.tensors.size());
  wire::Update u{600, 0.25, 3.5, wire::kCodecQuant, "delta"}, u2;
  ASSERT_FL_OK(wire::Decode(wire::Encode(u) + ext, &u2));
  EXPECT_EQ(u2.data, "delta");
  wire::Ready r{12345}, r2;
  ASSERT_FL_OK(wire::Decode(wire::Encode(r) + ext, &r2));
  EXPECT_EQ(r2.update_bytes, 12345u);
  wire::Reply y{3, "accepted", ""}, y2;
  ASSERT_FL_OK(wire::Decode(wire::Encode(y) + ext, &y2));
  EXPECT_EQ(y2.reason, "accepted");
  wire::Done d{5, 0.9, "bye"}, d2;
  ASSERT_FL_OK(wire::Decode(wire::Encode(d) + ext, &d2));
  EXPECT_EQ(d2.rounds_completed, 5u);
}

TEST(PayloadExtensionTest, MalformedBlocksAndUnknownCriticalFieldsAreRefused) {
  const std::string base = wire::Encode(wire::Hello{600, "", {wire::kCodecQuant}, 2.0});
  struct Case {
    std::string tail;
    const char* expect;
  };
  const std::string many = [] {
    std::vector<std::pair<uint16_t, std::string>> r;
    for (uint16_t i = 0; i <= wire::kMaxExtensions; ++i) r.push_back({i, ""});
    return ExtensionBlock(r);
  }();
  const Case cases[] = {
      {ExtensionBlock({{0x8042, ""}}), "unknown critical extension 32834"},
      {ExtensionBlock({{7, "x"}, {7, "y"}}), "appears twice"},
      {std::string("\0\0", 2), "extension block of 0 records"},
      {many, "extension block of 33 records"},
      {ExtensionBlock({{7, "value"}}).substr(0, 14), "bytes left"},
      {ExtensionBlock({{7, "x"}}) + "z", "1 trailing bytes"},
  };
  for (const auto& c : cases) {
    wire::Hello out;
    Status st = wire::Decode(base + c.tail, &out);
    ASSERT_FALSE(st.ok()) << c.expect;
    EXPECT_TRUE(st.IsCorruption());
    EXPECT_NE(st.message().find(c.expect), std::string::npos) << st.ToString();
  }
  // A known field with a value it must not have.
  wire::Task t;
  t.model = wire::Compact(SampleModel(), wire::ValueFormat::kFp32);
  wire::Task out;
  EXPECT_FALSE(
      wire::Decode(wire::Encode(t) + ExtensionBlock({{wire::kTaskAskBeforeUpload, "1"}}), &out)
          .ok());
}

TEST(PayloadTest, HostileLengthDoesNotAllocate) {
  // A HELLO whose codec-list length claims 2^62 entries.
  wire::Hello h{600, "mnist_cnn", {}, 2.0};
  std::string bytes = wire::Encode(h);
  // Layout: num_examples (8) | architecture len (8) + 9 bytes | codecs len (8) | ...
  const size_t codecs_len_at = 8 + 8 + 9;
  uint64_t huge = uint64_t{1} << 62;
  std::memcpy(&bytes[codecs_len_at], &huge, 8);
  wire::Hello out;
  Status st = wire::Decode(bytes, &out);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("exceeds"), std::string::npos) << st.ToString();
}

// A count that fits in the bytes left but not in the bytes its elements need
// is refused before the vector is sized: a decoder allocates at most 4 times
// what it received (a std::string is 32 bytes and takes at least 8 on the
// wire; a tensor 104-120 and at least 32). Before, a HELLO of N bytes could
// make cereal build N empty strings: 32 N bytes.
TEST(PayloadTest, CountsAreBoundedByTheBytesTheirElementsNeed) {
  // A HELLO whose codec list claims as many entries as there are bytes left.
  std::string bytes(1 << 20, '\0');
  const uint64_t examples = 600, arch_len = 0, count = bytes.size() - 24;
  std::memcpy(&bytes[0], &examples, 8);
  std::memcpy(&bytes[8], &arch_len, 8);
  std::memcpy(&bytes[16], &count, 8);
  wire::Hello h;
  Status st = wire::Decode(bytes, &h);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("elements of at least 8 bytes"), std::string::npos) << st.ToString();
  // The same for arithmetic vectors (a TensorState's shape of int64).
  ModelState m = SampleModel();
  std::string enc = wire::Encode(m);
  // architecture len (8) + name, tensor count (8), first tensor's name len (8) + name
  const size_t shape_len_at = 8 + m.architecture.size() + 8 + 8 + m.tensors[0].name.size();
  const uint64_t too_many = enc.size() / 2;  // fits the bytes, not 8 bytes each
  std::memcpy(&enc[shape_len_at], &too_many, 8);
  ModelState out;
  st = wire::Decode(enc, &out);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("elements of at least 8 bytes"), std::string::npos) << st.ToString();
}

ModelState SparseModel() {
  ModelState m = SampleModel();
  m.tensors[0].mask = {1, 0, 1, 1, 0, 1};
  m.tensors[0].values[1] = 0;
  m.tensors[0].values[4] = 0;
  return m;
}

TEST(CompactModelTest, SparseRoundTripCarriesOnlyKeptValues) {
  const ModelState m = SparseModel();
  ASSERT_FL_OK(CheckModelState(m));
  wire::CompactModel c = wire::Compact(m, wire::ValueFormat::kFp32);
  EXPECT_EQ(c.tensors[0].mask_bits.size(), 1u);
  EXPECT_EQ(c.tensors[0].values.size(), 4u * 4);  // 4 kept values
  EXPECT_TRUE(c.tensors[1].mask_bits.empty());
  ModelState back;
  ASSERT_FL_OK(wire::Expand(c, &back));
  EXPECT_EQ(back.tensors[0].values, m.tensors[0].values);
  EXPECT_EQ(back.tensors[0].mask, m.tensors[0].mask);
  EXPECT_TRUE(back.tensors[1].mask.empty());
  // fp16 halves the value bytes and rounds to within 2^-11 relative.
  wire::CompactModel h = wire::Compact(m, wire::ValueFormat::kFp16);
  EXPECT_EQ(h.tensors[0].values.size(), 4u * 2);
  ASSERT_FL_OK(wire::Expand(h, &back));
  for (size_t k = 0; k < 6; ++k) {
    EXPECT_NEAR(back.tensors[0].values[k], m.tensors[0].values[k],
                std::fabs(m.tensors[0].values[k]) / 2048);
  }
}

TEST(CompactModelTest, RejectsInconsistentTensors) {
  const wire::CompactModel good = wire::Compact(SparseModel(), wire::ValueFormat::kFp32);
  ModelState out;
  wire::CompactModel c = good;
  c.tensors[0].mask_bits[0] |= 0x02;  // keeps 5 values, carries 4
  EXPECT_NE(wire::Expand(c, &out).message().find("value bytes"), std::string::npos);
  c = good;
  c.tensors[0].mask_bits[0] |= static_cast<char>(0x80);  // padding bit beyond 6 values
  EXPECT_NE(wire::Expand(c, &out).message().find("padding"), std::string::npos);
  c = good;
  c.tensors[0].mask_bits += "x";
  EXPECT_NE(wire::Expand(c, &out).message().find("mask is 2 bytes"), std::string::npos);
  c = good;
  c.tensors[1].values.pop_back();
  EXPECT_TRUE(wire::Expand(c, &out).IsCorruption());
  c = good;
  c.tensors[0].shape = {-1, 6};
  EXPECT_TRUE(wire::Expand(c, &out).IsCorruption());
  c = good;
  c.format = 7;
  EXPECT_TRUE(wire::Expand(c, &out).IsCorruption());
}

TEST(CompactModelTest, CheckModelStateEnforcesTheMask) {
  ModelState m = SparseModel();
  m.tensors[0].values[1] = 0.5f;  // nonzero at a pruned position
  EXPECT_NE(CheckModelState(m).message().find("pruned position 1"), std::string::npos);
  m = SparseModel();
  m.tensors[0].mask.pop_back();
  EXPECT_TRUE(CheckModelState(m).IsCorruption());
}

TEST(ModelStateTest, KeptGatherDifferenceAndAdd) {
  ModelState m = SparseModel();
  EXPECT_EQ(m.KeptCount(), 6);  // 4 + 2
  EXPECT_EQ(GatherKept(m), (std::vector<float>{1, 3, 4, 6, -1, 0.5f}));
  ModelState after = m;
  for (auto& t : after.tensors) {
    for (auto& v : t.values) v += 1;  // also touches pruned positions
  }
  auto d = KeptDifference(after, m);
  ASSERT_FL_OK(d);
  EXPECT_EQ(*d, std::vector<float>(6, 1.0f));
  ASSERT_FL_OK(AddScaledKept(&m, *d, 2.0f));
  EXPECT_EQ(m.tensors[0].values, (std::vector<float>{3, 0, 5, 6, 0, 8}));
  EXPECT_TRUE(AddScaledKept(&m, std::vector<float>(5, 0.0f)).IsInvalidArgument());
}

TEST(ModelStateTest, PruneByMagnitude) {
  ModelState m;
  m.architecture = "toy";
  std::vector<float> w(100), w2(100);
  for (int i = 0; i < 100; ++i) {
    w[i] = static_cast<float>(i + 1);          // magnitudes 1..100
    w2[i] = static_cast<float>(i + 1) / 1000;  // all tiny
  }
  m.tensors.push_back({"a.weight", {10, 10}, w, {}});
  m.tensors.push_back({"b.weight", {10, 10}, w2, {}});
  m.tensors.push_back({"b.bias", {10}, std::vector<float>(10, 1e-6f), {}});
  ModelState layer = m;
  ASSERT_FL_OK(PruneByMagnitude(&layer, 0.9, /*global=*/false));
  EXPECT_EQ(layer.tensors[0].KeptCount(), 10);
  EXPECT_EQ(layer.tensors[1].KeptCount(), 10);
  EXPECT_TRUE(layer.tensors[2].mask.empty());  // biases stay dense
  EXPECT_EQ(layer.tensors[0].values[89], 0.0f);
  EXPECT_EQ(layer.tensors[0].values[90], 91.0f);
  ASSERT_FL_OK(CheckModelState(layer));
  ModelState global = m;
  ASSERT_FL_OK(PruneByMagnitude(&global, 0.5, /*global=*/true));
  EXPECT_EQ(global.tensors[0].KeptCount(), 100);  // the tiny layer goes first
  EXPECT_EQ(global.tensors[1].KeptCount(), 0);
  EXPECT_NEAR(global.Sparsity(), 100.0 / 210, 1e-9);
  EXPECT_TRUE(PruneByMagnitude(&global, 1.0, true).IsInvalidArgument());
}

TEST(ModelVersionTest, ContentAddressed) {
  ModelState a = SampleModel();
  ModelState b = SampleModel();
  EXPECT_EQ(ModelVersion(a), ModelVersion(b));
  b.tensors[0].values[3] += 1e-6f;
  EXPECT_NE(ModelVersion(a), ModelVersion(b));
  EXPECT_EQ(ShortVersion(ModelVersion(a)).size(), 12u);
}

}  // namespace
}  // namespace fl
