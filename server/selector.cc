#include "server/selector.h"

#include <algorithm>
#include <cmath>

#include "common/random.h"
#include "server/scheduler.h"

namespace fl {

namespace {

class Uniform final : public Selector {
 public:
  Uniform(double fraction, double over_selection, uint64_t seed, std::function<int(int)> cap)
      : fraction_(fraction), over_selection_(over_selection), seed_(seed), cap_(std::move(cap)) {}

  Selection Select(std::vector<std::string> live, uint64_t r) override {
    Selection s;
    s.population = static_cast<int64_t>(live.size());
    Random rng(seed_ * 0x9E3779B97F4A7C15ULL + r);
    const int target = std::max(1, static_cast<int>(std::lround(fraction_ * live.size())));
    int want = static_cast<int>(std::ceil(over_selection_ * target - 1e-9));
    want = std::min(want, cap_(want));
    rng.Shuffle(&live);
    live.resize(std::min<size_t>(live.size(), want));
    s.target = std::min<size_t>(live.size(), target);
    s.ids = std::move(live);
    return s;
  }

 private:
  const double fraction_;
  const double over_selection_;
  const uint64_t seed_;
  const std::function<int(int)> cap_;
};

class Poisson final : public Selector {
 public:
  Poisson(const SchedulerHost* host, std::function<double()> rate)
      : host_(host), rate_(std::move(rate)) {}

  Selection Select(std::vector<std::string> live, uint64_t r) override {
    Selection s;
    Random rng(host_->SecretSeed("sample", r));
    const double rate = rate_();
    for (const auto& id : live) {
      s.population += host_->PopulationOf(id);
      if (host_->IsRelay(id) || rng.UniformDouble() < rate) s.ids.push_back(id);
    }
    s.target = s.ids.size();
    return s;
  }

 private:
  const SchedulerHost* host_;
  const std::function<double()> rate_;
};

}  // namespace

std::unique_ptr<Selector> UniformSelector(double fraction, double over_selection, uint64_t seed,
                                          std::function<int(int)> cap) {
  return std::make_unique<Uniform>(fraction, over_selection, seed, std::move(cap));
}

std::unique_ptr<Selector> PoissonSelector(const SchedulerHost* host, std::function<double()> rate) {
  return std::make_unique<Poisson>(host, std::move(rate));
}

}  // namespace fl
