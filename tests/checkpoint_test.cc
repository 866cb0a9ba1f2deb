#include "server/checkpoint.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include "crypto/sha256.h"
#include "tests/test_util.h"

namespace fl {
namespace {

Checkpoint Sample() {
  Checkpoint c;
  c.round = 7;
  c.seed = 42;
  c.model.architecture = "toy";
  c.model.tensors.push_back({"w", {3}, {1, 2, 3}, {1, 1, 1}});
  c.reference_norm = 12.5;
  c.strategy = "fedadam";
  c.strategy_state = std::string("state\0bytes", 11);
  c.pruning = "from 0 to 0.9 over rounds 1..10, global";
  c.settings = "--lr=0.1\n--lr-decay=0.99\n";
  return c;
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

TEST(CheckpointTest, RoundTrip) {
  test::TempDir dir;
  const std::string path = dir.path() + "/sub/dir/checkpoint.fl";
  ASSERT_FL_OK(CreateDirectories(dir.path() + "/sub/dir"));
  ASSERT_FL_OK(WriteCheckpoint(path, Sample()));
  auto c = ReadCheckpoint(path);
  ASSERT_FL_OK(c);
  EXPECT_EQ(c->round, 7u);
  EXPECT_EQ(c->seed, 42u);
  EXPECT_EQ(c->model.tensors[0].values, (std::vector<float>{1, 2, 3}));
  EXPECT_EQ(c->reference_norm, 12.5);
  EXPECT_EQ(c->strategy, "fedadam");
  EXPECT_EQ(c->strategy_state, std::string("state\0bytes", 11));
  EXPECT_TRUE(c->has_pruning);
  EXPECT_EQ(c->pruning, "from 0 to 0.9 over rounds 1..10, global");
  EXPECT_EQ(c->settings, "--lr=0.1\n--lr-decay=0.99\n");
  // No temp file left behind.
  EXPECT_TRUE(ReadAll(path + ".tmp").empty());
}

// Older formats still resume: format 5 (before the run settings), format 4
// (before the pruning schedule; neither is checked) and format 3 (before
// strategies: FedAvg).
TEST(CheckpointTest, FormatsThreeToFiveAreStillRead) {
  test::TempDir dir;
  const std::string path = dir.path() + "/c.fl";
  Checkpoint c = Sample();
  c.strategy = "fedavg";
  c.strategy_state.clear();
  c.pruning.clear();
  c.settings.clear();
  ASSERT_FL_OK(WriteCheckpoint(path, c));
  const std::string v6 = ReadAll(path);
  auto reseal = [](std::string bytes, char format) {
    bytes[4] = format;
    bytes.resize(bytes.size() - kSha256DigestBytes);
    const Sha256Digest d = Sha256(bytes);
    return bytes.append(reinterpret_cast<const char*>(d.data()), d.size());
  };
  // Format 6 = format 5 + (u32 0) after the pruning text; format 5 = format
  // 4 + (u32 0) after the strategy state; format 4 = format 3 + (u32 6,
  // "fedavg", u64 0) after the (empty) pending rows.
  const size_t at = 4 + 4 + 8 + 8 + 8 + 4;
  ASSERT_EQ(v6.substr(at + 4, 6), "fedavg");
  const std::string v5 = reseal(v6.substr(0, at + 22) + v6.substr(at + 22 + 4), 5);
  const std::string v4 = reseal(v5.substr(0, at + 18) + v5.substr(at + 18 + 4), 4);
  const std::string v3 = reseal(v4.substr(0, at) + v4.substr(at + 4 + 6 + 8), 3);
  for (const auto& [format, bytes] : {std::pair{5, v5}, std::pair{4, v4}, std::pair{3, v3}}) {
    SCOPED_TRACE("format " + std::to_string(format));
    test::WriteFile(path, bytes);
    auto r = ReadCheckpoint(path);
    ASSERT_FL_OK(r);
    EXPECT_EQ(r->strategy, "fedavg");
    EXPECT_TRUE(r->strategy_state.empty());
    EXPECT_EQ(r->has_pruning, format == 5);
    EXPECT_TRUE(r->settings.empty());
    EXPECT_EQ(r->model.tensors[0].values, (std::vector<float>{1, 2, 3}));
  }
}

// Each setting that differs is named once, with both values; the order of
// the lines does not matter.
TEST(CheckpointTest, SettingsDifferencesNameEachChange) {
  EXPECT_TRUE(SettingsDifferences("--lr=0.1\n--mu=0.01\n", "--mu=0.01\n--lr=0.1\n").empty());
  EXPECT_EQ(
      SettingsDifferences("--lr=0.1\n--mu=0.01\n--clip=0\n", "--lr=0.2\n--clip=0\n--tau=0.001\n"),
      (std::vector<std::string>{"--lr: 0.1 in the checkpoint, 0.2 in this run",
                                "--tau: not in the checkpoint, 0.001 in this run",
                                "--mu: 0.01 in the checkpoint, not in this run"}));
  // A setting newer than the checkpoint: compared with its default then.
  EXPECT_TRUE(SettingsDifferences("--lr=0.1\n", "--lr=0.1\n--over-selection=1\n").empty());
  EXPECT_EQ(SettingsDifferences("--lr=0.1\n", "--lr=0.1\n--over-selection=1.3\n"),
            (std::vector<std::string>{
                "--over-selection: 1 (the default) in the checkpoint, 1.3 in this run"}));
}

TEST(CheckpointTest, MissingIsNotFound) {
  EXPECT_TRUE(ReadCheckpoint("/nonexistent/checkpoint.fl").status().IsNotFound());
}

TEST(CheckpointTest, EveryTruncationAndFlipRejected) {
  test::TempDir dir;
  const std::string path = dir.path() + "/c.fl";
  ASSERT_FL_OK(WriteCheckpoint(path, Sample()));
  const std::string good = ReadAll(path);
  for (size_t len = 0; len < good.size(); ++len) {
    test::WriteFile(path, good.substr(0, len));
    auto r = ReadCheckpoint(path);
    ASSERT_FALSE(r.ok()) << "truncated to " << len;
    EXPECT_TRUE(r.status().IsCorruption());
  }
  for (size_t i = 0; i < good.size(); ++i) {
    std::string bad = good;
    bad[i] ^= 0x40;
    test::WriteFile(path, bad);
    auto r = ReadCheckpoint(path);
    ASSERT_FALSE(r.ok()) << "flip at " << i;
    EXPECT_NE(r.status().message().find(path), std::string::npos);
  }
}

// A checkpoint holding a value that is not finite is refused even when its
// checksum matches (a faulty build or a poisoned round wrote it).
TEST(CheckpointTest, NonFiniteValuesAreRefused) {
  test::TempDir dir;
  const std::string path = dir.path() + "/c.fl";
  Checkpoint c = Sample();
  c.model.tensors[0].values[1] = INFINITY;
  ASSERT_FL_OK(WriteCheckpoint(path, c));
  auto r = ReadCheckpoint(path);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(r.status().IsCorruption());
  EXPECT_NE(r.status().message().find("'w'"), std::string::npos) << r.status().ToString();
}

// Three generations are kept; the newest usable one is read.
TEST(CheckpointTest, OlderGenerationsAreKeptAndUsedWhenTheNewestIsNot) {
  test::TempDir dir;
  const std::string path = dir.path() + "/checkpoint.fl";
  for (uint64_t r = 1; r <= 5; ++r) {
    Checkpoint c = Sample();
    c.round = r;
    ASSERT_FL_OK(WriteCheckpoint(path, c));
  }
  EXPECT_EQ(ReadCheckpoint(path)->round, 5u);
  EXPECT_EQ(ReadCheckpoint(path + ".1")->round, 4u);
  EXPECT_EQ(ReadCheckpoint(path + ".2")->round, 3u);
  EXPECT_TRUE(ReadCheckpoint(path + ".3").status().IsNotFound());
  std::string used;
  std::vector<std::string> refused;
  EXPECT_EQ(ReadNewestCheckpoint(path, &used, &refused)->round, 5u);
  EXPECT_EQ(used, path);
  EXPECT_TRUE(refused.empty());
  // The newest altered: the one before it.
  std::string bytes = ReadAll(path);
  bytes[bytes.size() / 2] ^= 1;
  test::WriteFile(path, bytes);
  auto c = ReadNewestCheckpoint(path, &used, &refused);
  ASSERT_FL_OK(c);
  EXPECT_EQ(c->round, 4u);
  EXPECT_EQ(used, path + ".1");
  ASSERT_EQ(refused.size(), 1u);
  EXPECT_NE(refused[0].find("checksum"), std::string::npos) << refused[0];
  // The newest missing (a crash between the renames): the one before it.
  ASSERT_EQ(std::remove(path.c_str()), 0);
  EXPECT_EQ(ReadNewestCheckpoint(path)->round, 4u);
  // None usable: the newest one's error; none at all: NotFound.
  test::WriteFile(path + ".1", "x");
  test::WriteFile(path + ".2", "y");
  EXPECT_TRUE(ReadNewestCheckpoint(path).status().IsCorruption());
  EXPECT_TRUE(ReadNewestCheckpoint(dir.path() + "/none.fl").status().IsNotFound());
}

// Signed checkpoints: read back with the signer's key; refused (Unauthenticated)
// when unsigned, signed by another key, or re-sealed after a change (a valid
// checksum over a changed model, with the old signature).
TEST(CheckpointTest, SignatureIsCheckedAgainstTheTrustedKey) {
  test::TempDir dir;
  const std::string path = dir.path() + "/c.fl";
  auto key = SigningKey::Generate();
  auto other = SigningKey::Generate();
  ASSERT_FL_OK(key);
  ASSERT_FL_OK(other);
  ASSERT_FL_OK(WriteCheckpoint(path, Sample(), &*key));
  ASSERT_FL_OK(ReadCheckpoint(path, &key->public_key()));
  ASSERT_FL_OK(ReadCheckpoint(path));  // integrity only, without a key
  EXPECT_TRUE(ReadCheckpoint(path, &other->public_key()).status().IsUnauthenticated());
  // A changed model with a recomputed checksum: the signature no longer holds.
  std::string bytes = ReadAll(path);
  const size_t at = bytes.find(std::string("\x00\x00\x80\x3f", 4));  // 1.0f in the model
  ASSERT_NE(at, std::string::npos);
  bytes[at + 3] = 0x40;  // 1.0f -> 2.0f
  const Sha256Digest d = Sha256(bytes.data(), bytes.size() - kSha256DigestBytes);
  std::memcpy(&bytes[bytes.size() - kSha256DigestBytes], d.data(), d.size());
  test::WriteFile(path, bytes);
  ASSERT_FL_OK(ReadCheckpoint(path));  // its checksum is fine
  EXPECT_TRUE(ReadCheckpoint(path, &key->public_key()).status().IsUnauthenticated());
  // Unsigned.
  ASSERT_FL_OK(WriteCheckpoint(path, Sample()));
  auto unsigned_read = ReadCheckpoint(path, &key->public_key());
  EXPECT_TRUE(unsigned_read.status().IsUnauthenticated());
  EXPECT_NE(unsigned_read.status().message().find("not signed"), std::string::npos);
}

}  // namespace
}  // namespace fl
