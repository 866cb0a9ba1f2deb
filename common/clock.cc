#include "common/clock.h"

#include <algorithm>
#include <condition_variable>
#include <mutex>
#include <thread>

namespace fl {

namespace {

class SteadyClock final : public Clock {
 public:
  double Now() const override { return NowSeconds(); }
  void SleepFor(double seconds) const override {
    if (seconds > 0) std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  }
  bool WaitFor(double seconds, const std::function<bool()>& ready) const override {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, std::chrono::duration<double>(std::max(0.0, seconds)), ready);
  }
  void Notify() const override {
    { std::lock_guard<std::mutex> lock(mu_); }  // a waiter between its check and its wait
    cv_.notify_all();
  }

 private:
  mutable std::mutex mu_;
  mutable std::condition_variable cv_;
};

}  // namespace

const Clock* SystemClock() {
  static const SteadyClock clock;
  return &clock;
}

}  // namespace fl
