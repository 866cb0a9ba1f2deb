// Wire protocol: envelope and payload round-trips, and rejection of every kind
// of malformed, truncated, padded or oversized input.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "common/codec.h"
#include "common/wire/envelope.h"
#include "common/wire/serialize.h"
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
  e.payload_length = 1234;
  for (int i = 0; i < 32; ++i) e.payload_digest[i] = static_cast<uint8_t>(255 - i);
  return e;
}

ModelState SampleModel() {
  ModelState m;
  m.architecture = "toy";
  m.tensors.push_back({"w", {2, 3}, {1, 2, 3, 4, 5, 6}});
  m.tensors.push_back({"b", {2}, {-1, 0.5}});
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
      {6, 7, "unknown message type"},
      {8, 0, "sender id"},        // empty sender
      {9, 0x01, "sender id"},     // non-printable
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
  t.model = SampleModel();
  wire::Task t2;
  ASSERT_FL_OK(wire::Decode(wire::Encode(t), &t2));
  EXPECT_EQ(t2.config.epochs, 5);
  EXPECT_EQ(t2.model.tensors[1].values, t.model.tensors[1].values);

  wire::Update u{600, 0.25, 3.5, "fp32", EncodeDenseFp32({1.5f, -2.0f})};
  wire::Update u2;
  ASSERT_FL_OK(wire::Decode(wire::Encode(u), &u2));
  EXPECT_EQ(u2.data, u.data);

  wire::Reply r{3, "stale_round", "round 2 is closed"};
  wire::Reply r2;
  ASSERT_FL_OK(wire::Decode(wire::Encode(r), &r2));
  EXPECT_EQ(r2.reason, "stale_round");

  wire::Done d{10, 0.99, "bye"};
  wire::Done d2;
  ASSERT_FL_OK(wire::Decode(wire::Encode(d), &d2));
  EXPECT_EQ(d2.rounds_completed, 10u);
}

TEST(PayloadTest, EveryTruncationAndPaddingRejected) {
  wire::Task t;
  t.model = SampleModel();
  const std::string good = wire::Encode(t);
  for (size_t len = 0; len < good.size(); ++len) {
    wire::Task out;
    Status st = wire::Decode(good.substr(0, len), &out);
    ASSERT_FALSE(st.ok()) << "truncated to " << len;
    EXPECT_TRUE(st.IsCorruption());
  }
  wire::Task out;
  Status st = wire::Decode(good + std::string(3, '\0'), &out);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("3 trailing bytes"), std::string::npos) << st.ToString();
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

TEST(PayloadTest, TaskModelMustBeConsistent) {
  wire::Task t;
  t.model = SampleModel();
  t.model.tensors[0].shape = {2, 4};  // implies 8 values, holds 6
  wire::Task out;
  Status st = wire::Decode(wire::Encode(t), &out);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("shape implies 8"), std::string::npos) << st.ToString();
}

TEST(CodecTest, DenseFp32SizeAndFiniteness) {
  const std::vector<float> v = {1, -2, 3.5f};
  const std::string enc = EncodeDenseFp32(v);
  EXPECT_EQ(enc.size(), 12u);
  std::vector<float> out;
  ASSERT_FL_OK(DecodeDenseFp32(enc, 3, &out));
  EXPECT_EQ(out, v);
  EXPECT_TRUE(DecodeDenseFp32(enc, 4, &out).IsCorruption());
  EXPECT_TRUE(DecodeDenseFp32(enc.substr(1), 3, &out).IsCorruption());
  EXPECT_TRUE(DecodeDenseFp32(enc + "pad!", 3, &out).IsCorruption());
  std::vector<float> nan = {1, std::nanf(""), 3};
  Status st = DecodeDenseFp32(EncodeDenseFp32(nan), 3, &out);
  EXPECT_NE(st.message().find("value 1 is not finite"), std::string::npos) << st.ToString();
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
