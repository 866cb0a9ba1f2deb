// The simulator's attackers (experiments/sim/adversary.h), against hand-computed deltas.
#include "experiments/sim/adversary.h"

#include <gtest/gtest.h>

#include <cmath>

#include "experiments/sim/sim_config.h"
#include "tests/test_util.h"

namespace fl {
namespace {

double Norm(const std::vector<float>& v) {
  double sq = 0;
  for (float x : v) sq += static_cast<double>(x) * x;
  return std::sqrt(sq);
}

TEST(AdversaryTest, PoisonedDeltas) {
  const std::vector<float> honest = {3, -4, 0, 0};  // norm 5
  std::vector<float> d = honest;
  PoisonDelta(AdversaryKind::kSignFlip, 2, 1, &d);
  EXPECT_EQ(d, (std::vector<float>{-6, 8, 0, 0}));
  d = honest;
  PoisonDelta(AdversaryKind::kScale, 10, 1, &d);
  EXPECT_EQ(d, (std::vector<float>{30, -40, 0, 0}));
  d = honest;
  PoisonDelta(AdversaryKind::kSameValue, 1, 1, &d);  // 5 / sqrt(4) each
  EXPECT_EQ(d, (std::vector<float>{2.5f, 2.5f, 2.5f, 2.5f}));
  d = honest;
  PoisonDelta(AdversaryKind::kLabelFlip, 10, 1, &d);  // its poison is in the data
  EXPECT_EQ(d, honest);
  // Noise: the honest norm, nothing of the honest direction, seeded.
  std::vector<float> big(10000, 0.01f), a = big, b = big;
  PoisonDelta(AdversaryKind::kNoise, 1, 7, &a);
  PoisonDelta(AdversaryKind::kNoise, 1, 7, &b);
  EXPECT_EQ(a, b);
  // Each value is scaled in double and rounded once to float (2^-24
  // relative), which moves the norm (1.0) by at most 6e-8; the double sums
  // of squares add ~1e-12.
  EXPECT_NEAR(Norm(a), Norm(big), 1e-7);
  double dot = 0;
  for (size_t i = 0; i < a.size(); ++i) dot += static_cast<double>(a[i]) * big[i];
  // The cosine is ~N(0, 1/sqrt(n)), sd 0.01: 0.05 is 5 sd. Seeded.
  EXPECT_LT(std::fabs(dot) / (Norm(a) * Norm(big)), 0.05);
}

TEST(AdversaryTest, ChosenBySeedAndFraction) {
  const auto a = ChooseAdversaries(100, 0.2, 1);
  EXPECT_EQ(a.size(), 20u);
  EXPECT_TRUE(std::is_sorted(a.begin(), a.end()));
  EXPECT_EQ(a, ChooseAdversaries(100, 0.2, 1));
  EXPECT_NE(a, ChooseAdversaries(100, 0.2, 2));
  EXPECT_TRUE(ChooseAdversaries(100, 0, 1).empty());
  EXPECT_EQ(ChooseAdversaries(10, 0.3, 5).size(), 3u);
}

TEST(AdversaryTest, FlippedLabels) {
  Dataset d;
  d.count = 3;
  d.num_classes = 10;
  d.labels = {0, 3, 9};
  EXPECT_EQ(FlipLabels(d).labels, (std::vector<uint8_t>{9, 6, 0}));
}

TEST(AdversaryTest, ConfigKeysAreChecked) {
  test::TempDir dir;
  const std::string path = dir.path() + "/c.toml";
  test::WriteFile(path,
                  "strategy = \"multikrum\"\nkrum-f = 2\nclip = 4.5\n"
                  "[adversary]\nfraction = 0.2\nkind = \"same_value\"\nscale = 3\n");
  SimCommandLine line;
  ASSERT_FL_OK(ParseSimFlags({"--config", path}, &line));
  const SimConfig& c = line.config;
  EXPECT_EQ(c.adversary_fraction, 0.2);
  EXPECT_EQ(c.adversary_kind, "same_value");
  EXPECT_EQ(c.adversary_scale, 3);
  EXPECT_EQ(c.server.strategy.name, "multikrum");
  EXPECT_EQ(c.server.strategy.krum_f, 2);
  EXPECT_EQ(c.server.strategy.clip, 4.5);
  // The effective config round-trips.
  test::WriteFile(path, line.effective);
  SimCommandLine back;
  ASSERT_FL_OK(ParseSimFlags({"--config", path}, &back));
  EXPECT_EQ(back.config.adversary_kind, "same_value");
  EXPECT_EQ(back.config.server.strategy.krum_f, 2);
  Status st = ParseSimFlags({"--adversary-kind", "bribery"}, &back);
  EXPECT_NE(st.message().find("--adversary-kind"), std::string::npos) << st.ToString();
  EXPECT_FALSE(ParseSimFlags({"--strategy", "fedsgd"}, &back).ok());
  test::WriteFile(path, "[adversary]\nfracton = 0.2\n");
  st = ParseSimFlags({"--config", path}, &back);  // a typo is an error
  EXPECT_NE(st.message().find("unknown key 'adversary-fracton'"), std::string::npos)
      << st.ToString();
  EXPECT_NE(st.message().find("did you mean 'adversary-fraction'"), std::string::npos)
      << st.ToString();
}

}  // namespace
}  // namespace fl
