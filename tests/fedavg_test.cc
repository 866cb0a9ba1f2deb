#include "tests/fedavg_oracle.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "common/random.h"
#include "server/aggregator.h"
#include "tests/test_util.h"

namespace fl {
namespace {

ModelState Make(std::vector<float> a, std::vector<float> b) {
  ModelState s;
  s.architecture = "toy";
  s.tensors.push_back({"w", {static_cast<int64_t>(a.size())}, std::move(a), {}});
  s.tensors.push_back({"b", {static_cast<int64_t>(b.size())}, std::move(b), {}});
  return s;
}

TEST(FedAvgTest, WeightedByExampleCount) {
  const ModelState global = Make({1, 2, 3}, {0});
  // Client k trains to global + delta_k.
  std::vector<ClientUpdate> ups = {
      {100, Make({1, 0, 0}, {2})},
      {300, Make({0, 4, 0}, {-2})},
  };
  FedAvgOptions o;
  o.global = &global;
  o.updates = &ups;
  auto r = FedAvg(o);
  ASSERT_FL_OK(r);
  // new = old + 0.25 * d1 + 0.75 * d2: integer sums, and quotients by 400
  // that are exact, so every value is exact.
  EXPECT_EQ(r->tensors[0].values[0], 1.25f);
  EXPECT_EQ(r->tensors[0].values[1], 5.0f);
  EXPECT_EQ(r->tensors[0].values[2], 3.0f);
  EXPECT_EQ(r->tensors[1].values[0], -1.0f);
}

TEST(FedAvgTest, ManyClientsClosedForm) {
  // K clients, client k has n_k = k + 1 examples and delta = k everywhere:
  // weighted mean = sum k(k+1) / sum (k+1) = (K-1)(K+1)K/3 / (K(K+1)/2) = 2(K-1)/3.
  const int K = 100;
  const ModelState global = Make(std::vector<float>(10, 0.5f), {0.0f});
  std::vector<ClientUpdate> ups;
  for (int k = 0; k < K; ++k) {
    ups.push_back({k + 1, Make(std::vector<float>(10, float(k)), {float(k)})});
  }
  FedAvgOptions o;
  o.global = &global;
  o.updates = &ups;
  auto r = FedAvg(o);
  ASSERT_FL_OK(r);
  // The weighted sum (333,300) and the total weight (5,050) are exact
  // integers and their quotient is 66, so the model is exact too.
  const double expected = 2.0 * (K - 1) / 3.0;
  ASSERT_EQ(expected, 66.0);
  for (float v : r->tensors[0].values) EXPECT_EQ(v, 66.5f);
  EXPECT_EQ(r->tensors[1].values[0], 66.0f);
  // Server learning rate scales the step.
  o.server_lr = 0.5;
  auto half = FedAvg(o);
  ASSERT_FL_OK(half);
  EXPECT_EQ(half->tensors[1].values[0], 33.0f);
}

TEST(FedAvgTest, DifferenceRoundTrip) {
  const ModelState before = Make({1, 2, 3}, {4});
  const ModelState after = Make({2, 2, 1}, {5});
  auto d = Difference(after, before);
  ASSERT_FL_OK(d);
  EXPECT_EQ(d->tensors[0].values, (std::vector<float>{1, 0, -2}));
  std::vector<ClientUpdate> ups = {{7, *d}};
  FedAvgOptions o;
  o.global = &before;
  o.updates = &ups;
  auto r = FedAvg(o);
  ASSERT_FL_OK(r);
  EXPECT_EQ(r->tensors[0].values, after.tensors[0].values);
}

// The server's fedavg aggregator (exact sums in fixed point) against the
// oracle, which computes the same definition on its own: the same model, bit
// for bit, for deltas across magnitudes (1e-9 to 10) and weights from 1 to
// 10^6, with a masked value that must not move, and a server learning rate.
TEST(FedAvgTest, TheServersAggregatorIsTheOracle) {
  Random rng(7);
  ModelState global = Make(std::vector<float>(64, 0.0f), std::vector<float>(3, 0.0f));
  for (auto& t : global.tensors) {
    for (float& v : t.values) v = static_cast<float>(rng.Normal());
  }
  global.tensors[0].mask.assign(64, 1);
  global.tensors[0].mask[5] = 0;
  global.tensors[0].values[5] = 0;
  for (double lr : {1.0, 0.7}) {
    std::vector<ClientUpdate> ups;
    StrategyOptions so;
    so.server_lr = lr;
    auto agg = std::move(MakeAggregator(so)).value();
    agg->Begin(static_cast<size_t>(global.KeptCount()));
    for (int k = 0; k < 9; ++k) {
      ModelState d = global;
      std::vector<float> kept;
      for (size_t t = 0; t < d.tensors.size(); ++t) {
        for (size_t i = 0; i < d.tensors[t].values.size(); ++i) {
          const bool masked = !d.tensors[t].mask.empty() && !d.tensors[t].mask[i];
          const double scale = std::pow(10.0, -9.0 + static_cast<double>((k * 7 + i) % 11));
          d.tensors[t].values[i] = masked ? 0.0f : static_cast<float>(rng.Normal() * scale);
          if (!masked) kept.push_back(d.tensors[t].values[i]);
        }
      }
      const int64_t n = 1 + static_cast<int64_t>(rng.Next() % 1000000);
      ups.push_back({n, d});
      ASSERT_FL_OK(agg->Add(n, &kept));
    }
    ModelState server = global;
    ASSERT_FL_OK(agg->Finish(&server, std::numeric_limits<float>::max()));
    FedAvgOptions o;
    o.global = &global;
    o.updates = &ups;
    o.server_lr = lr;
    auto oracle = FedAvg(o);
    ASSERT_FL_OK(oracle);
    for (size_t t = 0; t < server.tensors.size(); ++t) {
      EXPECT_EQ(server.tensors[t].values, oracle->tensors[t].values) << "lr " << lr;
    }
    EXPECT_EQ(server.tensors[0].values[5], 0.0f);
  }
}

TEST(FedAvgTest, RejectsBadInput) {
  const ModelState global = Make({1, 2, 3}, {0});
  std::vector<ClientUpdate> none;
  FedAvgOptions o;
  o.global = &global;
  o.updates = &none;
  EXPECT_TRUE(FedAvg(o).status().IsInvalidArgument());
  std::vector<ClientUpdate> zero = {{0, Make({0, 0, 0}, {0})}};
  o.updates = &zero;
  EXPECT_TRUE(FedAvg(o).status().IsInvalidArgument());
  std::vector<ClientUpdate> wrong = {{5, Make({0, 0}, {0})}};
  o.updates = &wrong;
  auto r = FedAvg(o);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("'w'"), std::string::npos) << r.status().ToString();
}

// The total weight is checked arithmetic: two updates whose weights sum past
// INT64_MAX are refused (the second one), not wrapped into a negative total
// that would flip the sign of the average.
TEST(FedAvgTest, TotalWeightCannotOverflow) {
  auto acc = std::move(MakeAggregator(StrategyOptions())).value();
  acc->Begin(3);
  std::vector<float> first = {1, 1, 1}, second = {3, 3, 3};
  ASSERT_FL_OK(acc->Add(std::numeric_limits<int64_t>::max() - 1, &first));
  const Status st = acc->Add(2, &second);
  EXPECT_TRUE(st.IsInvalidArgument());
  EXPECT_NE(st.message().find("overflow"), std::string::npos) << st.ToString();
  EXPECT_EQ(acc->count(), 1);
  // Only the first counts: the average is its delta.
  ModelState m = Make({0, 0}, {0});
  ASSERT_FL_OK(acc->Finish(&m, std::numeric_limits<float>::max()));
  EXPECT_EQ(m.tensors[0].values, (std::vector<float>{1, 1}));
  EXPECT_EQ(m.tensors[1].values, (std::vector<float>{1}));
}

// An average out of range is not applied at all: the model stays as it was.
TEST(FedAvgTest, OutOfRangeAverageLeavesTheModelUnchanged) {
  ModelState global = Make({1, 2, 3}, {0});
  auto round = [](double lr, std::vector<float> delta) {
    StrategyOptions o;
    o.server_lr = lr;
    auto a = std::move(MakeAggregator(o)).value();
    a->Begin(delta.size());
    EXPECT_TRUE(a->Add(1, &delta).ok());
    return a;
  };
  auto acc = round(1.0, {1, 70000, 1, 0});
  const ModelState before = global;
  const Status st = acc->Finish(&global, kMaxFp16Value);
  EXPECT_TRUE(st.IsInvalidArgument());
  EXPECT_NE(st.message().find("'w'"), std::string::npos) << st.ToString();
  EXPECT_EQ(global.tensors[0].values, before.tensors[0].values);
  // A delta beyond the fixed-point range (+-2^23, common/fixed_point.h) is
  // refused when added, and nothing of it counts (a server refuses it on
  // arrival, out_of_range).
  {
    StrategyOptions o;
    auto big = std::move(MakeAggregator(o)).value();
    big->Begin(4);
    std::vector<float> huge = {0, std::numeric_limits<float>::max(), 0, 0};
    EXPECT_TRUE(big->Add(1, &huge).IsInvalidArgument());
    std::vector<float> edge = {0, 8388608.0f, 0, 0};
    EXPECT_TRUE(big->Add(1, &edge).IsInvalidArgument());
    EXPECT_EQ(big->count(), 0);
    EXPECT_EQ(big->Finish(&global, std::numeric_limits<float>::max()).code(),
              Status::Code::kFailedPrecondition);
  }
  // fp32: a step that pushes a value past what the server allows is refused
  // too (the step is computed in double and never narrowed past the limit).
  auto big = round(1e6, {0, 8e6f, 0, 0});
  EXPECT_TRUE(big->Finish(&global, 1e12f).IsInvalidArgument());
  EXPECT_EQ(global.tensors[0].values, before.tensors[0].values);
  acc = round(1.0, {1, 70000, 1, 0});
  ASSERT_FL_OK(acc->Finish(&global, std::numeric_limits<float>::max()));  // within fp32
  EXPECT_EQ(global.tensors[0].values, (std::vector<float>{2, 70002, 4}));
}

}  // namespace
}  // namespace fl
