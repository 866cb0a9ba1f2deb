// The devices the server knows: the connection each is reachable on, when it
// was last heard from, what it registered with, and the rate of its HELLOs.
// Bounded: at capacity (--max-clients), a new device takes the place of the
// one heard from least recently that is neither live nor part of the open round.
#ifndef FEDGE_SERVER_REGISTRY_H_
#define FEDGE_SERVER_REGISTRY_H_

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

namespace fl {

struct ClientEntry {
  std::string peer;  // transport routing id of its current connection
  // False once a send to `peer` failed (the connection is gone); true again
  // when the client speaks on a connection.
  bool reachable{true};
  double unreachable_since{0};  // the server clock's time of the failed send
  // Newest HELLO freshness stamp seen from this node (wire::HelloStampOf).
  uint64_t hello_stamp{0};
  int64_t num_examples{0};
  // A relay's claim: the live devices it serves (its HELLO's; -1 when the
  // HELLO has none: a device).
  int64_t devices{-1};
  double last_seen{0};
  // HELLO token bucket (kHelloBurst tokens, kHelloPerSecond refill).
  double hello_tokens{0};
  double hello_refilled_at{0};
  // Its messages carry kFlagReadsExtensions: it gets optional fields (the
  // TASK's ask-before-upload, FedProx's mu) that older clients would refuse.
  bool reads_extensions{false};
  // It has no model of its own: its TASKs carry the signed TorchScript file.
  bool needs_model_code{false};
  // The delta codecs its HELLO lists (common/codec.h).
  std::vector<std::string> codecs;
};

class ClientRegistry {
 public:
  // HELLOs (and READYs) a device may send: a burst, then this many a second
  // (heartbeats are one every 2 s by default). The rest are dropped
  // unanswered: no signature is spent on a flood.
  static constexpr double kHelloBurst = 20;
  static constexpr double kHelloPerSecond = 10;

  // At most `capacity` devices; a device is live when reachable and heard
  // from within `timeout_seconds`.
  void Configure(size_t capacity, double timeout_seconds) {
    capacity_ = capacity;
    timeout_ = timeout_seconds;
  }

  std::map<std::string, ClientEntry>& entries() { return clients_; }
  const std::map<std::string, ClientEntry>& entries() const { return clients_; }

  // Takes a token from a known device's HELLO bucket (new devices pass: the
  // capacity bounds them).
  bool AllowHello(const std::string& id, double now);
  // A new device's full bucket, less the HELLO that registered it.
  static void StartHelloBucket(ClientEntry* c, double now);

  // Room for a new device: true when below capacity, or after evicting the
  // device heard from least recently that is neither live nor `in_round`.
  // False when every entry is one of those.
  bool MakeRoom(double now, const std::function<bool(const std::string&)>& in_round);

  // The live devices, sorted by id (appended to `*ids` when given).
  int Live(double now, std::vector<std::string>* ids) const;

 private:
  std::map<std::string, ClientEntry> clients_;
  size_t capacity_{10000};
  double timeout_{15};
};

}  // namespace fl

#endif  // FEDGE_SERVER_REGISTRY_H_
