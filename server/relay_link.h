// The hand-off inside a relay aggregator (fl-server --parent): between the
// session that is a participant to the parent (client/session.h, on its own
// thread) and the server that is an aggregator to the relay's devices
// (server/server.h, on the thread that calls Server::Run).
//
// A round, from the relay's side:
//   1. the parent's TASK reaches the session, whose participant (RelayParticipant,
//      relay/relay.h) hands it over as a RelayTask and waits;
//   2. the server, which answers its devices meanwhile, takes the task: the
//      parent's model becomes its global model, the parent's round, seed and
//      hyperparameters its own; it runs one round for its devices;
//   3. it hands back the exact sum of its devices' weighted deltas (fixed
//      point), their total weight and how many devices answered: what the
//      parent needs of them, as one partial aggregate;
//   4. the session sends that up as the relay's UPDATE (signed by the relay).
// The parent's DONE ends the session; the server then tells its devices.
//
// Thread-safe; free of LibTorch and of the client library.
#ifndef FEDGE_SERVER_RELAY_LINK_H_
#define FEDGE_SERVER_RELAY_LINK_H_

#include <atomic>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/clock.h"
#include "common/fixed_point.h"
#include "common/model_state.h"
#include "common/status.h"
#include "common/wire/compact.h"
#include "common/wire/messages.h"

namespace fl {

// One round the parent asked for.
struct RelayTask {
  // The parent's round (the relay's round for its devices too).
  uint64_t round{0};
  // The parent's global model (with its masks).
  ModelState parameters;
  // The parent's hyperparameters, handed on: config.seed is the parent's seed
  // of the round and config.deadline_seconds the time the parent waits.
  wire::TrainConfig config;
  // The root's signed TASK envelope for this round and model, which the
  // relay's TASKs carry (wire::kTaskRootEndorsement), and the format the
  // model came in (the relay sends it in the same one, so its version is the
  // root's).
  std::string root_endorsement;
  wire::ValueFormat format{wire::ValueFormat::kFp32};
  // Test hook: attach the endorsement even to a model it does not match (a
  // relay that changed the model and hides it).
  bool debug_endorse_anyway{false};
};

// What the relay's devices made of it.
struct RelayResult {
  uint64_t round{0};
  // The exact sum of the accepted deltas, each weighted by its (capped)
  // examples, and their total weight (common/fixed_point.h): what the parent
  // adds to its own sum as integers. Under the root's privacy (the task's
  // config.dp_sampling_rate > 0): the sum of the contributors' clipped
  // deltas, each weighing one. Empty when no device answered.
  FixedSum sum;
  // Total weight (examples) of the accepted updates (sum.weight), and how
  // many devices they came from.
  int64_t weight{0};
  int64_t contributors{0};
  // Mean last-epoch training loss of the contributors.
  double train_loss{0};
  // Under the root's privacy: the contributors' deltas within the clip
  // before clipping; -1 otherwise.
  int64_t within_clip{-1};
};

class RelayLink {
 public:
  // Run's wait is on `clock` (the relay server's, ServerOptions::clock).
  explicit RelayLink(const Clock* clock = SystemClock()) : clock_(clock) {}
  const Clock* clock() const { return clock_; }

  // --- the session's side (the participant's Fit) ---

  // Hands `task` to the server and waits for its result, at most
  // `timeout_seconds` (a result with no contributors when no device
  // answered). Unavailable when the wait timed out or the relay is stopping
  // (the parent then goes without this relay's devices this round).
  Result<RelayResult> Run(RelayTask task, double timeout_seconds);

  // The session ended for good: `parent_done` when the parent ended the
  // federation (DONE); otherwise the relay stops with `why` as its error
  // and does not tell its devices the federation is over.
  void Finish(const std::string& why, bool parent_done = false);

  // Examples the relay's live devices registered with (its HELLO's claim to
  // the parent, at least 1), and the relay's model as the parent must send
  // it: its architecture and its tensors' names and shapes.
  int64_t registered() const { return registered_.load(); }
  // The live devices the relay serves, its own and its relays' (its HELLO's
  // claim: a private round's population).
  uint32_t devices() const { return devices_.load(); }
  std::string architecture() const;
  std::vector<std::pair<std::string, std::vector<int64_t>>> layout() const;

  // --- the server's side ---

  // Set once, when the relay's server is created.
  void SetModel(const ModelState& model);
  void SetRegistered(int64_t examples) { registered_.store(examples); }
  void SetDevices(uint32_t devices) { devices_.store(devices); }

  // A task is waiting, or the link is finished: the server should look.
  bool Ready() const;
  // Takes the waiting task; nullopt when there is none.
  std::optional<RelayTask> TakeTask();
  // The result of the round of `result.round` (or, with `error`, why it has
  // none). A result for a task the session gave up on is dropped.
  void Deliver(uint64_t round, Result<RelayResult> result);
  bool finished() const;
  bool parent_done() const;
  std::string finish_reason() const;

 private:
  const Clock* const clock_;
  mutable std::mutex mu_;
  std::optional<RelayTask> task_;
  std::optional<Result<RelayResult>> result_;
  uint64_t waiting_round_{0};  // the round Run waits for (0: none)
  bool finished_{false};
  bool parent_done_{false};
  std::string finish_reason_;
  std::string architecture_;
  std::vector<std::pair<std::string, std::vector<int64_t>>> layout_;
  std::atomic<int64_t> registered_{1};
  std::atomic<uint32_t> devices_{0};
};

}  // namespace fl

#endif  // FEDGE_SERVER_RELAY_LINK_H_
