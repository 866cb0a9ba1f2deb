// A relay aggregator's upward half (fl-server --parent): the participant that
// stands for the relay's devices in the parent's rounds, and the session that
// carries it to the parent. The downward half is the relay's own Server,
// which runs each round the parent hands it (server/relay_link.h).
//
// To the parent a relay is one participant: it registers (HELLO) with the
// examples its live devices registered with, takes the parent's TASK,
// verifies it like any device would (the parent's signature, the model's
// version), and answers with one UPDATE, signed with the relay's key: the
// exact sum of its devices' weighted deltas (codec "x", common/fixed_point.h),
// their total weight as num_examples, and the number of devices as its
// contributors (wire::kUpdateContributors). The parent adds the integers, so
// its FedAvg over the relays' partials is its FedAvg over all their devices,
// bit for bit.
#ifndef FEDGE_RELAY_RELAY_H_
#define FEDGE_RELAY_RELAY_H_

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "client/participant.h"
#include "client/session.h"
#include "common/status.h"
#include "server/relay_link.h"
#include "server/server.h"
#include "transport/transport.h"

namespace fl {

class RelayParticipant final : public Participant {
 public:
  // `link` must outlive it; its model must be set (Server::Create does).
  // Test hooks: `weight_factor` != 1, a relay that lies about the weight of
  // its partials by that factor; `tamper`, one that changes the parent's
  // model before its devices get it.
  explicit RelayParticipant(RelayLink* link, double weight_factor = 1, bool tamper = false);

  const std::string& architecture() const override { return architecture_; }
  int64_t num_examples() const override { return link_->registered(); }
  int64_t devices() const override { return link_->devices(); }
  Result<std::vector<TensorLayout>> Layout(const std::string& architecture) override;
  size_t TaskPayloadLimit() const override;
  // Runs one round for the relay's devices. None answered: no examples and
  // the parent's own parameters (the parent refuses it, relay_empty, and so
  // stops waiting for this relay).
  Result<FitRes> Fit(const FitIns& ins, const EpochCallback& on_epoch = nullptr) override;

 private:
  RelayLink* link_;
  double weight_factor_;
  bool tamper_;
  std::string architecture_;
  std::vector<TensorLayout> layout_;
};

// Where the relay's parent is and who the relay is to it.
struct RelayUplinkOptions {
  // The parent's endpoint (tcp://root:5555).
  std::string parent;
  // The relay's identity (NAME.key): signs its UPDATEs, its CURVE key is
  // what the parent admits (enrolled in the parent's --relays folder).
  std::string key_path;
  // The parent's NAME.pub: the connection must reach it, and only what it
  // signed (TASKs, the model) is taken.
  std::string parent_key_path;
  // Plaintext to the parent (local experiments).
  bool insecure{false};
  // The relay's id with --insecure and no key.
  std::string id;
  bool verbose{true};
  // Test hook (fl-server --debug-relay-weight-factor): claim this many times
  // the partials' true weight, as a lying relay would.
  double debug_weight_factor{1};
  // Test hook (fl-server --debug-relay-tamper-model): change the parent's
  // model (its first kept value + 0.01) before the devices get it.
  bool debug_tamper_model{false};
};

// The session to the parent, on a thread of its own, until the parent's DONE
// (or `*stop`, or an error it cannot recover from); then it finishes `link`,
// which ends the relay's Server::Run.
class RelayUplink final {
 public:
  static Result<std::unique_ptr<RelayUplink>> Start(const RelayUplinkOptions& options,
                                                    std::shared_ptr<transport::Context> context,
                                                    RelayLink* link);
  // Stops the session (if it still runs) and joins its thread.
  ~RelayUplink();
  RelayUplink(const RelayUplink&) = delete;
  RelayUplink& operator=(const RelayUplink&) = delete;

  const ClientStats& stats() const { return session_->stats(); }
  const std::string& id() const { return session_->id(); }

 private:
  RelayUplink() = default;
  RelayLink* link_{nullptr};
  std::unique_ptr<SigningKey> key_;
  std::unique_ptr<RelayParticipant> participant_;
  std::unique_ptr<ClientSession> session_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

// One relay aggregator in this process (fl-server --parent, fl-sim's
// --relays, fl-bench-ingest --relays): its Server, whose rounds come
// through its own RelayLink, and the RelayUplink that carries them from the
// parent.
class Relay final {
 public:
  // The relay's server (`options.parent` is set here); Connect() then
  // starts its uplink, before Run or Start.
  static Result<std::unique_ptr<Relay>> Create(ServerOptions options,
                                               std::shared_ptr<transport::Context> context,
                                               const ModelRuntime& runtime);
  Status Connect(const RelayUplinkOptions& uplink, std::shared_ptr<transport::Context> context);
  // Stops the uplink, which ends Run, and joins a Start()ed thread.
  ~Relay();
  Relay(const Relay&) = delete;
  Relay& operator=(const Relay&) = delete;

  // The endpoint its devices connect to, and (once connected) its id at the
  // parent.
  std::string endpoint() const { return server_->endpoint(); }
  const std::string& id() const { return uplink_->id(); }

  // Runs its rounds until the parent's DONE (then its devices get DONE),
  // `*stop`, or an error (its session to the parent ended otherwise).
  Result<ServerSummary> Run(const std::atomic<bool>* stop, const RoundCallback& on_round);
  // The same on a thread of its own, setting `*failed` (when given) if it
  // ends in an error; Join() waits for it and returns its status.
  void Start(const std::atomic<bool>* stop, RoundCallback on_round,
             std::atomic<bool>* failed = nullptr);
  Status Join();

 private:
  Relay() = default;
  std::unique_ptr<RelayLink> link_;
  std::unique_ptr<Server> server_;
  std::unique_ptr<RelayUplink> uplink_;
  std::thread thread_;
  Status status_;
};

}  // namespace fl

#endif  // FEDGE_RELAY_RELAY_H_
