#include "common/random.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>

namespace fl {
namespace {

TEST(RandomTest, SameSeedSameSequence) {
  Random a(42), b(42), c(43);
  bool differs = false;
  for (int i = 0; i < 100; ++i) {
    uint64_t x = a.Next();
    EXPECT_EQ(x, b.Next());
    differs |= (x != c.Next());
  }
  EXPECT_TRUE(differs);
}

TEST(RandomTest, UniformInRangeAndRoughlyFlat) {
  Random r(7);
  std::vector<int> hist(10, 0);
  for (int i = 0; i < 100000; ++i) {
    uint64_t v = r.Uniform(10);
    ASSERT_LT(v, 10u);
    hist[v]++;
  }
  // sigma = sqrt(1e5 * 0.1 * 0.9) = 94.9, so 500 is 5.3 sigma; the generator
  // is integer arithmetic only, the same on every CPU.
  for (int h : hist) EXPECT_NEAR(h, 10000, 500);
}

TEST(RandomTest, GammaMeanMatchesShape) {
  // E[Gamma(k, 1)] = k, Var = k. 20000 draws: standard error sqrt(k/20000).
  for (double k : {0.1, 0.5, 1.0, 3.0}) {
    Random r(11);
    double sum = 0;
    const int n = 20000;
    for (int i = 0; i < n; ++i) {
      double g = r.Gamma(k);
      ASSERT_GE(g, 0.0);
      sum += g;
    }
    EXPECT_NEAR(sum / n, k, 6 * std::sqrt(k / n)) << "shape " << k;
  }
}

TEST(RandomTest, DirichletSumsToOne) {
  Random r(3);
  for (double a : {0.01, 0.5, 10.0}) {
    auto p = r.Dirichlet(std::vector<double>(10, a));
    // The 10-term sum of the draws (9 roundings), each quotient by it (1) and
    // the test's sum (9): within 19 * 2^-53 = 2.1e-15 of 1.
    EXPECT_NEAR(std::accumulate(p.begin(), p.end(), 0.0), 1.0, 1e-14);
    for (double v : p) EXPECT_GE(v, 0.0);
  }
}

TEST(RandomTest, ShuffleIsAPermutation) {
  Random r(5);
  std::vector<int> v(1000);
  std::iota(v.begin(), v.end(), 0);
  auto w = v;
  r.Shuffle(&w);
  EXPECT_NE(v, w);
  std::sort(w.begin(), w.end());
  EXPECT_EQ(v, w);
}

}  // namespace
}  // namespace fl
