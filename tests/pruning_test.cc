// ERK layer-wise sparsity and the gradual pruning schedule (common/model_state.h).
#include <gtest/gtest.h>

#include <cmath>

#include "common/model_state.h"
#include "tests/test_util.h"

namespace fl {
namespace {

// A conv layer [10, 1, 5, 5] (250 weights), its bias, and a dense [100, 50] (5000).
ModelState TwoLayers() {
  ModelState s;
  s.architecture = "toy";
  auto add = [&s](const std::string& name, std::vector<int64_t> shape) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    std::vector<float> v(static_cast<size_t>(n));
    for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>((i * 7919) % 1000) + 1;
    s.tensors.push_back({name, shape, v, {}});
  };
  add("conv.weight", {10, 1, 5, 5});
  add("conv.bias", {10});
  add("fc.weight", {100, 50});
  return s;
}

TEST(PruningTest, ErkDensitiesByHand) {
  // Scores: conv (10 + 1 + 5 + 5) / 250 = 0.084, fc (100 + 50) / 5000 = 0.03.
  // 90% sparse keeps 525 of 5250: eps = 525 / (0.084 * 250 + 0.03 * 5000) = 525 / 171.
  // ErkDensities takes about 9 double roundings (1 - 0.9 among them), the
  // expected values 3: within 12 * 2^-53 relative (3.4e-16 at 0.26), and the
  // sum of kept values within 11 * 2^-53 of 525 (6.4e-13).
  const auto d = ErkDensities(TwoLayers(), 0.9);
  const double eps = 525.0 / 171.0;
  EXPECT_NEAR(d[0], eps * 0.084, 1e-15);
  EXPECT_EQ(d[1], 1.0);  // the bias is not prunable
  EXPECT_NEAR(d[2], eps * 0.03, 1e-15);
  EXPECT_NEAR(d[0] * 250 + d[2] * 5000, 525, 1e-12);
  // 50% sparse: eps = 2625 / 171 makes the conv's density 1.29: it stays dense
  // and the fc keeps the other 2375 of 5000.
  const auto half = ErkDensities(TwoLayers(), 0.5);
  EXPECT_EQ(half[0], 1.0);
  EXPECT_NEAR(half[2], 2375.0 / 5000, 1e-15);  // 7 double roundings: <= 3.7e-16
}

TEST(PruningTest, PruneErkKeepsEachLayersShareByMagnitude) {
  ModelState s = TwoLayers();
  ASSERT_FL_OK(PruneErk(&s, 0.9));
  EXPECT_EQ(s.tensors[0].KeptCount(), std::llround(250 * 525.0 / 171.0 * 0.084));
  EXPECT_EQ(s.tensors[1].KeptCount(), 10);
  EXPECT_EQ(s.tensors[2].KeptCount(), std::llround(5000 * 525.0 / 171.0 * 0.03));
  // 186 + 4539 of the 5250 prunable values, counted: the double nearest 0.9.
  EXPECT_EQ(PrunableSparsity(s), 4725.0 / 5250);
  // The kept values are the largest of each layer, the pruned ones exactly 0.
  float smallest_kept = 1e9f, largest_pruned = 0;
  for (size_t i = 0; i < s.tensors[2].values.size(); ++i) {
    if (s.tensors[2].mask[i]) {
      smallest_kept = std::min(smallest_kept, s.tensors[2].values[i]);
    } else {
      EXPECT_EQ(s.tensors[2].values[i], 0.0f);
      largest_pruned = std::max(largest_pruned, TwoLayers().tensors[2].values[i]);
    }
  }
  EXPECT_GE(smallest_kept, largest_pruned);
}

TEST(PruningTest, GradualScheduleOfZhuAndGupta) {
  // s_t = 0.9 + (0 - 0.9)(1 - t/10)^3
  EXPECT_EQ(GradualSparsity(0, 0.9, 0, 10), 0.0);  // `initial`, returned as is
  // (1 - 5/10)^3 = 0.125 and the products by it are exact: one rounding in
  // both expressions, of the same operands.
  EXPECT_EQ(GradualSparsity(0, 0.9, 5, 10), 0.9 - 0.9 * 0.125);
  // (1 - 1/10)^3 in three double products against the literal 0.729: within
  // 3 ulps of 0.6084 (derived), inside EXPECT_DOUBLE_EQ's 4.
  EXPECT_DOUBLE_EQ(GradualSparsity(0.5, 0.9, 1, 10), 0.9 - 0.4 * 0.729);
  EXPECT_EQ(GradualSparsity(0, 0.9, 10, 10), 0.9);  // `final`, returned as is
  EXPECT_EQ(GradualSparsity(0, 0.9, 50, 10), 0.9);
  // Tightening an already pruned model counts what it pruned.
  ModelState s = TwoLayers();
  ASSERT_FL_OK(PruneByMagnitude(&s, 0.5, true));
  ASSERT_FL_OK(PruneByMagnitude(&s, 0.8, true));
  // llround(0.8 * 5250) = 4200 pruned, counted (every value is >= 1, so none
  // ties with the 2625 already pruned at 0): the double nearest 0.8.
  EXPECT_EQ(PrunableSparsity(s), 4200.0 / 5250);
}

}  // namespace
}  // namespace fl
