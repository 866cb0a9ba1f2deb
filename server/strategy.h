// A strategy: a rule that combines the round's updates into a pseudo-gradient
// and a server optimizer that steps with it (server/aggregator.h), with its
// state (momentum, moments) for checkpoints. Internal to the server library:
// MakeAggregator makes one, and the privacy decorator wraps one
// (server/private_aggregator.h), whose state it saves with its own.
#ifndef FEDGE_SERVER_STRATEGY_H_
#define FEDGE_SERVER_STRATEGY_H_

#include <memory>
#include <string>
#include <vector>

#include "server/aggregator.h"

namespace fl {

class Strategy : public Aggregator {
 public:
  // Whether the rule is the (exact, weighted) mean: the only one privacy can wrap.
  virtual bool is_mean() const = 0;

  // The state as SaveState writes it, marked private and followed by
  // `privacy` (the decorator's part) when `is_private`: one format, so a
  // private run's checkpoints read as they always have (docs/protocol.md).
  virtual std::string SaveStateWith(bool is_private, const std::string& privacy) const = 0;
  // Reads such a state: the strategy's part, and the privacy part into
  // `*privacy` (null: a state marked private is refused, naming the --dp-*
  // settings).
  virtual Status LoadStateWith(const std::string& state, size_t num_values,
                               std::string* privacy) = 0;
};

// The strategy `options` name (checked with CheckStrategyOptions).
Result<std::unique_ptr<Strategy>> MakeStrategy(const StrategyOptions& options);

}  // namespace fl

#endif  // FEDGE_SERVER_STRATEGY_H_
