#include "server/evaluator.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>

#include "common/clock.h"

namespace fl {

struct BackgroundEvaluator::Impl {
  std::unique_ptr<Evaluator> evaluator;  // used by the worker only
  double delay{0};
  const Clock* clock{nullptr};

  struct Finished {
    Evaluation e;
    double ready_at{0};  // clock time the delay ends
  };
  mutable std::mutex mu;
  std::condition_variable cv;
  std::deque<std::pair<uint64_t, ModelState>> queue;  // submitted, not started
  std::deque<Finished> finished;                      // done, not taken
  size_t outstanding{0};                              // submitted, not taken
  double last_ready{0};  // the previous evaluation's ready_at (the worker's only)
  bool stopping{false};
  std::thread worker;

  Finished Run(uint64_t round, const ModelState& state) {
    Finished f;
    f.e.round = round;
    const double t0 = clock->Now();
    f.e.status = evaluator->Evaluate(state, &f.e.accuracy, &f.e.mean_loss);
    if (!f.e.status.ok()) f.e.accuracy = f.e.mean_loss = std::nan("");
    // The delay runs after the evaluation, and after the previous one's: one
    // slow machine.
    const double done = clock->Now();
    const double start = std::max(t0, last_ready);
    f.ready_at = last_ready = start + (done - t0) + delay;
    f.e.seconds = (done - t0) + delay;
    return f;
  }

  void Loop() {
    std::unique_lock<std::mutex> lock(mu);
    while (true) {
      cv.wait(lock, [&] { return stopping || !queue.empty(); });
      if (stopping) return;
      auto job = std::move(queue.front());
      queue.pop_front();
      lock.unlock();
      Finished f = Run(job.first, job.second);
      lock.lock();
      finished.push_back(std::move(f));
      cv.notify_all();
      lock.unlock();
      clock->EndWork();  // begun by Submit
      lock.lock();
    }
  }

  Evaluation Pop() {
    Evaluation e = std::move(finished.front().e);
    finished.pop_front();
    outstanding--;
    return e;
  }
};

BackgroundEvaluator::BackgroundEvaluator(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

BackgroundEvaluator::~BackgroundEvaluator() {
  size_t dropped = 0;
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    impl_->stopping = true;
    dropped = impl_->queue.size();
  }
  impl_->cv.notify_all();
  if (impl_->worker.joinable()) impl_->worker.join();
  for (size_t i = 0; i < dropped; ++i) impl_->clock->EndWork();
}

std::unique_ptr<BackgroundEvaluator> BackgroundEvaluator::Create(
    std::unique_ptr<Evaluator> evaluator, double delay_seconds, const Clock* clock) {
  auto impl = std::make_unique<Impl>();
  impl->evaluator = std::move(evaluator);
  impl->delay = delay_seconds;
  impl->clock = clock ? clock : SystemClock();
  Impl* p = impl.get();
  impl->worker = std::thread([p] { p->Loop(); });
  return std::unique_ptr<BackgroundEvaluator>(new BackgroundEvaluator(std::move(impl)));
}

void BackgroundEvaluator::Submit(uint64_t round, ModelState model) {
  impl_->clock->BeginWork();  // ended by the worker
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    impl_->queue.emplace_back(round, std::move(model));
    impl_->outstanding++;
  }
  impl_->cv.notify_all();
}

std::optional<Evaluation> BackgroundEvaluator::TryTake() {
  const double now = impl_->clock->Now();
  std::lock_guard<std::mutex> lock(impl_->mu);
  if (impl_->finished.empty() || impl_->finished.front().ready_at > now) return std::nullopt;
  return impl_->Pop();
}

std::optional<Evaluation> BackgroundEvaluator::Take() {
  std::unique_lock<std::mutex> lock(impl_->mu);
  if (impl_->outstanding == 0) return std::nullopt;
  impl_->cv.wait(lock, [&] { return !impl_->finished.empty(); });
  const double ready_at = impl_->finished.front().ready_at;
  lock.unlock();
  impl_->clock->SleepFor(ready_at - impl_->clock->Now());
  lock.lock();
  return impl_->Pop();
}

size_t BackgroundEvaluator::outstanding() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->outstanding;
}

}  // namespace fl
