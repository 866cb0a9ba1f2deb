#include "common/status.h"

#include <gtest/gtest.h>

namespace fl {
namespace {

TEST(StatusTest, OkByDefault) {
  Status s;
  EXPECT_TRUE(s.ok());
  EXPECT_EQ(s.ToString(), "OK");
}

TEST(StatusTest, FactoriesSetCodeAndMessage) {
  Status s = Status::Corruption("train-images", "bad magic");
  EXPECT_FALSE(s.ok());
  EXPECT_TRUE(s.IsCorruption());
  EXPECT_FALSE(s.IsNotFound());
  EXPECT_EQ(s.message(), "train-images: bad magic");
  EXPECT_EQ(s.ToString(), "Corruption: train-images: bad magic");
  EXPECT_TRUE(Status::NotFound("x").IsNotFound());
  EXPECT_TRUE(Status::IOError("x").IsIOError());
  EXPECT_TRUE(Status::InvalidArgument("x").IsInvalidArgument());
  EXPECT_TRUE(Status::Unauthenticated("x").IsUnauthenticated());
}

TEST(StatusTest, WithContextPrefixesErrorsOnly) {
  EXPECT_EQ(Status::NotFound("f").WithContext("loading").message(), "loading: f");
  EXPECT_TRUE(Status::OK().WithContext("loading").ok());
}

Result<int> Half(int x) {
  if (x % 2) return Status::InvalidArgument("odd: " + std::to_string(x));
  return x / 2;
}

Status UseHalf(int x, int* out) {
  auto r = Half(x);
  if (!r.ok()) return r.status();
  *out = *r;
  return Status::OK();
}

Status Chain(int x) {
  int y = 0;
  FL_RETURN_IF_ERROR(UseHalf(x, &y));
  return y == 2 ? Status::OK() : Status::Internal("unexpected");
}

TEST(ResultTest, HoldsValueOrError) {
  auto a = Half(8);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(*a, 4);
  auto b = Half(3);
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.status().message(), "odd: 3");
  EXPECT_TRUE(Chain(4).ok());
  EXPECT_TRUE(Chain(5).IsInvalidArgument());
}

TEST(ResultTest, MoveOutValue) {
  Result<std::string> r(std::string("payload"));
  std::string s = std::move(r).value();
  EXPECT_EQ(s, "payload");
}

}  // namespace
}  // namespace fl
