// What a device sends for a TASK, shaped by a chain of filters on the
// training's result (as NVFlare's task result filters do): fault injection
// for experiments (a slower device, a device that drops out), a relay's
// partial aggregate passed up as it is, the delta from the task's model, and
// the round's codec with error feedback. ClientSession runs the chain; each
// filter is a small class with its own state, and a new one is a class here
// and a line in DeviceFilters.
#ifndef FEDGE_CLIENT_RESULT_FILTERS_H_
#define FEDGE_CLIENT_RESULT_FILTERS_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "client/participant.h"
#include "common/clock.h"
#include "common/codec.h"
#include "common/random.h"
#include "common/status.h"
#include "common/wire/messages.h"

namespace fl {

// One result on its way out.
struct Outgoing {
  // The task: its round, configuration and what training started from.
  uint64_t round{0};
  FitIns* ins{nullptr};
  // What training gave; `res.seconds` is what it counts as (a slower
  // device's), `compute_seconds` what this machine took.
  FitRes res;
  double compute_seconds{0};
  // The difference from the task's model (DeltaFilter), then encoded.
  std::vector<float> delta;
  bool finite{true};
  // What goes up.
  wire::Update update;
  // Nothing goes up (the device dropped out).
  bool dropped{false};
  // The UPDATE is complete: the filters after this one leave it.
  bool complete{false};
};

class ResultFilter {
 public:
  virtual ~ResultFilter() = default;
  // Shapes `out`; an error ends the task (the session says why).
  virtual Status Apply(Outgoing* out) = 0;
};

// Filters in order; stops early once a result is dropped or complete.
class FilterChain {
 public:
  void Add(std::unique_ptr<ResultFilter> f) { filters_.push_back(std::move(f)); }
  Status Apply(Outgoing* out) {
    for (auto& f : filters_) {
      if (out->dropped || out->complete) break;
      FL_RETURN_IF_ERROR(f->Apply(out));
    }
    return Status::OK();
  }

 private:
  std::vector<std::unique_ptr<ResultFilter>> filters_;
};

// What the chain of a device needs to know.
struct FilterOptions {
  // Test hook: seconds added to every local training (a slow device), slept
  // on `clock` (null: the steady clock).
  double train_delay_seconds{0};
  const Clock* clock{nullptr};
  // A device this many times slower (>= 1): the training counts as
  // slowdown x its time.
  double slowdown{1};
  // Probability of dropping out after training, drawn from `fault_seed`.
  double dropout{0};
  uint64_t fault_seed{1};
  // For log lines.
  std::string id;
  bool verbose{true};
};

// The chain of an fl-client or simulated device: train delay, slowdown,
// dropout, relay partial, delta, codec. `feedback` (not owned) carries the
// codec's residual across rounds; the session keeps it across restarts.
FilterChain DeviceFilters(const FilterOptions& o, ErrorFeedback* feedback);

}  // namespace fl

#endif  // FEDGE_CLIENT_RESULT_FILTERS_H_
