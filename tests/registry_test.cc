// ClientRegistry (server/registry.h): liveness, the HELLO bucket, eviction at capacity.
#include "server/registry.h"

#include <gtest/gtest.h>

namespace fl {
namespace {

TEST(RegistryTest, LiveMeansReachableAndHeardFromRecently) {
  ClientRegistry r;
  r.Configure(10, 15);
  r.entries()["a"].last_seen = 100;
  r.entries()["b"].last_seen = 90;  // 20 s ago at t = 110
  r.entries()["c"].last_seen = 105;
  r.entries()["c"].reachable = false;
  std::vector<std::string> ids;
  EXPECT_EQ(r.Live(110, &ids), 1);
  EXPECT_EQ(ids, (std::vector<std::string>{"a"}));
}

TEST(RegistryTest, HelloBucketBurstsThenRefills) {
  ClientRegistry r;
  EXPECT_TRUE(r.AllowHello("new", 0));  // unknown devices pass (capacity bounds them)
  ClientEntry& c = r.entries()["d"];
  ClientRegistry::StartHelloBucket(&c, 0);
  int allowed = 0;
  for (int i = 0; i < 100; ++i) allowed += r.AllowHello("d", 0);
  EXPECT_EQ(allowed, ClientRegistry::kHelloBurst - 1);
  // One second later: kHelloPerSecond more.
  allowed = 0;
  for (int i = 0; i < 100; ++i) allowed += r.AllowHello("d", 1.0);
  EXPECT_EQ(allowed, ClientRegistry::kHelloPerSecond);
}

TEST(RegistryTest, AtCapacityTheStalestIdleDeviceMakesRoom) {
  ClientRegistry r;
  r.Configure(3, 15);
  r.entries()["live"].last_seen = 100;
  r.entries()["old"].last_seen = 10;
  r.entries()["older"].last_seen = 5;  // but in the open round
  auto in_round = [](const std::string& id) { return id == "older"; };
  EXPECT_TRUE(r.MakeRoom(110, in_round));
  EXPECT_EQ(r.entries().count("old"), 0u);
  EXPECT_EQ(r.entries().size(), 2u);
  r.entries()["new"].last_seen = 110;
  // Now everyone is live or in the round: no room.
  EXPECT_FALSE(r.MakeRoom(110, in_round));
  EXPECT_EQ(r.entries().size(), 3u);
}

}  // namespace
}  // namespace fl
