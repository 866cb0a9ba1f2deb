// Who a synchronous round asks: a seeded uniform sample of the live devices
// (with over-selection), or, in private rounds, Poisson sampling from a
// generator only the server can predict.
#ifndef FEDGE_SERVER_SELECTOR_H_
#define FEDGE_SERVER_SELECTOR_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace fl {

class SchedulerHost;

struct Selection {
  // The devices asked, and the updates that close the round.
  std::vector<std::string> ids;
  size_t target{0};
  // The population the selection was made from (a relay counting as the
  // devices it serves in a private round).
  int64_t population{0};
};

class Selector {
 public:
  virtual ~Selector() = default;
  // Selects from `live` (sorted by id) for round `r`.
  virtual Selection Select(std::vector<std::string> live, uint64_t r) = 0;
};

// max(1, round(fraction x live)) devices, times `over_selection` (the round
// closes at the first), shuffled by a generator seeded from `seed` and the
// round; at most `cap(want)` (what the rule can hold).
std::unique_ptr<Selector> UniformSelector(double fraction, double over_selection, uint64_t seed,
                                          std::function<int(int)> cap);

// Each live device independently with probability `rate()` (possibly none),
// as the privacy accountant assumes, from the host's secret seed (the
// amplification by sampling assumes nobody knows who was sampled). Relays are
// not sampled: each samples its own devices at that rate.
std::unique_ptr<Selector> PoissonSelector(const SchedulerHost* host, std::function<double()> rate);

}  // namespace fl

#endif  // FEDGE_SERVER_SELECTOR_H_
