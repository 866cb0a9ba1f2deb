#include "server/relay_link.h"

#include <chrono>

namespace fl {

Result<RelayResult> RelayLink::Run(RelayTask task, double timeout_seconds) {
  std::unique_lock<std::mutex> lock(mu_);
  if (finished_) return Status::Unavailable("the relay is stopping");
  const uint64_t round = task.round;
  waiting_round_ = round;
  result_.reset();
  task_ = std::move(task);
  lock.unlock();
  (void)clock_->WaitFor(timeout_seconds, [this] {
    std::lock_guard<std::mutex> l(mu_);
    return result_.has_value() || finished_;
  });
  lock.lock();
  // Decided under the lock: a result may have come since the wait ended.
  const bool got = result_.has_value() || finished_;
  waiting_round_ = 0;
  task_.reset();  // (not taken yet: the server never starts it)
  if (!got) {
    return Status::Unavailable("round " + std::to_string(round) + ": the relay's devices took " +
                               "longer than the parent's deadline");
  }
  if (!result_) return Status::Unavailable("the relay is stopping");
  Result<RelayResult> out = std::move(*result_);
  result_.reset();
  return out;
}

void RelayLink::Finish(const std::string& why, bool parent_done) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!finished_) {
      finish_reason_ = why;
      parent_done_ = parent_done;
    }
    finished_ = true;
  }
  clock_->Notify();
}

std::string RelayLink::architecture() const {
  std::lock_guard<std::mutex> lock(mu_);
  return architecture_;
}

std::vector<std::pair<std::string, std::vector<int64_t>>> RelayLink::layout() const {
  std::lock_guard<std::mutex> lock(mu_);
  return layout_;
}

void RelayLink::SetModel(const ModelState& model) {
  std::lock_guard<std::mutex> lock(mu_);
  architecture_ = model.architecture;
  layout_.clear();
  for (const auto& t : model.tensors) layout_.emplace_back(t.name, t.shape);
}

bool RelayLink::Ready() const {
  std::lock_guard<std::mutex> lock(mu_);
  return task_.has_value() || finished_;
}

std::optional<RelayTask> RelayLink::TakeTask() {
  std::lock_guard<std::mutex> lock(mu_);
  std::optional<RelayTask> out = std::move(task_);
  task_.reset();
  return out;
}

void RelayLink::Deliver(uint64_t round, Result<RelayResult> result) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (waiting_round_ != round) return;  // the session gave up on it
    result_ = std::move(result);
  }
  clock_->Notify();
}

bool RelayLink::finished() const {
  std::lock_guard<std::mutex> lock(mu_);
  return finished_;
}

bool RelayLink::parent_done() const {
  std::lock_guard<std::mutex> lock(mu_);
  return parent_done_;
}

std::string RelayLink::finish_reason() const {
  std::lock_guard<std::mutex> lock(mu_);
  return finish_reason_;
}

}  // namespace fl
