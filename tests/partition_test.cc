#include "common/partition.h"

#include <gtest/gtest.h>

#include <set>

#include "common/dataset.h"
#include "common/random.h"
#include "tests/test_util.h"

namespace fl {
namespace {

// Every index in [0, n) appears in exactly one client, each list sorted.
void ExpectDisjointCovering(const Partition& p, int64_t n) {
  std::vector<int> seen(n, 0);
  for (const auto& client : p) {
    EXPECT_TRUE(std::is_sorted(client.begin(), client.end()));
    for (int64_t i : client) {
      ASSERT_GE(i, 0);
      ASSERT_LT(i, n);
      seen[i]++;
    }
  }
  for (int64_t i = 0; i < n; ++i) ASSERT_EQ(seen[i], 1) << "index " << i;
}

int DistinctLabels(const std::vector<int64_t>& client, const std::vector<uint8_t>& labels) {
  std::set<int> s;
  for (int64_t i : client) s.insert(labels[i]);
  return static_cast<int>(s.size());
}

// Mean over clients of the largest class share: 0.1 for perfectly balanced
// 10-class clients, 1.0 when every client holds one class.
double MeanMaxClassShare(const Partition& p, const std::vector<uint8_t>& labels) {
  double sum = 0;
  for (const auto& client : p) {
    std::vector<int> h(10, 0);
    for (int64_t i : client) h[labels[i]]++;
    sum += static_cast<double>(*std::max_element(h.begin(), h.end())) / client.size();
  }
  return sum / p.size();
}

// Balanced synthetic labels: n samples, labels in a shuffled order.
std::vector<uint8_t> SyntheticLabels(int64_t n, uint64_t seed) {
  std::vector<uint8_t> l(n);
  for (int64_t i = 0; i < n; ++i) l[i] = static_cast<uint8_t>(i % 10);
  Random r(seed);
  r.Shuffle(&l);
  return l;
}

class PartitionTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto train = test::LoadMnist(Split::kTrain);
    ASSERT_FL_OK(train);
    labels_ = new std::vector<uint8_t>(train->labels);
  }
  static void TearDownTestSuite() { delete labels_; }
  static std::vector<uint8_t>* labels_;
};
std::vector<uint8_t>* PartitionTest::labels_ = nullptr;

TEST_F(PartitionTest, IidEqualSharesDisjointCovering) {
  auto p = PartitionIid(60000, 100, 1);
  ASSERT_FL_OK(p);
  ASSERT_EQ(p->size(), 100u);
  ExpectDisjointCovering(*p, 60000);
  for (const auto& c : *p) EXPECT_EQ(c.size(), 600u);
  // Uneven split: sizes differ by at most one.
  auto q = PartitionIid(1003, 10, 1);
  ASSERT_FL_OK(q);
  ExpectDisjointCovering(*q, 1003);
  for (const auto& c : *q) EXPECT_TRUE(c.size() == 100u || c.size() == 101u);
}

TEST_F(PartitionTest, IidClientsSeeAllLabels) {
  auto p = MakePartition(*labels_, 10, {PartitionScheme::kIid, 100, 2, 0.5, 3});
  ASSERT_FL_OK(p);
  for (const auto& c : *p) EXPECT_EQ(DistinctLabels(c, *labels_), 10);
  // A seeded shuffle in integer arithmetic: the same split on every CPU.
  EXPECT_LT(MeanMaxClassShare(*p, *labels_), 0.2);
}

TEST_F(PartitionTest, ShardsMcMahanSetting) {
  PartitionOptions o{PartitionScheme::kShards, 100, 2, 0, 7};
  auto p = MakePartition(*labels_, 10, o);
  ASSERT_FL_OK(p);
  ASSERT_EQ(p->size(), 100u);
  ExpectDisjointCovering(*p, 60000);
  int two_label_clients = 0;
  for (const auto& c : *p) {
    const int k = DistinctLabels(c, *labels_);
    EXPECT_LE(k, 2);
    two_label_clients += (k == 2);
    // 2 shards of about 300 (label-pure shards vary by a few percent).
    EXPECT_GE(c.size(), 540u);
    EXPECT_LE(c.size(), 660u);
  }
  // Most clients get two different labels (same-label pairs happen by chance;
  // a seeded shuffle in integer arithmetic, the same on every CPU).
  EXPECT_GT(two_label_clients, 80);
}

TEST_F(PartitionTest, ShardsOtherShapes) {
  auto labels = SyntheticLabels(5000, 2);
  for (int spc : {1, 2, 3}) {
    auto p = PartitionShards(labels, 10, 20, spc, 9);
    ASSERT_FL_OK(p);
    ExpectDisjointCovering(*p, 5000);
    for (const auto& c : *p) EXPECT_LE(DistinctLabels(c, labels), spc);
  }
}

TEST_F(PartitionTest, DirichletSmallerAlphaMoreSkew) {
  double prev = 0;
  for (double alpha : {100.0, 1.0, 0.1}) {
    auto p = PartitionDirichlet(*labels_, 10, 100, alpha, 5);
    ASSERT_FL_OK(p);
    ExpectDisjointCovering(*p, 60000);
    for (const auto& c : *p) EXPECT_EQ(c.size(), 600u);
    const double skew = MeanMaxClassShare(*p, *labels_);
    EXPECT_GT(skew, prev) << "alpha " << alpha;
    prev = skew;
  }
  // alpha = 0.1 (0.01 per class): clients are dominated by one class.
  EXPECT_GT(prev, 0.6);
}

TEST_F(PartitionTest, DeterministicGivenSeed) {
  for (auto scheme :
       {PartitionScheme::kIid, PartitionScheme::kShards, PartitionScheme::kDirichlet}) {
    PartitionOptions o{scheme, 50, 2, 0.3, 1234};
    auto a = MakePartition(*labels_, 10, o);
    auto b = MakePartition(*labels_, 10, o);
    o.seed = 1235;
    auto c = MakePartition(*labels_, 10, o);
    ASSERT_FL_OK(a);
    ASSERT_FL_OK(c);
    EXPECT_EQ(*a, *b) << PartitionSchemeName(scheme);
    EXPECT_NE(*a, *c) << PartitionSchemeName(scheme);
  }
}

TEST_F(PartitionTest, RandomSeedStillValid) {
  // A seed from gtest (--gtest_random_seed=N replays a failure).
  const uint64_t seed = test::RandomSeed();
  auto labels = SyntheticLabels(3000, seed);
  for (auto scheme :
       {PartitionScheme::kIid, PartitionScheme::kShards, PartitionScheme::kDirichlet}) {
    auto p = MakePartition(labels, 10, {scheme, 30, 2, 0.5, seed});
    ASSERT_FL_OK(p);
    ExpectDisjointCovering(*p, 3000);
  }
}

TEST_F(PartitionTest, BadOptionsAreErrors) {
  auto labels = SyntheticLabels(100, 1);
  EXPECT_TRUE(MakePartition(labels, 10, {PartitionScheme::kIid, 0, 2, 0.5, 1})
                  .status()
                  .IsInvalidArgument());
  EXPECT_TRUE(MakePartition(labels, 10, {PartitionScheme::kIid, 101, 2, 0.5, 1})
                  .status()
                  .IsInvalidArgument());
  EXPECT_TRUE(MakePartition(labels, 10, {PartitionScheme::kShards, 60, 2, 0.5, 1})
                  .status()
                  .IsInvalidArgument());
  EXPECT_TRUE(MakePartition(labels, 10, {PartitionScheme::kDirichlet, 10, 2, 0.0, 1})
                  .status()
                  .IsInvalidArgument());
  EXPECT_TRUE(MakePartition(labels, 5, {PartitionScheme::kIid, 10, 2, 0.5, 1})
                  .status()
                  .IsInvalidArgument());
  EXPECT_TRUE(ParsePartitionScheme("noniid").status().IsInvalidArgument());
  EXPECT_EQ(*ParsePartitionScheme("shards"), PartitionScheme::kShards);
}

}  // namespace
}  // namespace fl
