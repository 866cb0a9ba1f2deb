#include "common/model_zoo.h"

#include <gtest/gtest.h>

#include "tests/test_util.h"

namespace fl {
namespace {

TEST(ModelZooTest, ExactParameterCounts) {
  auto nn2 = CreateModel("mnist_2nn", 1);
  ASSERT_FL_OK(nn2);
  EXPECT_EQ(CountParameters(**nn2), 199210);
  auto cnn = CreateModel("mnist_cnn", 1);
  ASSERT_FL_OK(cnn);
  EXPECT_EQ(CountParameters(**cnn), 1663370);
}

TEST(ModelZooTest, OutputShape) {
  for (const auto& info : ListModels()) {
    auto m = CreateModel(info.name, 1);
    ASSERT_FL_OK(m);
    auto y = (*m)->forward(torch::zeros({3, 1, 28, 28}));
    EXPECT_EQ(y.sizes().vec(), (std::vector<int64_t>{3, 10})) << info.name;
  }
}

TEST(ModelZooTest, SeedDeterminesWeights) {
  auto a = CreateModel("mnist_cnn", 5);
  auto b = CreateModel("mnist_cnn", 5);
  auto c = CreateModel("mnist_cnn", 6);
  ASSERT_FL_OK(a);
  const auto sa = GetModelState("mnist_cnn", **a);
  const auto sb = GetModelState("mnist_cnn", **b);
  const auto sc = GetModelState("mnist_cnn", **c);
  ASSERT_EQ(sa.tensors.size(), 8u);
  for (size_t i = 0; i < sa.tensors.size(); ++i) {
    EXPECT_EQ(sa.tensors[i].values, sb.tensors[i].values) << sa.tensors[i].name;
    EXPECT_NE(sa.tensors[i].values, sc.tensors[i].values) << sa.tensors[i].name;
  }
  EXPECT_EQ(sa.NumParameters(), 1663370);
}

TEST(ModelZooTest, UnknownNameListsKnownOnes) {
  auto m = CreateModel("resnet50", 1);
  ASSERT_FALSE(m.ok());
  EXPECT_TRUE(m.status().IsNotFound());
  EXPECT_NE(m.status().message().find("mnist_cnn"), std::string::npos);
}

TEST(ModelZooTest, StateRoundTripAndMismatch) {
  auto a = CreateModel("mnist_2nn", 1);
  auto b = CreateModel("mnist_2nn", 2);
  ASSERT_FL_OK(a);
  ASSERT_FL_OK(b);
  auto sa = GetModelState("mnist_2nn", **a);
  ASSERT_FL_OK(SetModelState(**b, sa));
  auto x = torch::randn({4, 1, 28, 28});
  EXPECT_TRUE(torch::equal((*a)->forward(x), (*b)->forward(x)));

  auto bad = sa;
  bad.tensors[1].shape = {201};
  EXPECT_TRUE(SetModelState(**b, bad).IsInvalidArgument());
  auto cnn = CreateModel("mnist_cnn", 1);
  EXPECT_TRUE(SetModelState(**cnn, sa).IsInvalidArgument());
}

}  // namespace
}  // namespace fl
