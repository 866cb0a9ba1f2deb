// Time, for durations and deadlines: the steady clock, or a simulated one a
// test drives (transport/simulated_network.h), injected where time is read.
#ifndef FEDGE_COMMON_CLOCK_H_
#define FEDGE_COMMON_CLOCK_H_

#include <chrono>
#include <functional>

namespace fl {

// Seconds on the steady clock (arbitrary origin; only differences mean anything).
inline double NowSeconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// A source of time. Every thread that reads it may also wait on it.
//
// A simulated clock moves only when every thread taking part in the
// simulation waits (on the clock or on a simulated transport's Poll): it then
// jumps to the earliest deadline among them. Work a thread does between its
// waits takes no simulated time, unless it is work another thread hands over:
// such work is begun with BeginWork() by the handing thread and ended with
// EndWork() by the one doing it, and the clock stands still in between.
class Clock {
 public:
  virtual ~Clock() = default;
  // Seconds; only differences mean anything.
  virtual double Now() const = 0;
  // Blocks the calling thread for `seconds` of this clock's time.
  virtual void SleepFor(double seconds) const = 0;
  virtual void BeginWork() const {}
  virtual void EndWork() const {}
  // Waits until `ready()` holds or `seconds` of this clock's time passed;
  // returns whether it holds. `ready` is checked at the start and after each
  // Notify(), under the clock's own lock: it may take its own locks (the
  // caller must hold none of them) but must not call the clock. Whoever
  // changes what it reads calls Notify() after releasing them.
  virtual bool WaitFor(double seconds, const std::function<bool()>& ready) const = 0;
  virtual void Notify() const = 0;
};

// The steady clock. Never null; lives for the whole process.
const Clock* SystemClock();

}  // namespace fl

#endif  // FEDGE_COMMON_CLOCK_H_
