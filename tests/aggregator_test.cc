// Every strategy against a hand-computed example (server/aggregator.h).
#include "server/aggregator.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>

#include "common/random.h"
#include "crypto/message.h"
#include "server/private_aggregator.h"
#include "tests/test_util.h"

namespace fl {
namespace {

// A model of `values` kept parameters (dense), all starting at `start`.
ModelState Model(size_t values, float start = 0) {
  ModelState s;
  s.architecture = "toy";
  s.tensors.push_back({"w", {static_cast<int64_t>(values)}, std::vector<float>(values, start), {}});
  return s;
}

std::unique_ptr<Aggregator> Make(StrategyOptions o) {
  auto a = MakeAggregator(o);
  EXPECT_TRUE(a.ok()) << a.status().ToString();
  return a.ok() ? std::move(a).value() : nullptr;
}

std::unique_ptr<Aggregator> Make(const std::string& name) {
  StrategyOptions o;
  o.name = name;
  return Make(o);
}

// One round: adds (weight, delta) pairs and applies the step to `model`.
Status Round(Aggregator* a, ModelState* model,
             std::vector<std::pair<int64_t, std::vector<float>>> updates) {
  a->Begin(static_cast<size_t>(model->KeptCount()));
  for (auto& [w, d] : updates) FL_RETURN_IF_ERROR(a->Add(w, &d));
  return a->Finish(model, std::numeric_limits<float>::max());
}

TEST(AggregatorTest, FedAvgIsTheWeightedMean) {
  auto a = Make("fedavg");
  ModelState m = Model(2, 1.0f);
  // (1 * [1, 2] + 3 * [3, 6]) / 4 = [2.5, 5]: integer sums over a power of
  // two, exact at every step.
  ASSERT_FL_OK(Round(a.get(), &m, {{1, {1, 2}}, {3, {3, 6}}}));
  EXPECT_EQ(m.tensors[0].values[0], 3.5f);
  EXPECT_EQ(m.tensors[0].values[1], 6.0f);
  EXPECT_EQ(a->SaveState(), "");  // no state between rounds
  EXPECT_EQ(a->convex_step_scale(), 1.0);  // the learning rate, returned as is
}

// BatchNorm's running statistics are federated like weights: FedAvg makes
// them the weighted mean of the clients'. A running variance a step takes
// below zero (here FedAvgM's momentum overshooting) is set to 0 by the server
// after the step (ClampRunningVariances, which counts it); a weight or a
// running mean may be negative.
TEST(AggregatorTest, RunningStatisticsAreAveragedAndVariancesKeptNonNegative) {
  ModelState m = Model(1, 0.5f);
  m.tensors.push_back({"bn.running_mean", {1}, {0.5f}, {}});
  m.tensors.push_back({"bn.running_var", {1}, {0.5f}, {}});
  auto avg = Make("fedavg");
  // Variances 0.2 (weight 1) and 1.0 (weight 3) average to 0.8. The sum is
  // exact and the division by 4 too; 0.5 + (1.5 - 0.3f) / 4 = 0.79999999702
  // is rounded once to float, to 0.8f (a quarter of an ulp away).
  ASSERT_FL_OK(Round(avg.get(), &m, {{1, {-0.3f, -0.3f, -0.3f}}, {3, {0.5f, 0.5f, 0.5f}}}));
  EXPECT_EQ(m.tensors[2].values[0], 0.8f);
  EXPECT_EQ(ClampRunningVariances(&m), 0);
  auto momentum = Make("fedavgm");
  for (int round = 0; round < 3; ++round) {
    ASSERT_FL_OK(Round(momentum.get(), &m, {{1, {-0.6f, -0.6f, -0.6f}}}));
  }
  EXPECT_LT(m.tensors[2].values[0], 0.0f);
  EXPECT_EQ(ClampRunningVariances(&m), 1);
  EXPECT_LT(m.tensors[0].values[0], 0.0f);
  EXPECT_LT(m.tensors[1].values[0], 0.0f);
  EXPECT_EQ(m.tensors[2].values[0], 0.0f);
}

// One device pushing a running variance to zero: under the coordinate-wise
// median it moves nothing, as for a weight (two honest devices of three).
TEST(AggregatorTest, TheMedianResistsADevicePushingARunningVariance) {
  ModelState m = Model(1, 0.5f);
  m.tensors.push_back({"bn.running_var", {1}, {1.0f}, {}});
  auto median = Make("median");
  ASSERT_FL_OK(Round(median.get(), &m, {{1, {0.1f, 0.2f}}, {1, {0.1f, 0.3f}}, {1, {0.1f, -1e4f}}}));
  // 1 + 0.2f is exact in double and rounds once to float: to 1.2f.
  EXPECT_EQ(m.tensors[1].values[0], 1.2f);
  EXPECT_EQ(ClampRunningVariances(&m), 0);
}

TEST(AggregatorTest, PrunedWeightsStayZero) {
  ModelState m = Model(4, 1.0f);
  m.tensors[0].mask = {1, 0, 1, 0};
  m.tensors[0].values = {1, 0, 1, 0};
  for (const std::string& name : StrategyNames()) {
    SCOPED_TRACE(name);
    ModelState x = m;
    auto a = Make(name);
    // Deltas carry the 2 kept values only.
    ASSERT_FL_OK(Round(a.get(), &x, {{1, {0.5f, -0.5f}}, {1, {0.25f, 0.5f}}, {1, {0.5f, 0}}}));
    EXPECT_EQ(x.tensors[0].values[1], 0.0f);
    EXPECT_EQ(x.tensors[0].values[3], 0.0f);
    EXPECT_NE(x.tensors[0].values[0], 1.0f);
  }
}

TEST(AggregatorTest, ClipScalesToTheNorm) {
  // The norm of {3, 4} is exactly 5, 1.0 / 5 is the double 0.2, and 3 * 0.2
  // and 4 * 0.2 round to the floats 0.6f and 0.8f.
  std::vector<float> d = {3, 4};  // norm 5
  EXPECT_EQ(ClipToNorm(&d, 1.0), 0.2);
  EXPECT_EQ(d[0], 0.6f);
  EXPECT_EQ(d[1], 0.8f);
  std::vector<float> small = {0.3f, 0.4f};
  EXPECT_EQ(ClipToNorm(&small, 1.0), 1.0);
  EXPECT_EQ(small[0], 0.3f);
  EXPECT_EQ(ClipToNorm(&small, 0), 1.0);  // off

  // With any strategy: FedAvg of [3, 4] clipped to 1 and [0, 0.5] = [0.3, 0.65].
  StrategyOptions o;
  o.clip = 1.0;
  auto a = Make(o);
  ModelState m = Model(2);
  ASSERT_FL_OK(Round(a.get(), &m, {{1, {3, 4}}, {1, {0, 0.5f}}}));
  EXPECT_EQ(a->clipped(), 1);
  // Exact sums over 2: 0.6f / 2 is the float 0.3f; (0.8f + 0.5f) / 2 =
  // 21810381 * 2^-25 is a tie between two floats, rounded once to the even
  // one, which is 0.65f.
  EXPECT_EQ(m.tensors[0].values[0], 0.3f);
  EXPECT_EQ(m.tensors[0].values[1], 0.65f);
}

TEST(AggregatorTest, CoordinateMedian) {
  // Odd: per coordinate {1, 5, 3} -> 3 and {-1, 0, 7} -> 0.
  EXPECT_EQ(CoordinateMedian({{1, -1}, {5, 0}, {3, 7}}), (std::vector<double>{3, 0}));
  // Even: {1, 2, 10, 4} -> (2 + 4) / 2 = 3.
  EXPECT_EQ(CoordinateMedian({{1}, {2}, {10}, {4}}), (std::vector<double>{3}));
  // The strategy ignores claimed weights: 1000 examples buy no influence.
  auto a = Make("median");
  ModelState m = Model(1);
  ASSERT_FL_OK(Round(a.get(), &m, {{1, {1}}, {1, {2}}, {1000, {50}}}));
  EXPECT_EQ(m.tensors[0].values[0], 2.0f);
}

TEST(AggregatorTest, TrimmedMean) {
  // {1, 2, 3, 4, 100} less one at each end: (2 + 3 + 4) / 3 = 3.
  EXPECT_EQ(TrimmedMean({{1}, {2}, {3}, {4}, {100}}, 1), (std::vector<double>{3}));
  // No trim = the plain mean; a trim too large for K keeps the middle value.
  EXPECT_EQ(TrimmedMean({{1}, {2}, {6}}, 0), (std::vector<double>{3}));
  EXPECT_EQ(TrimmedMean({{1}, {2}, {6}}, 5), (std::vector<double>{2}));
  // trim_fraction 0.2 of 5 updates drops one at each end.
  StrategyOptions o;
  o.name = "trimmed_mean";
  o.trim_fraction = 0.2;
  auto a = Make(o);
  ModelState m = Model(1);
  ASSERT_FL_OK(Round(a.get(), &m, {{1, {-100}}, {1, {2}}, {1, {3}}, {1, {4}}, {1, {100}}}));
  EXPECT_EQ(m.tensors[0].values[0], 3.0f);  // 9 / 3, exact
}

TEST(AggregatorTest, KrumScoresAndSelection) {
  // 2-D points (0,0), (3,4), (0,1), (30,40): squared distances
  //   d01 = 25, d02 = 1, d03 = 2500, d12 = 9 + 9 = 18, d13 = 27^2 + 36^2 = 2025,
  //   d23 = 900 + 39^2 = 2421.
  const std::vector<std::vector<float>> pts = {{0, 0}, {3, 4}, {0, 1}, {30, 40}};
  // Two nearest neighbours each: 0: 1 + 25, 1: 18 + 25, 2: 1 + 18, 3: 2025 + 2421.
  EXPECT_EQ(KrumScores(pts, 2), (std::vector<double>{26, 43, 19, 4446}));
  // n = 4, f = 1: n - f - 2 = 1 neighbour: scores 1, 18, 1, 2025.
  EXPECT_EQ(KrumSelect(pts, 1, 1), (std::vector<size_t>{0}));  // tie 0/2: lower index
  EXPECT_EQ(KrumSelect(pts, 1, 3), (std::vector<size_t>{0, 2, 1}));

  // krum moves the model to the chosen delta; multikrum (m = K - f = 3) to the
  // mean of the three chosen: ((0,0) + (0,1) + (3,4)) / 3 = (1, 5/3).
  auto k = Make("krum");
  ModelState m = Model(2);
  auto updates = [&pts] {
    std::vector<std::pair<int64_t, std::vector<float>>> u;
    for (const auto& p : pts) u.push_back({10, p});
    return u;
  };
  ASSERT_FL_OK(Round(k.get(), &m, updates()));
  EXPECT_EQ(m.tensors[0].values, (std::vector<float>{0, 0}));
  StrategyOptions o;
  o.name = "multikrum";
  o.krum_f = 1;
  auto mk = Make(o);
  ModelState m2 = Model(2);
  ASSERT_FL_OK(Round(mk.get(), &m2, updates()));
  // Exact sums; 5 / 3 is rounded to double, then to float: the float nearest
  // 5/3 (the double is far from a midpoint between floats).
  EXPECT_EQ(m2.tensors[0].values[0], 1.0f);
  EXPECT_EQ(m2.tensors[0].values[1], 5.0f / 3);
}

TEST(AggregatorTest, FedAvgMAccumulatesMomentum) {
  // beta 0.9, lr 1: v1 = 1, x1 = 1; v2 = 0.9 + 1 = 1.9, x2 = 2.9.
  auto a = Make("fedavgm");
  ModelState m = Model(1);
  ASSERT_FL_OK(Round(a.get(), &m, {{1, {1}}}));
  EXPECT_EQ(m.tensors[0].values[0], 1.0f);
  ASSERT_FL_OK(Round(a.get(), &m, {{1, {1}}}));
  // 0.9 * 1 + 1 is the double 1.9, stored as the float 1.9f; 1 + 1.9 is exact
  // in double and rounds once to float, to 2.9f.
  EXPECT_EQ(m.tensors[0].values[0], 2.9f);
  // The next step is lr (0.9 * 1.9 + D): a convex combination of the deltas
  // plus that offset, so each update can be range-checked alone.
  EXPECT_EQ(a->convex_step_scale(), 1.0);
  double factor = 0;
  const std::vector<float>* offset = a->StepOffset(&factor);
  ASSERT_NE(offset, nullptr);
  EXPECT_EQ(factor, 0.9);  // the momentum option, returned as is
  EXPECT_EQ((*offset)[0], 1.9f);
  EXPECT_EQ(Make("fedadam")->convex_step_scale(), 0.0);
  EXPECT_EQ(Make("fedavg")->StepOffset(&factor), nullptr);
}

// Reddi et al. 2021, Algorithm 2, with beta1 0.9, beta2 0.99, tau 1e-3, v
// starting at tau^2 = 1e-6, pseudo-gradients 0.5 then -0.25:
//   m1 = 0.05, m2 = 0.9 * 0.05 - 0.025 = 0.02
//   adagrad (lr 0.1):  v1 = 1e-6 + 0.25 = 0.250001,    x1 = 0.1 * 0.05 / (0.5000010 + 1e-3)
//                      v2 = v1 + 0.0625 = 0.312501,    x2 = x1 + 0.1 * 0.02 / (0.5590179 + 1e-3)
//   adam (lr 0.01):    v1 = 0.99e-6 + 0.0025 = 0.00250099,  x1 = 0.0098020
//                      v2 = 0.99 v1 + 0.000625 = 0.00310098, x2 = 0.0133302
//   yogi (lr 0.01):    v1 = 1e-6 + 0.01 * 0.25 (v < d^2) = 0.002501, x1 = 0.0098020
//                      v2 = v1 + 0.01 * 0.0625 = 0.003126,         x2 = 0.0133163
TEST(AggregatorTest, AdaptiveOptimizersFollowReddiEtAl) {
  struct Case {
    const char* name;
    double x1, x2;
  } cases[] = {
      {"fedadagrad", 0.0099800, 0.0135513},
      {"fedadam", 0.0098020, 0.0133302},
      {"fedyogi", 0.0098020, 0.0133163},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    auto a = Make(c.name);
    ModelState m = Model(1);
    // The expected values are rounded to 7 decimals (<= 5e-8); the moments
    // and the model are stored as floats (2^-24 relative each: <= 3e-9 on
    // steps of ~0.01). Derived bound 5.3e-8.
    ASSERT_FL_OK(Round(a.get(), &m, {{1, {0.5f}}}));
    EXPECT_NEAR(m.tensors[0].values[0], c.x1, 6e-8);
    ASSERT_FL_OK(Round(a.get(), &m, {{1, {-0.25f}}}));
    EXPECT_NEAR(m.tensors[0].values[0], c.x2, 6e-8);
  }
}

TEST(AggregatorTest, StateRoundTripsBitForBit) {
  for (const char* name : {"fedavgm", "fedadagrad", "fedadam", "fedyogi"}) {
    SCOPED_TRACE(name);
    // Uninterrupted: three rounds.
    auto a = Make(name);
    ModelState ma = Model(3, 0.1f);
    const std::vector<std::vector<float>> ds = {
        {0.5f, -1, 0.25f}, {0.1f, 0.2f, -0.3f}, {-0.7f, 0.05f, 0.3f}};
    for (const auto& d : ds) ASSERT_FL_OK(Round(a.get(), &ma, {{2, d}, {1, {1, 1, 1}}}));
    // Interrupted after round 1: a new aggregator loads the saved state.
    auto b = Make(name);
    ModelState mb = Model(3, 0.1f);
    ASSERT_FL_OK(Round(b.get(), &mb, {{2, ds[0]}, {1, {1, 1, 1}}}));
    const std::string saved = b->SaveState();
    EXPECT_FALSE(saved.empty());
    auto c = Make(name);
    ASSERT_FL_OK(c->LoadState(saved, 3));
    for (size_t r = 1; r < ds.size(); ++r) {
      ASSERT_FL_OK(Round(c.get(), &mb, {{2, ds[r]}, {1, {1, 1, 1}}}));
    }
    EXPECT_EQ(mb.tensors[0].values, ma.tensors[0].values);
    EXPECT_EQ(c->SaveState(), a->SaveState());
  }
}

TEST(AggregatorTest, LoadStateRefusesAnotherStrategyOrSize) {
  auto adam = Make("fedadam");
  ModelState m = Model(2);
  ASSERT_FL_OK(Round(adam.get(), &m, {{1, {1, 1}}}));
  const std::string state = adam->SaveState();
  auto momentum = Make("fedavgm");
  EXPECT_FALSE(momentum->LoadState(state, 2).ok());
  auto other = Make("fedadam");
  EXPECT_FALSE(other->LoadState(state, 3).ok());
  EXPECT_FALSE(other->LoadState(state.substr(0, state.size() - 1), 2).ok());
  EXPECT_FALSE(other->LoadState("garbage of some length", 2).ok());
  std::string nan_state = state;
  const uint32_t nan_bits = 0x7fc00000;
  std::memcpy(&nan_state[nan_state.size() - 4], &nan_bits, 4);
  EXPECT_FALSE(other->LoadState(nan_state, 2).ok());
  EXPECT_FL_OK(other->LoadState(state, 2));
  EXPECT_FL_OK(other->LoadState("", 2));  // no round yet
}

TEST(AggregatorTest, AStepOutOfRangeChangesNothing) {
  auto a = Make("fedavgm");
  ModelState m = Model(1);
  ASSERT_FL_OK(Round(a.get(), &m, {{1, {1}}}));
  const std::string before = a->SaveState();
  a->Begin(1);
  std::vector<float> big = {100};
  ASSERT_FL_OK(a->Add(1, &big));
  // 1 + (0.9 + 100) > 10: refused, model and momentum as they were.
  EXPECT_FALSE(a->Finish(&m, 10.0f).ok());
  EXPECT_EQ(m.tensors[0].values[0], 1.0f);
  EXPECT_EQ(a->SaveState(), before);
}

TEST(AggregatorTest, BadInputIsRefused) {
  auto a = Make("fedavg");
  a->Begin(2);
  std::vector<float> wrong = {1, 2, 3};
  EXPECT_FALSE(a->Add(1, &wrong).ok());
  std::vector<float> ok = {1, 2};
  EXPECT_FALSE(a->Add(0, &ok).ok());
  EXPECT_EQ(a->count(), 0);
  ModelState m = Model(2);
  EXPECT_EQ(a->Finish(&m, 1e9f).code(), Status::Code::kFailedPrecondition);

  StrategyOptions o;
  o.name = "fedsgd";
  Status st = CheckStrategyOptions(o);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("fedyogi"), std::string::npos) << st.message();  // lists them
  for (auto bad :
       {+[](StrategyOptions* s) { s->trim_fraction = 0.5; },
        +[](StrategyOptions* s) { s->momentum = 1; }, +[](StrategyOptions* s) { s->tau = 0; },
        +[](StrategyOptions* s) { s->clip = NAN; }, +[](StrategyOptions* s) { s->server_lr = -1; },
        +[](StrategyOptions* s) { s->krum_f = -1; }, +[](StrategyOptions* s) { s->mu = 1e9; }}) {
    StrategyOptions s;
    bad(&s);
    EXPECT_FALSE(CheckStrategyOptions(s).ok());
  }
}

TEST(AggregatorTest, DefaultServerLearningRates) {
  // Constants returned as they are.
  EXPECT_EQ(DefaultServerLr("fedavg"), 1.0);
  EXPECT_EQ(DefaultServerLr("fedadagrad"), 0.1);
  EXPECT_EQ(DefaultServerLr("fedadam"), 0.01);
  EXPECT_EQ(DefaultServerLr("fedyogi"), 0.01);
  StrategyOptions o;
  o.name = "fedprox";
  o.mu = 0.1;
  EXPECT_EQ(Make(o)->proximal_mu(), 0.1);
  EXPECT_EQ(Make("fedavg")->proximal_mu(), 0.0);
}

}  // namespace
}  // namespace fl

namespace fl {
namespace {

std::unique_ptr<PrivateAggregator> MakePrivate(const std::string& name, PrivacyOptions p,
                                               double q = 0.1) {
  StrategyOptions o;
  o.name = name;
  auto a = MakePrivateAggregator(o, p, q);
  EXPECT_TRUE(a.ok()) << a.status().ToString();
  return a.ok() ? std::move(a).value() : nullptr;
}

// DP-FedAvg with (next to) no noise: each delta clipped to C, every device
// weight 1, the sum over the expected participants.
TEST(PrivateAggregatorTest, ClippedSumOverTheExpectedCount) {
  PrivacyOptions p;
  p.noise_multiplier = 1e-12;
  p.clip = 1.0;
  auto a = MakePrivate("fedavg", p);
  ModelState m = Model(2);
  a->Begin(2, {4.0, 7});
  std::vector<float> big = {3, 4}, small = {0.3f, 0.4f};
  ASSERT_FL_OK(a->Add(1, &big));       // clipped to [0.6, 0.8]
  ASSERT_FL_OK(a->Add(1000, &small));  // its claimed weight does not count
  ASSERT_FL_OK(a->Finish(&m, 1e9f));
  // ([0.6, 0.8] + [0.3, 0.4]) / 4, summed exactly. 0.6f + 0.3f is a float
  // and / 4 is exact, so the first value is that float (0.225f is an ulp
  // below it); (0.8f + 0.4f) / 4 is a quarter of an ulp from 0.3f. The noise
  // (sd 2.5e-13) is far below half an ulp (7.5e-9).
  EXPECT_EQ(m.tensors[0].values[0], (0.6f + 0.3f) / 4);
  EXPECT_EQ(m.tensors[0].values[1], 0.3f);
  EXPECT_EQ(a->clipped(), 1);
  EXPECT_EQ(a->convex_step_scale(), 0.0);
}

// The noise: standard deviation z * C / expected on every kept coordinate,
// none on pruned ones, and released even in a round nobody answered.
TEST(PrivateAggregatorTest, GaussianNoiseOnKeptCoordinatesOnly) {
  PrivacyOptions p;
  p.noise_multiplier = 2.0;
  p.clip = 0.5;
  auto a = MakePrivate("fedavg", p);
  const size_t n = 200000;
  ModelState m = Model(n);
  m.tensors[0].mask.assign(n, 1);
  for (size_t i = 0; i < n; i += 2) m.tensors[0].mask[i] = 0;  // half pruned
  a->Begin(n / 2, {4.0, 11});
  ASSERT_FL_OK(a->Finish(&m, 1e9f));
  double sum = 0, sq = 0;
  for (size_t i = 0; i < n; ++i) {
    const float v = m.tensors[0].values[i];
    if (i % 2 == 0) {
      ASSERT_EQ(v, 0.0f);
      continue;
    }
    sum += v;
    sq += static_cast<double>(v) * v;
  }
  const double k = n / 2, mean = sum / k, sd = std::sqrt(sq / k - mean * mean);
  // 2 * 0.5 / 4 = 0.25; over 100k draws the sample sd is within 1% (4.5
  // standard errors of a 100k-sample sd, 0.25 / sqrt(2e5)), the mean within
  // 0.005 (6.3 standard errors, 0.25 / sqrt(1e5)). Seeded.
  EXPECT_NEAR(sd, 0.25, 0.0025);
  EXPECT_NEAR(mean, 0, 0.005);
  // The same seed, the same noise; another seed, another.
  auto b = MakePrivate("fedavg", p);
  ModelState m2 = Model(n);
  m2.tensors[0].mask = m.tensors[0].mask;
  b->Begin(n / 2, {4.0, 11});
  ASSERT_FL_OK(b->Finish(&m2, 1e9f));
  EXPECT_EQ(m2.tensors[0].values, m.tensors[0].values);
}

// Central privacy through relays: each relay's share clips its devices'
// deltas and hands up their exact sum, each device weighing one, with no
// noise; the root adds the relays' partial sums, each counting as its
// devices, and releases the same noisy sum, the same clip count and the same
// epsilon as a root that had the devices' deltas itself: the same model, bit
// for bit (the sums are the same integers).
TEST(PrivateAggregatorTest, RelaysSharesComposeToTheFlatPrivateRound) {
  PrivacyOptions p;
  p.noise_multiplier = 0.8;
  p.clip = 1.0;
  p.adaptive_clip = true;
  const std::vector<std::vector<float>> devices = {
      {3, 4}, {0.3f, 0.4f}, {0, 2}, {0.1f, 0}, {-6, 8}};  // norms 5, 0.5, 2, 0.1, 10
  const RoundInfo info{100.0, 21};
  // Flat: the root clips and sums every device's delta.
  auto flat = MakePrivate("fedavg", p, 0.1);
  ModelState flat_model = Model(2);
  flat->Begin(2, info);
  for (auto d : devices) ASSERT_FL_OK(flat->Add(7, &d));
  ASSERT_FL_OK(flat->Finish(&flat_model, 1e9f));
  // Relayed: devices 0-2 under one relay, 3-4 under another.
  PrivacyOptions share;
  share.relay = true;
  share.clip = p.clip;
  auto root = MakePrivate("fedavg", p, 0.1);
  ModelState root_model = Model(2);
  root->Begin(2, info);
  for (const auto& [from, to] : {std::pair<size_t, size_t>{3, 5}, {0, 3}}) {
    auto relay = MakePrivate("fedavg", share);
    relay->Begin(2);
    for (size_t k = from; k < to; ++k) {
      std::vector<float> d = devices[k];
      ASSERT_FL_OK(relay->Add(1000, &d));  // its claimed weight does not count
    }
    FixedSum sum;
    ASSERT_FL_OK(relay->FinishSum(&sum));
    EXPECT_TRUE(std::isnan(relay->epsilon()));  // a share accounts for nothing
    const int64_t n = static_cast<int64_t>(to - from);
    EXPECT_EQ(sum.weight, n);  // one per device
    ASSERT_FL_OK(root->Add({sum.weight, nullptr, &sum, n - relay->clipped()}));
  }
  ASSERT_FL_OK(root->Finish(&root_model, 1e9f));
  EXPECT_EQ(root->clipped(), flat->clipped());
  EXPECT_EQ(root->clipped(), 3);
  EXPECT_EQ(root->epsilon(), flat->epsilon());
  EXPECT_EQ(root->dp_clip(), flat->dp_clip());  // the same clip count moved it
  EXPECT_EQ(ModelVersion(root_model), ModelVersion(flat_model));
  // A relay's mean is clipped once more: a partial cannot move the sum by
  // more than its devices could. Counts out of range are refused.
  auto lying = MakePrivate("fedavg", p, 0.1);
  lying->Begin(2, {100.0, 21});
  FixedSum huge;
  const std::vector<float> big = {300, 400};
  ASSERT_FL_OK(AddWeighted(&huge, 2, big.data(), 2));  // two devices' "mean" of norm 500
  ASSERT_FL_OK(lying->Add({huge.weight, nullptr, &huge, 2}));
  // Scaled to the clip (1): (0.6, 0.8), within the rounding of scaling the
  // sum (half a unit of 2^-40 per value, over 2 devices) and of the double
  // product (2^-53 of 6.6e14 units).
  EXPECT_NEAR(FixedMean(huge.values[0], 2), 0.6, 1e-12);
  EXPECT_NEAR(FixedMean(huge.values[1], 2), 0.8, 1e-12);
  FixedSum d;
  const std::vector<float> zero = {0, 0};
  ASSERT_FL_OK(AddWeighted(&d, 2, zero.data(), 2));
  EXPECT_TRUE(lying->Add({d.weight, nullptr, &d, 3}).IsInvalidArgument());
  FixedSum none;
  none.values.assign(2, 0);
  EXPECT_TRUE(lying->Add({none.weight, nullptr, &none, 0}).IsInvalidArgument());
  EXPECT_FALSE(Make("fedavg")->Add({d.weight, nullptr, &d, 1}).ok());
}

// Exact aggregation (docs/protocol.md, "Exact sums"): every strategy ends with the
// same model, bit for bit, whatever order its updates come in. Deltas of
// magnitudes from 1e-9 to 1, where float or double sums in another order
// differ in the last bits; krum and multikrum see two identical deltas (a
// tie their choice must not break by arrival).
// `count` (weight, delta) updates of `values` values, weights in 1..max_weight,
// values N(0, 1) times 10^u, u uniform in [lo, hi) (seeded).
std::vector<std::pair<int64_t, std::vector<float>>> RandomUpdates(size_t count, size_t values,
                                                                  uint64_t seed,
                                                                  uint64_t max_weight, double lo,
                                                                  double hi) {
  Random rng(seed);
  std::vector<std::pair<int64_t, std::vector<float>>> updates(count);
  for (auto& [w, d] : updates) {
    w = 1 + static_cast<int64_t>(rng.Uniform(max_weight));
    d.resize(values);
    for (float& x : d) {
      x = static_cast<float>(rng.Normal() * std::pow(10.0, lo + (hi - lo) * rng.UniformDouble()));
    }
  }
  return updates;
}

TEST(ExactAggregationTest, EveryStrategyEndsAlikeInAnyOrder) {
  constexpr size_t kValues = 301;
  auto updates = RandomUpdates(9, kValues, 5, 5000, -9.0, 0.0);
  updates[8] = updates[3];
  for (const auto& name : StrategyNames()) {
    std::array<uint8_t, 32> first{};
    for (int order = 0; order < 3; ++order) {
      auto u = updates;
      if (order == 1) std::reverse(u.begin(), u.end());
      if (order == 2) std::rotate(u.begin(), u.begin() + 4, u.end());
      StrategyOptions o;
      o.name = name;
      o.krum_f = 2;
      auto a = Make(o);
      ModelState m = Model(kValues, 0.5f);
      const Status st = Round(a.get(), &m, u);
      ASSERT_TRUE(st.ok()) << name << ": " << st.ToString();
      if (order == 0) {
        first = ModelVersion(m);
      } else {
        EXPECT_EQ(ModelVersion(m), first) << name << ", order " << order;
      }
    }
  }
}

// Relays without privacy: each hands up its devices' exact sum and weight
// (FinishSum), the root adds them (Add, a partial), and the root's FedAvg and
// FedAdam end with the flat round's model, bit for bit; stacked relays (a
// relay's sum through another relay) too.
TEST(ExactAggregationTest, RelaysPartialSumsComposeToTheFlatRound) {
  constexpr size_t kValues = 97;
  const auto devices = RandomUpdates(7, kValues, 8, 600, -3.0, -3.0);
  auto relay_sum = [&](size_t from, size_t to) {
    auto relay = Make("fedavg");
    relay->Begin(kValues);
    for (size_t k = from; k < to; ++k) {
      std::vector<float> d = devices[k].second;
      EXPECT_FL_OK(relay->Add(devices[k].first, &d));
    }
    FixedSum sum;
    EXPECT_FL_OK(relay->FinishSum(&sum));
    return sum;
  };
  for (const char* name : {"fedavg", "fedadam"}) {
    auto flat = Make(name);
    ModelState flat_model = Model(kValues, 0.1f);
    ASSERT_FL_OK(Round(flat.get(), &flat_model, devices));
    // Two relays (devices 0-3, 4-6); the second's sum through a middle relay.
    FixedSum a = relay_sum(0, 4), b = relay_sum(4, 7);
    auto middle = Make("fedavg");
    middle->Begin(kValues);
    ASSERT_FL_OK(middle->Add({b.weight, nullptr, &b}));
    FixedSum b2;
    ASSERT_FL_OK(middle->FinishSum(&b2));
    auto root = Make(name);
    ModelState root_model = Model(kValues, 0.1f);
    root->Begin(kValues);
    ASSERT_FL_OK(root->Add({b2.weight, nullptr, &b2}));
    ASSERT_FL_OK(root->Add({a.weight, nullptr, &a}));
    ASSERT_FL_OK(root->Finish(&root_model, 1e9f));
    EXPECT_EQ(ModelVersion(root_model), ModelVersion(flat_model)) << name;
  }
  // A partial counted at less than its weight (the root's cap) keeps its
  // mean: half the weight, half the sum.
  FixedSum capped = relay_sum(0, 2);
  const FixedSum before = capped;
  auto root = Make("fedavg");
  root->Begin(kValues);
  ASSERT_FL_OK(root->Add({capped.weight / 2, nullptr, &capped}));
  EXPECT_EQ(capped.weight, before.weight / 2);
  for (size_t i = 0; i < kValues; ++i) {
    // Rounded once (half a unit), from double products and quotients taken
    // in another order than adding the partials' (2^-53 relative each, three of
    // them: within |want| 2^-51).
    const double want = static_cast<double>(before.values[i]) * capped.weight / before.weight;
    EXPECT_LE(std::fabs(static_cast<double>(capped.values[i]) - want),
              0.5 + std::fabs(want) * std::ldexp(1.0, -51))
        << i;
  }
  // More than its weight, or a size mismatch: refused.
  FixedSum more = relay_sum(0, 2);
  EXPECT_TRUE(root->Add({more.weight + 1, nullptr, &more}).IsInvalidArgument());
  more.values.pop_back();
  EXPECT_TRUE(root->Add({more.weight, nullptr, &more}).IsInvalidArgument());
  // A robust rule on a relay hands up its aggregate as the mean of the
  // total weight.
  auto median = Make("median");
  median->Begin(kValues);
  int64_t total = 0;
  for (size_t k = 0; k < 3; ++k) {
    std::vector<float> d = devices[k].second;
    total += devices[k].first;
    ASSERT_FL_OK(median->Add(devices[k].first, &d));
  }
  FixedSum med;
  ASSERT_FL_OK(median->FinishSum(&med));
  EXPECT_EQ(med.weight, total);
  std::vector<std::vector<float>> three;
  for (size_t k = 0; k < 3; ++k) three.push_back(devices[k].second);
  const std::vector<double> want = CoordinateMedian(three);
  for (size_t i = 0; i < kValues; ++i) {
    EXPECT_TRUE(med.values[i] == static_cast<FixedInt>(DoubleToFixed(want[i])) * total) << i;
  }
}

TEST(PrivateAggregatorTest, EpsilonIsTheAccountants) {
  PrivacyOptions p;
  p.noise_multiplier = 1.1;
  p.delta = 1e-5;
  auto a = MakePrivate("fedavgm", p, 0.05);
  RdpAccountant ref;
  ModelState m = Model(3);
  for (int r = 1; r <= 5; ++r) {
    a->Begin(3, {5.0, static_cast<uint64_t>(r)});
    std::vector<float> d = {0.1f, 0.2f, 0.3f};
    ASSERT_FL_OK(a->Add(10, &d));
    ASSERT_FL_OK(a->Finish(&m, 1e9f));
    ref.Compose(0.05, 1.1);
    EXPECT_EQ(a->epsilon(), ref.Epsilon(1e-5));  // the same code on the same inputs
  }
  EXPECT_GT(a->epsilon(), 0);
}

// Adaptive clipping (Andrew et al. 2021): C moves geometrically toward the
// target quantile of the deltas' norms: up while every delta is clipped, down
// while none is.
TEST(PrivateAggregatorTest, AdaptiveClipFollowsTheQuantile) {
  PrivacyOptions p;
  p.noise_multiplier = 0.5;
  p.clip = 1.0;
  p.adaptive_clip = true;
  p.target_quantile = 0.5;
  for (const float norm : {10.0f, 0.001f}) {
    auto a = MakePrivate("fedavg", p);
    ModelState m = Model(1);
    for (int r = 1; r <= 10; ++r) {
      a->Begin(1, {100.0, static_cast<uint64_t>(r)});
      for (int k = 0; k < 100; ++k) {
        std::vector<float> d = {norm};
        ASSERT_FL_OK(a->Add(1, &d));
      }
      ASSERT_FL_OK(a->Finish(&m, 1e9f));
    }
    // 10 rounds of exp(+-0.2 * 0.5), give or take the count's noise (sd 0.05):
    // e^1 = 2.72 up, e^-1 = 0.37 down; the bounds are about 20% either side.
    // Seeded.
    if (norm > 1) {
      EXPECT_GT(a->dp_clip(), 2.2);
      EXPECT_LT(a->dp_clip(), 3.3);
    } else {
      EXPECT_LT(a->dp_clip(), 0.45);
      EXPECT_GT(a->dp_clip(), 0.3);
    }
  }
  // Too few expected participants for the count's noise: refused, naming why.
  auto a = MakePrivate("fedavg", p);
  ModelState m = Model(1);
  a->Begin(1, {5.0, 1});
  p.noise_multiplier = 1.0;
  auto b = MakePrivate("fedavg", p);
  b->Begin(1, {5.0, 1});
  Status st = b->Finish(&m, 1e9f);
  EXPECT_NE(st.message().find("adaptive clipping"), std::string::npos) << st.ToString();
}

TEST(PrivateAggregatorTest, StateResumesBitForBitAndIsNotMixedUp) {
  PrivacyOptions p;
  p.noise_multiplier = 0.8;
  p.clip = 0.7;
  p.adaptive_clip = true;
  const std::vector<std::vector<float>> ds = {{0.5f, -1}, {0.1f, 0.2f}, {-0.7f, 0.05f}};
  auto run = [&](Aggregator* a, ModelState* m, size_t r) {
    a->Begin(2, {100.0, r + 1});
    std::vector<float> d = ds[r];
    ASSERT_FL_OK(a->Add(3, &d));
    ASSERT_FL_OK(a->Finish(m, 1e9f));
  };
  auto a = MakePrivate("fedadam", p);
  ModelState ma = Model(2);
  for (size_t r = 0; r < ds.size(); ++r) run(a.get(), &ma, r);
  auto b = MakePrivate("fedadam", p);
  ModelState mb = Model(2);
  run(b.get(), &mb, 0);
  auto c = MakePrivate("fedadam", p);
  ASSERT_FL_OK(c->LoadState(b->SaveState(), 2));
  EXPECT_EQ(c->dp_clip(), b->dp_clip());
  for (size_t r = 1; r < ds.size(); ++r) run(c.get(), &mb, r);
  EXPECT_EQ(mb.tensors[0].values, ma.tensors[0].values);
  EXPECT_EQ(c->epsilon(), a->epsilon());
  EXPECT_EQ(c->dp_clip(), a->dp_clip());
  // A private state is not resumed without privacy, nor the other way round.
  auto plain = Make("fedadam");
  EXPECT_FALSE(plain->LoadState(a->SaveState(), 2).ok());
  ModelState mp = Model(2);
  ASSERT_FL_OK(Round(plain.get(), &mp, {{1, {1, 1}}}));
  EXPECT_FALSE(MakePrivate("fedadam", p)->LoadState(plain->SaveState(), 2).ok());
  // An empty state is a run that released rounds without noise: refused too.
  EXPECT_FALSE(MakePrivate("fedavg", p)->LoadState("", 2).ok());
  // A private round that does not know its expected participants (a round log
  // from before they were recorded) is refused, not divided by zero.
  auto d = MakePrivate("fedavg", p);
  d->Begin(2, {0.0, 1});
  ModelState md = Model(2);
  EXPECT_FALSE(d->Finish(&md, 1e9f).ok());
  EXPECT_EQ(md.tensors[0].values, (std::vector<float>{0, 0}));
}

TEST(PrivateAggregatorTest, OnlyTheMeanCanBePrivate) {
  PrivacyOptions p;
  p.noise_multiplier = 1.0;
  StrategyOptions o;
  o.name = "median";
  EXPECT_FALSE(MakeAggregator(o, p, 0.1).ok());
  o.name = "fedavg";
  o.clip = 2;
  EXPECT_FALSE(MakeAggregator(o, p, 0.1).ok());
  o.clip = 0;
  EXPECT_FL_OK(MakeAggregator(o, p, 0.1));
}

// The fewest deltas a rule needs to resist anything (the server's
// --max-aggregation-mb may not cap a round below it).
TEST(AggregatorTest, RobustMinimumPerRule) {
  StrategyOptions o;
  o.name = "fedavg";
  EXPECT_EQ(RobustMinimum(o), 0);
  o.name = "fedyogi";
  EXPECT_EQ(RobustMinimum(o), 0);
  o.name = "median";
  EXPECT_EQ(RobustMinimum(o), 3);
  o.name = "trimmed_mean";
  o.trim_fraction = 0.1;
  EXPECT_EQ(RobustMinimum(o), 10);  // floor(0.1 K) >= 1
  o.trim_fraction = 0.4;
  EXPECT_EQ(RobustMinimum(o), 3);
  o.name = "krum";
  o.krum_f = 2;
  EXPECT_EQ(RobustMinimum(o), 7);
  o.name = "multikrum";
  EXPECT_EQ(RobustMinimum(o), 7);
}

}  // namespace
}  // namespace fl
