#include "common/clock.h"

#include <thread>

namespace fl {

namespace {

class SteadyClock final : public Clock {
 public:
  double Now() const override { return NowSeconds(); }
  void SleepFor(double seconds) const override {
    if (seconds > 0) std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  }
};

}  // namespace

const Clock* SystemClock() {
  static const SteadyClock clock;
  return &clock;
}

}  // namespace fl
