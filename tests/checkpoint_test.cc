#include "server/checkpoint.h"

#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "tests/test_util.h"

namespace fl {
namespace {

Checkpoint Sample() {
  Checkpoint c;
  c.round = 7;
  c.seed = 42;
  c.model.architecture = "toy";
  c.model.tensors.push_back({"w", {3}, {1, 2, 3}, {1, 1, 1}});
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
  // No temp file left behind.
  EXPECT_TRUE(ReadAll(path + ".tmp").empty());
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

}  // namespace
}  // namespace fl
