// WorkerPool: every item runs once, on one of the pool's threads, loop after
// loop; results depend on the items alone, not on which thread ran them.
#include "common/worker_pool.h"

#include <gtest/gtest.h>

#include <atomic>
#include <mutex>
#include <set>
#include <stdexcept>
#include <thread>
#include <vector>

namespace fl {
namespace {

TEST(WorkerPoolTest, EveryItemRunsOnceOnThePoolsThreads) {
  for (int threads : {1, 2, 4}) {
    SCOPED_TRACE(threads);
    WorkerPool pool(threads);
    EXPECT_EQ(pool.threads(), threads);
    for (size_t n : {0, 1, 2, 7, 100, 1000}) {
      std::vector<std::atomic<int>> runs(n);
      std::vector<int> by(n, -1);
      std::vector<uint64_t> squares(n);
      pool.Run(n, [&](size_t i, int thread) {
        runs[i]++;
        by[i] = thread;
        squares[i] = static_cast<uint64_t>(i) * i;
      });
      for (size_t i = 0; i < n; ++i) {
        EXPECT_EQ(runs[i].load(), 1) << i;
        EXPECT_GE(by[i], 0);
        EXPECT_LT(by[i], threads);
        EXPECT_EQ(squares[i], static_cast<uint64_t>(i) * i);
      }
    }
  }
}

// Items that wait on each other finish only if they run at once: a loop of
// `threads` items, each waiting for all to start, proves the threads are
// really in parallel (one thread alone would wait forever; the test's
// timeout would fail it).
TEST(WorkerPoolTest, ThreadsRunItemsAtOnce) {
  WorkerPool pool(3);
  std::atomic<int> started{0};
  std::set<int> threads_seen;
  std::mutex mu;
  pool.Run(3, [&](size_t, int thread) {
    started++;
    while (started.load() < 3) std::this_thread::yield();
    std::lock_guard<std::mutex> lock(mu);
    threads_seen.insert(thread);
  });
  EXPECT_EQ(threads_seen.size(), 3u);
}

// An exception from an item reaches the caller once every call under way has
// returned, and the pool runs the next loop as before.
TEST(WorkerPoolTest, AnExceptionReachesTheCallerAndThePoolGoesOn) {
  WorkerPool pool(2);
  std::atomic<int> ran{0};
  EXPECT_THROW(pool.Run(50,
                        [&](size_t i, int) {
                          ran++;
                          if (i == 3) throw std::runtime_error("item 3");
                        }),
               std::runtime_error);
  EXPECT_GE(ran.load(), 4);
  std::atomic<int> after{0};
  pool.Run(20, [&](size_t, int) { after++; });
  EXPECT_EQ(after.load(), 20);
}

}  // namespace
}  // namespace fl
