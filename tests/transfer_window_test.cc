// The transfer window's bookkeeping (server/transfer_window.h).
#include "server/transfer_window.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace fl {
namespace {

using Ids = std::vector<std::string>;

TEST(TransferWindowTest, GrantsWhileTheBytesFitThenInArrivalOrder) {
  TransferWindow w(/*window_bytes=*/100, /*grant_seconds=*/60);
  EXPECT_TRUE(w.Ask("a", 60, 0));
  EXPECT_FALSE(w.Ask("b", 60, 0));  // 120 > 100
  EXPECT_FALSE(w.Ask("c", 10, 0));  // would fit, but nobody overtakes b
  EXPECT_EQ(w.granted_bytes(), 60u);
  EXPECT_EQ(w.waiting(), 2u);
  EXPECT_EQ(w.Pump(1), Ids{});  // nothing released: nothing granted
  w.Release("a");
  EXPECT_EQ(w.Pump(1), (Ids{"b", "c"}));
  EXPECT_EQ(w.granted_bytes(), 70u);
  EXPECT_EQ(w.peak_granted_bytes(), 70u);
  EXPECT_EQ(w.queued(), 2);
}

TEST(TransferWindowTest, OneTransferIsAlwaysGrantedWhateverItsSize) {
  TransferWindow w(10, 60);
  EXPECT_TRUE(w.Ask("big", 1000, 0));
  EXPECT_FALSE(w.Ask("next", 1, 0));
  w.Release("big");
  EXPECT_EQ(w.Pump(0), Ids{"next"});
}

TEST(TransferWindowTest, AskingAgainKeepsTheGrantOrThePlace) {
  TransferWindow w(100, 60);
  EXPECT_TRUE(w.Ask("a", 80, 0));
  EXPECT_FALSE(w.Ask("b", 80, 0));
  EXPECT_TRUE(w.Ask("a", 80, 1));   // a reconnect asks again: still granted
  EXPECT_FALSE(w.Ask("b", 80, 1));  // still waiting, not queued twice
  EXPECT_EQ(w.granted_bytes(), 80u);
  EXPECT_EQ(w.waiting(), 1u);
  EXPECT_EQ(w.queued(), 1);
}

TEST(TransferWindowTest, ReleasingAWaitingDeviceDropsItsPlace) {
  TransferWindow w(100, 60);
  EXPECT_TRUE(w.Ask("a", 80, 0));
  EXPECT_FALSE(w.Ask("b", 80, 0));
  EXPECT_FALSE(w.Ask("c", 80, 0));
  w.Release("b");  // given up on
  w.Release("a");
  EXPECT_EQ(w.Pump(0), Ids{"c"});
}

// A transfer still on its way after hold_seconds (a slow link, or a device
// that asked and never sends) stops holding the others back; it stays granted.
TEST(TransferWindowTest, AGrantStopsCountingAfterHoldSeconds) {
  TransferWindow w(100, /*hold_seconds=*/5);
  EXPECT_TRUE(w.Ask("slow", 80, 0));
  EXPECT_FALSE(w.Ask("b", 80, 1));
  EXPECT_EQ(w.Pump(5), Ids{});  // not yet
  EXPECT_EQ(w.Pump(5.5), Ids{"b"});
  EXPECT_EQ(w.outlasted(), 1);
  EXPECT_EQ(w.granted_bytes(), 80u);  // b's only
  EXPECT_TRUE(w.Ask("slow", 80, 6));  // asking again: still granted, not counted again
  EXPECT_EQ(w.granted_bytes(), 80u);
  w.Release("slow");  // its transfer arrives
  EXPECT_EQ(w.granted_bytes(), 80u);
  w.Release("b");
  EXPECT_EQ(w.granted_bytes(), 0u);
  // Nothing counts any more: the next one goes at once, whatever its size.
  EXPECT_TRUE(w.Ask("c", 1000, 7));
}

TEST(TransferWindowTest, ZeroWindowGrantsEverything) {
  TransferWindow w(0, 60);
  for (int i = 0; i < 100; ++i) EXPECT_TRUE(w.Ask("d" + std::to_string(i), 1 << 20, 0));
  EXPECT_EQ(w.waiting(), 0u);
}

TEST(TransferWindowTest, ClearForgetsTheRound) {
  TransferWindow w(100, 60);
  EXPECT_TRUE(w.Ask("a", 80, 0));
  EXPECT_FALSE(w.Ask("b", 80, 0));
  w.Clear();
  EXPECT_EQ(w.granted_bytes(), 0u);
  EXPECT_EQ(w.waiting(), 0u);
  EXPECT_EQ(w.peak_granted_bytes(), 0u);
  EXPECT_EQ(w.queued(), 0);
  EXPECT_TRUE(w.Ask("b", 80, 1));
}

}  // namespace
}  // namespace fl
