#include "server/evaluator.h"

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

  mutable std::mutex mu;
  std::condition_variable cv;
  std::deque<std::pair<uint64_t, ModelState>> queue;  // submitted, not started
  std::deque<Evaluation> finished;                    // done, not taken
  size_t outstanding{0};                              // submitted, not taken
  bool stopping{false};
  std::thread worker;

  Evaluation Run(uint64_t round, const ModelState& state) {
    Evaluation e;
    e.round = round;
    const double t0 = NowSeconds();
    e.status = evaluator->Evaluate(state, &e.accuracy, &e.mean_loss);
    if (!e.status.ok()) e.accuracy = e.mean_loss = std::nan("");
    if (delay > 0) std::this_thread::sleep_for(std::chrono::duration<double>(delay));
    e.seconds = NowSeconds() - t0;
    return e;
  }

  void Loop() {
    std::unique_lock<std::mutex> lock(mu);
    while (true) {
      cv.wait(lock, [&] { return stopping || !queue.empty(); });
      if (stopping) return;
      auto job = std::move(queue.front());
      queue.pop_front();
      lock.unlock();
      Evaluation e = Run(job.first, job.second);
      lock.lock();
      finished.push_back(std::move(e));
      cv.notify_all();
    }
  }
};

BackgroundEvaluator::BackgroundEvaluator(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

BackgroundEvaluator::~BackgroundEvaluator() {
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    impl_->stopping = true;
  }
  impl_->cv.notify_all();
  if (impl_->worker.joinable()) impl_->worker.join();
}

std::unique_ptr<BackgroundEvaluator> BackgroundEvaluator::Create(
    std::unique_ptr<Evaluator> evaluator, double delay_seconds) {
  auto impl = std::make_unique<Impl>();
  impl->evaluator = std::move(evaluator);
  impl->delay = delay_seconds;
  Impl* p = impl.get();
  impl->worker = std::thread([p] { p->Loop(); });
  return std::unique_ptr<BackgroundEvaluator>(new BackgroundEvaluator(std::move(impl)));
}

void BackgroundEvaluator::Submit(uint64_t round, ModelState model) {
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    impl_->queue.emplace_back(round, std::move(model));
    impl_->outstanding++;
  }
  impl_->cv.notify_all();
}

std::optional<Evaluation> BackgroundEvaluator::TryTake() {
  std::lock_guard<std::mutex> lock(impl_->mu);
  if (impl_->finished.empty()) return std::nullopt;
  Evaluation e = std::move(impl_->finished.front());
  impl_->finished.pop_front();
  impl_->outstanding--;
  return e;
}

std::optional<Evaluation> BackgroundEvaluator::Take() {
  std::unique_lock<std::mutex> lock(impl_->mu);
  if (impl_->outstanding == 0) return std::nullopt;
  impl_->cv.wait(lock, [&] { return !impl_->finished.empty(); });
  Evaluation e = std::move(impl_->finished.front());
  impl_->finished.pop_front();
  impl_->outstanding--;
  return e;
}

size_t BackgroundEvaluator::outstanding() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->outstanding;
}

}  // namespace fl
