// The round log's authentication (server/wal.h): with the server's key, a log
// is read back only with that key, and records anyone else appended end it.
#include "server/wal.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <string>
#include <vector>

#include "common/file_util.h"
#include "crypto/ed25519.h"
#include "tests/test_util.h"

namespace fl {
namespace {

WalHeader SampleHeader() {
  WalHeader h;
  h.round = 3;
  h.weight_cap = 600;
  h.norm_bound = 12.5;
  h.selected = {{"c0", 600}, {"c1", 300}};
  return h;
}

// The bytes of a log written with `key` holding `senders`' records.
std::string LogBytes(const std::string& dir, const WalKey& key,
                     const std::vector<std::string>& senders,
                     const WalHeader& header = SampleHeader()) {
  const std::string path = dir + "/round.wal";
  auto w = WalWriter::Create(path, header, /*durable=*/false, key);
  EXPECT_FL_OK(w);
  for (const auto& s : senders) EXPECT_FL_OK((*w)->Append(s, 100, 0.5, 1.0, "delta").status());
  w->reset();
  auto b = ReadFile(path);
  EXPECT_FL_OK(b);
  std::remove(path.c_str());
  return b.ok() ? *b : "";
}

WalKey KeyOf(uint8_t fill) {
  WalKey k = std::array<uint8_t, 32>{};
  k->fill(fill);
  return k;
}

TEST(WalTest, AKeyedLogReadsBackOnlyWithItsKey) {
  test::TempDir dir;
  const std::string log = LogBytes(dir.path(), KeyOf(1), {"c0", "c1"});
  auto c = ParseWal(log, KeyOf(1));
  ASSERT_FL_OK(c);
  EXPECT_EQ(c->entries.size(), 2u);
  EXPECT_FALSE(c->torn_tail);
  EXPECT_EQ(c->header.selected.size(), 2u);

  auto other = ParseWal(log, KeyOf(2));
  ASSERT_FALSE(other.ok());
  EXPECT_NE(other.status().message().find("not written with this server's key"), std::string::npos)
      << other.status().ToString();
  auto keyless = ParseWal(log, std::nullopt);
  ASSERT_FALSE(keyless.ok());
  EXPECT_NE(keyless.status().message().find("--key"), std::string::npos);
  // A log without a key is not resumed by a server that has one.
  auto plain = ParseWal(LogBytes(dir.path(), std::nullopt, {"c0"}), KeyOf(1));
  ASSERT_FALSE(plain.ok());
  EXPECT_NE(plain.status().message().find("not authenticated"), std::string::npos);
}

// A record appended by someone without the key (here: the same record from a
// log with another key, and from an unkeyed one) is where the log ends.
TEST(WalTest, RecordsAppendedWithoutTheKeyEndTheLog) {
  test::TempDir dir;
  const std::string mine = LogBytes(dir.path(), KeyOf(1), {"c0"});
  for (const WalKey& forger : {KeyOf(2), WalKey()}) {
    const std::string header_only = LogBytes(dir.path(), forger, {});
    const std::string theirs = LogBytes(dir.path(), forger, {"c1"});
    const std::string forged_record = theirs.substr(header_only.size());
    auto c = ParseWal(mine + forged_record, KeyOf(1));
    ASSERT_FL_OK(c);
    ASSERT_EQ(c->entries.size(), 1u);
    EXPECT_EQ(c->entries[0].sender, "c0");
    EXPECT_TRUE(c->torn_tail);
    EXPECT_EQ(c->valid_bytes, mine.size());
  }
}

// With the server's own key: a record copied from another of its logs (another
// round's, or the same round of another run: another nonce) is not valid in
// this one, nor is a record moved within the log.
TEST(WalTest, RecordsAreBoundToTheirLogAndPlace) {
  test::TempDir dir;
  WalHeader other = SampleHeader();
  other.nonce.fill(7);
  const std::string mine = LogBytes(dir.path(), KeyOf(1), {"c0"});
  const std::string theirs_header = LogBytes(dir.path(), KeyOf(1), {}, other);
  const std::string theirs = LogBytes(dir.path(), KeyOf(1), {"c1"}, other);
  auto c = ParseWal(mine + theirs.substr(theirs_header.size()), KeyOf(1));
  ASSERT_FL_OK(c);
  ASSERT_EQ(c->entries.size(), 1u);
  EXPECT_TRUE(c->torn_tail);

  // Two records swapped: the log ends where the order breaks.
  const std::string header = LogBytes(dir.path(), KeyOf(1), {});
  const std::string one = LogBytes(dir.path(), KeyOf(1), {"c0"});
  const std::string two = LogBytes(dir.path(), KeyOf(1), {"c0", "c1"});
  const std::string first = one.substr(header.size());
  const std::string second = two.substr(one.size());
  auto swapped = ParseWal(header + second + first, KeyOf(1));
  ASSERT_FL_OK(swapped);
  EXPECT_TRUE(swapped->entries.empty());
  auto in_order = ParseWal(header + first + second, KeyOf(1));
  ASSERT_FL_OK(in_order);
  EXPECT_EQ(in_order->entries.size(), 2u);
}

// Reopened after a crash, a keyed log goes on from its last record's tag.
TEST(WalTest, AReopenedLogContinuesItsChain) {
  test::TempDir dir;
  const std::string path = dir.path() + "/round.wal";
  {
    auto w = WalWriter::Create(path, SampleHeader(), /*durable=*/false, KeyOf(1));
    ASSERT_FL_OK(w);
    ASSERT_FL_OK((*w)->Append("c0", 100, 0.5, 1.0, "delta").status());
  }
  auto c = WalReadAll(path, KeyOf(1));
  ASSERT_FL_OK(c);
  {
    auto w = WalWriter::Reopen(path, *c, /*durable=*/false, KeyOf(1));
    ASSERT_FL_OK(w);
    ASSERT_FL_OK((*w)->Append("c1", 100, 0.5, 1.0, "delta").status());
  }
  auto after = WalReadAll(path, KeyOf(1));
  ASSERT_FL_OK(after);
  ASSERT_EQ(after->entries.size(), 2u);
  EXPECT_FALSE(after->torn_tail);
}

TEST(WalTest, TheKeyIsTheServersAndTheSameAfterARestart) {
  auto a = SigningKey::Generate();
  auto b = SigningKey::Generate();
  ASSERT_FL_OK(a);
  ASSERT_FL_OK(b);
  EXPECT_FALSE(WalKeyFor(nullptr).has_value());
  ASSERT_TRUE(WalKeyFor(&*a).has_value());
  EXPECT_EQ(WalKeyFor(&*a), WalKeyFor(&*a));
  EXPECT_NE(WalKeyFor(&*a), WalKeyFor(&*b));
}

// Asynchronous mode: each update's staleness is in its record, so a step
// reopened after a crash weights its buffered updates as before.
TEST(WalTest, EachRecordKeepsItsStaleness) {
  test::TempDir dir;
  for (const WalKey& key : {WalKey{}, KeyOf(3)}) {
    const std::string path = dir.path() + "/step.wal";
    auto w = WalWriter::Create(path, SampleHeader(), /*durable=*/false, key,
                               /*with_staleness=*/true);
    ASSERT_FL_OK(w);
    auto a = (*w)->Append("c0", 100, 0.5, 1.0, "fresh", 0);
    auto b = (*w)->Append("c1", 100, 0.5, 1.0, "stale", 3);
    ASSERT_FL_OK(a);
    ASSERT_FL_OK(b);
    EXPECT_EQ(b->staleness, 3u);
    auto rec = (*w)->Read(*b);
    ASSERT_FL_OK(rec);
    EXPECT_EQ(rec->staleness, 3u);
    EXPECT_EQ(rec->delta, "stale");
    w->reset();
    auto c = WalReadAll(path, key);
    ASSERT_FL_OK(c);
    ASSERT_EQ(c->entries.size(), 2u);
    EXPECT_EQ(c->entries[0].staleness, 0u);
    EXPECT_EQ(c->entries[1].staleness, 3u);
    EXPECT_EQ(c->header.format, key ? 6u : 5u);
    // Reopened, it appends records of its own format.
    auto again = WalWriter::Reopen(path, *c, /*durable=*/false, key);
    ASSERT_FL_OK(again);
    ASSERT_FL_OK((*again)->Append("c2", 100, 0.5, 1.0, "later", 7).status());
    again->reset();
    c = WalReadAll(path, key);
    ASSERT_FL_OK(c);
    ASSERT_EQ(c->entries.size(), 3u);
    EXPECT_EQ(c->entries[2].staleness, 7u);
    EXPECT_FALSE(c->torn_tail);
  }
  // Synchronous rounds write the format older servers read (3, keyed 4).
  auto sync = WalWriter::Create(dir.path() + "/round.wal", SampleHeader(), false, KeyOf(3));
  ASSERT_FL_OK(sync);
  ASSERT_FL_OK((*sync)->Append("c0", 100, 0.5, 1.0, "d").status());
  sync->reset();
  auto read = WalReadAll(dir.path() + "/round.wal", KeyOf(3));
  ASSERT_FL_OK(read);
  EXPECT_EQ(read->header.format, 4u);
  ASSERT_EQ(read->entries.size(), 1u);
  EXPECT_EQ(read->entries[0].staleness, 0u);
}

// A server with relays: each record keeps the devices it averages (versions
// 7 and 8), so a round reopened after a crash caps relays' partials as the
// uninterrupted round did (Server's CapPartials reads them from the log).
TEST(WalTest, EachRecordKeepsItsContributors) {
  test::TempDir dir;
  for (const WalKey& key : {WalKey{}, KeyOf(3)}) {
    const std::string path = dir.path() + "/relayed.wal";
    auto w = WalWriter::Create(path, SampleHeader(), /*durable=*/false, key,
                               /*with_staleness=*/false, /*with_contributors=*/true);
    ASSERT_FL_OK(w);
    auto a = (*w)->Append("relay0", 30000, 0.5, 1.0, "partial", 0, 4);
    auto b = (*w)->Append("dev9", 600, 0.5, 1.0, "own", 0, 1);
    // A private partial: 5 devices, 3 of whose deltas were within the clip.
    auto p = (*w)->Append("relay2", 5, 0.5, 1.0, "private", 0, 5, 3);
    ASSERT_FL_OK(a);
    ASSERT_FL_OK(b);
    ASSERT_FL_OK(p);
    EXPECT_EQ(a->contributors, 4u);
    EXPECT_EQ(a->within_clip, -1);
    EXPECT_EQ(p->within_clip, 3);
    auto rec = (*w)->Read(*a);
    ASSERT_FL_OK(rec);
    EXPECT_EQ(rec->contributors, 4u);
    EXPECT_EQ(rec->delta, "partial");
    w->reset();
    auto c = WalReadAll(path, key);
    ASSERT_FL_OK(c);
    EXPECT_EQ(c->header.format, key ? 10u : 9u);
    ASSERT_EQ(c->entries.size(), 3u);
    EXPECT_EQ(c->entries[0].contributors, 4u);
    EXPECT_EQ(c->entries[1].contributors, 1u);
    EXPECT_EQ(c->entries[0].within_clip, -1);
    EXPECT_EQ(c->entries[1].within_clip, -1);
    EXPECT_EQ(c->entries[2].contributors, 5u);
    EXPECT_EQ(c->entries[2].within_clip, 3);
    auto again = WalWriter::Reopen(path, *c, /*durable=*/false, key);
    ASSERT_FL_OK(again);
    ASSERT_FL_OK((*again)->Append("relay1", 20000, 0.5, 1.0, "later", 0, 3).status());
    again->reset();
    c = WalReadAll(path, key);
    ASSERT_FL_OK(c);
    ASSERT_EQ(c->entries.size(), 4u);
    EXPECT_EQ(c->entries[3].contributors, 3u);
    EXPECT_EQ(c->entries[2].within_clip, 3);
  }
}

}  // namespace
}  // namespace fl
