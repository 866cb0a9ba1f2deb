// Monotonic wall time, for durations and deadlines.
#ifndef FEDGE_COMMON_CLOCK_H_
#define FEDGE_COMMON_CLOCK_H_

#include <chrono>

namespace fl {

// Seconds on the steady clock (arbitrary origin; only differences mean anything).
inline double NowSeconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace fl

#endif  // FEDGE_COMMON_CLOCK_H_
