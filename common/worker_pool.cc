#include "common/worker_pool.h"

#include <utility>

namespace fl {

WorkerPool::WorkerPool(int threads) {
  for (int t = 1; t < threads; ++t) workers_.emplace_back([this, t] { Work(t); });
}

WorkerPool::~WorkerPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  start_.notify_all();
  for (auto& w : workers_) w.join();
}

void WorkerPool::Run(size_t n, const std::function<void(size_t, int)>& fn) {
  if (n == 0) return;
  if (n == 1 || workers_.empty()) {
    for (size_t i = 0; i < n; ++i) fn(i, 0);
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    fn_ = &fn;
    n_ = n;
    next_ = 0;
    finished_ = 0;
    ++generation_;
  }
  start_.notify_all();
  Drain(0);
  std::unique_lock<std::mutex> lock(mu_);
  done_.wait(lock, [&] { return finished_ == n_; });
  fn_ = nullptr;
  if (error_) std::rethrow_exception(std::exchange(error_, nullptr));
}

void WorkerPool::Drain(int thread) {
  std::unique_lock<std::mutex> lock(mu_);
  while (fn_ != nullptr && next_ < n_) {
    const size_t i = next_++;
    const auto* fn = fn_;
    lock.unlock();
    std::exception_ptr error;
    try {
      (*fn)(i, thread);
    } catch (...) {
      error = std::current_exception();
    }
    lock.lock();
    if (error) {
      // The items no thread has taken count as done: the loop ends.
      if (!error_) error_ = error;
      finished_ += n_ - next_;
      next_ = n_;
    }
    if (++finished_ == n_) done_.notify_all();
  }
}

void WorkerPool::Work(int thread) {
  uint64_t seen = 0;
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      start_.wait(lock, [&] { return stop_ || generation_ != seen; });
      if (stop_) return;
      seen = generation_;
    }
    Drain(thread);
  }
}

}  // namespace fl
