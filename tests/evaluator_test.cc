// BackgroundEvaluator's test delay (--debug-eval-delay): an evaluation is
// taken no sooner than its delay after it finished, on the server's clock.
#include "server/evaluator.h"

#include <gtest/gtest.h>

#include <chrono>
#include <memory>

#include "transport/simulated_network.h"

namespace fl {
namespace {

// Accuracy 0.5 for every model, at once.
class FixedEvaluator final : public Evaluator {
 public:
  Status Evaluate(const ModelState&, double* accuracy, double* mean_loss) override {
    *accuracy = 0.5;
    *mean_loss = 1.0;
    return Status::OK();
  }
};

// In simulated time: not before the delay, exactly at it, and two in a row
// queue as on one slow machine.
TEST(BackgroundEvaluatorTest, TheDelayHoldsEachResultBackOnTheServersClock) {
  transport::SimulatedNetwork net;
  net.Join();
  auto ev = BackgroundEvaluator::Create(std::make_unique<FixedEvaluator>(), 3, &net);
  const double t0 = net.Now();
  ev->Submit(1, ModelState());
  ev->Submit(2, ModelState());
  EXPECT_FALSE(ev->TryTake().has_value());
  net.SleepFor(2.9);
  EXPECT_FALSE(ev->TryTake().has_value()) << "taken before its delay";
  net.SleepFor(0.1);
  auto first = ev->TryTake();
  ASSERT_TRUE(first.has_value());
  EXPECT_EQ(first->round, 1u);
  EXPECT_EQ(first->accuracy, 0.5);
  EXPECT_EQ(first->seconds, 3.0);
  // The second waited for the first: ready 6 s after the start. Take blocks
  // until then.
  auto second = ev->Take();
  ASSERT_TRUE(second.has_value());
  EXPECT_EQ(second->round, 2u);
  EXPECT_EQ(net.Now(), t0 + 6);
  EXPECT_EQ(ev->outstanding(), 0u);
  EXPECT_FALSE(ev->Take().has_value());
  ev.reset();
  net.Leave();
}

// On the steady clock (fl-server --debug-eval-delay): Take waits at least
// the delay.
TEST(BackgroundEvaluatorTest, TheDelayHoldsOnTheSteadyClock) {
  auto ev = BackgroundEvaluator::Create(std::make_unique<FixedEvaluator>(), 0.2);
  const auto t0 = std::chrono::steady_clock::now();
  ev->Submit(1, ModelState());
  EXPECT_FALSE(ev->TryTake().has_value());
  auto e = ev->Take();
  ASSERT_TRUE(e.has_value());
  EXPECT_GE(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 0.2);
  EXPECT_GE(e->seconds, 0.2);
}

}  // namespace
}  // namespace fl
