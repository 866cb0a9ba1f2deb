// A fixed pool of threads that runs one loop at a time across all of them and
// the caller: Run(n, fn) calls fn(i, thread) for every i in [0, n) and returns
// when all calls have returned. What each call writes must be its own (its
// item's slot, or scratch indexed by `thread`); the caller's thread is thread
// 0. The server's ingest uses it to hash, verify and decode a batch of updates
// on every core while everything that touches its state stays on one thread.
#ifndef FEDGE_COMMON_WORKER_POOL_H_
#define FEDGE_COMMON_WORKER_POOL_H_

#include <condition_variable>
#include <cstddef>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace fl {

class WorkerPool {
 public:
  // `threads` >= 1 in all, the caller's included: threads - 1 are started.
  explicit WorkerPool(int threads);
  ~WorkerPool();
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  int threads() const { return static_cast<int>(workers_.size()) + 1; }

  // Calls fn(i, thread) for i in [0, n), thread in [0, threads()), each i
  // once; items are taken in order by whichever thread is free. One item (or
  // one thread) runs on the caller alone, without waking anyone. An exception
  // from fn stops the loop taking new items and is rethrown here once every
  // call under way has returned.
  void Run(size_t n, const std::function<void(size_t, int)>& fn);

 private:
  void Work(int thread);
  // Takes items of the current loop until none is left.
  void Drain(int thread);

  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable start_, done_;
  const std::function<void(size_t, int)>* fn_{nullptr};  // the current loop
  size_t n_{0};
  size_t next_{0};      // the next item to take
  size_t finished_{0};  // items whose call returned
  uint64_t generation_{0};
  std::exception_ptr error_;  // the loop's first exception
  bool stop_{false};
};

}  // namespace fl

#endif  // FEDGE_COMMON_WORKER_POOL_H_
