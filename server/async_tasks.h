// The bookkeeping of buffered asynchronous FL (FedBuff, Nguyen et al.,
// AISTATS 2022): the tasks out on devices, what each was based on, and how
// much an update counts when it comes back some server steps later.
//
// Each device holds at most one task. A task is the server step it was
// handed out in (the TASK's round), its own random nonce (the UPDATE must
// return both, signed), the hash of the model it carries and the examples
// the device had registered. An update joins the buffer of the step being
// collected; its staleness tau is that step minus the task's step, its
// weight factor s(tau) = 1 / (1 + tau)^a, and past `max_staleness` it is
// refused (too_stale).
//
// The mask does not change in asynchronous mode, so a delta from an older
// model has the layout of the current one and is added to it as FedBuff
// does: the server keeps no old models, only the 32-byte hash of each
// outstanding task's (memory: O(concurrency), not O(versions x model)).
#ifndef FEDGE_SERVER_ASYNC_TASKS_H_
#define FEDGE_SERVER_ASYNC_TASKS_H_

#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace fl {

struct AsyncOptions {
  // Tasks kept out on devices at once.
  int concurrency{10};
  // Accepted updates per server step (K).
  int buffer{5};
  // a in s(tau) = 1 / (1 + tau)^a.
  double staleness_exponent{0.5};
  // Updates more than this many steps behind are refused.
  int max_staleness{10};
};

// The staleness weight s(tau) = 1 / (1 + tau)^a.
double StalenessWeight(uint32_t tau, double exponent);

class AsyncTasks {
 public:
  using Nonce = std::array<uint8_t, 16>;
  using Version = std::array<uint8_t, 32>;
  struct Task {
    uint64_t step{0};
    Nonce nonce{};
    Version base{};
    int64_t registered{0};
    double issued_at{0};
    // Sequence number of the task in the run (seeds its training).
    uint64_t serial{0};
  };

  explicit AsyncTasks(const AsyncOptions& o) : o_(o) {}

  const AsyncOptions& options() const { return o_; }
  size_t outstanding() const { return tasks_.size(); }
  // Tasks to hand out now to reach the concurrency.
  size_t Wanted() const {
    const size_t c = static_cast<size_t>(o_.concurrency);
    return tasks_.size() < c ? c - tasks_.size() : 0;
  }
  bool Has(const std::string& id) const { return tasks_.count(id) > 0; }
  const Task* Find(const std::string& id) const {
    auto it = tasks_.find(id);
    return it == tasks_.end() ? nullptr : &it->second;
  }

  // Records a task for `id` (replacing none: the caller hands tasks to idle
  // devices only).
  const Task& Issue(const std::string& id, uint64_t step, const Nonce& nonce, const Version& base,
                    int64_t registered, double now);

  // What an UPDATE (or READY) from `id` naming `round` and `nonce` is, while
  // step `step` is being collected.
  enum class Match { kOk, kNoTask, kWrongTask, kTooStale };
  Match Check(const std::string& id, uint64_t round, const Nonce& nonce, uint64_t step,
              uint32_t* staleness) const;

  // `id`'s TASK left now: its deadline runs from here.
  void Sent(const std::string& id, double now) {
    auto it = tasks_.find(id);
    if (it != tasks_.end()) it->second.issued_at = now;
  }

  // Ends `id`'s task (answered, refused, withdrawn); false if it had none.
  bool Close(const std::string& id) { return tasks_.erase(id) > 0; }

  // Closes and returns the tasks handed out (sent) before `now - deadline`,
  // and those more than max_staleness steps behind `step`, whose updates
  // could no longer count.
  struct Expired {
    std::string id;
    Task task;
    bool too_stale{false};
  };
  std::vector<Expired> Expire(double now, double deadline, uint64_t step);

  // Every task (the devices' ids).
  std::vector<std::string> Ids() const;
  void Clear() { tasks_.clear(); }
  uint64_t issued() const { return serial_; }

 private:
  AsyncOptions o_;
  std::map<std::string, Task> tasks_;
  uint64_t serial_{0};
};

}  // namespace fl

#endif  // FEDGE_SERVER_ASYNC_TASKS_H_
