// The networked edge client: one connection to an aggregator, driven step by step.
//
// Protocol, from the client's side:
//   connect, send HELLO; repeat HELLO every heartbeat while idle (the server
//   answers each, which is how both sides know the other is alive);
//   on TASK: train with the task's hyperparameters, send UPDATE (delta from
//   the task's model), wait for ACK/REJECT, go back to idle;
//   on DONE: finished.
//   The server answers every HELLO and UPDATE at once. If a message of ours has
//   gone unanswered for server_timeout (counted from when we sent it, so time
//   spent training does not count), the socket is dropped and re-created after
//   a backoff (doubling up to backoff_max), then HELLO again: this is how a
//   client follows a restarted server. The new connection is a new route at
//   the server; its HELLO replaces the old one, and a TASK lost with the old
//   connection is sent again.
//   A refusal that retrying cannot fix (wrong architecture, no common codec,
//   a HELLO the server cannot accept) ends the session with FailedPrecondition.
//
// A ClientSession never blocks except while training. fl-client runs one in a
// loop; fl-sim's workers each drive many over one Context::Poll.
#ifndef FEDGE_CLIENT_SESSION_H_
#define FEDGE_CLIENT_SESSION_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "client/participant.h"
#include "common/clock.h"
#include "common/status.h"
#include "transport/transport.h"

namespace fl {

class SigningKey;

struct ClientOptions {
  // Server endpoint, e.g. "tcp://10.0.0.5:5555".
  std::string server;
  // This client's id (1-32 printable ASCII bytes).
  std::string id;
  // Seconds between HELLOs while idle.
  double heartbeat_seconds{2.0};
  // Seconds a message to the server may go unanswered before reconnecting.
  double server_timeout_seconds{15.0};
  // Seconds between the progress lines of a training round (with
  // `verbose`); 0: none.
  double progress_seconds{5.0};
  // Where the device keeps what a restart must not lose (client/device_state.h):
  // its error-feedback residual and its counters. Empty: nothing kept.
  std::string state_dir;
  // Test hook: seconds added to every local training (a slow device).
  double debug_train_delay_seconds{0};
  // A device this many times slower than this machine (>= 1): a training
  // that took t seconds is held back a further (slowdown - 1) x t before its
  // update goes out (the session keeps answering meanwhile, so a simulator's
  // worker can run other virtual devices), and reports slowdown x t.
  double slowdown{1};
  // Probability that the device drops out of a task after training: its
  // update is never sent (a phone that went out of coverage). Drawn from
  // `fault_seed`, so a run is reproducible.
  double dropout{0};
  uint64_t fault_seed{1};
  // Reconnect backoff: first wait and cap, in seconds.
  double backoff_initial_seconds{0.5};
  double backoff_max_seconds{10.0};
  // Largest frame accepted from the server.
  size_t max_frame_bytes{64u << 20};
  // Log each round at info level (off for simulations with many clients).
  bool verbose{true};
  // This device's signing key; when set, every message is signed with it and
  // `id` should be NodeId(key->public_key()), the id the server enrolled.
  // Not owned; must outlive the session.
  const SigningKey* key{nullptr};
  // The server's pinned public key; when set, every message from the server
  // must carry a valid signature by it, or it is dropped before decoding.
  std::optional<std::array<uint8_t, 32>> server_key;
  // The root aggregator's key, for a device under relay aggregators: every
  // TASK must carry the root's signed envelope for its round and model
  // (wire::kTaskRootEndorsement), or come from the root itself; otherwise it
  // is dropped unread. Unset: the server's signature is all that is checked.
  std::optional<std::array<uint8_t, 32>> root_key;
  // A device started without a model, with `server_key` pinned: the folder
  // where the server's TorchScript file is kept once its signature checks out
  // (Participant::AdoptModelFile). Empty: such a device follows built-in
  // models only.
  std::string model_cache_dir;
  // ZeroMQ's own heartbeats on the connection (transport::SocketOptions):
  // they find a connection whose peer vanished without closing it. A
  // simulation on one machine turns them off: each costs a timer in ZeroMQ's
  // I/O thread, and with thousands of connections re-arming them is most of
  // its work.
  bool transport_heartbeats{true};
  // Encrypted transport: this device's CURVE key pair and the server's CURVE
  // public key (from the identity files). Empty secret = plaintext (--insecure).
  transport::CurveOptions curve;
  // Failover (a device under several relay aggregators, docs/relays.md):
  // further servers, tried in turn, each with its own pinned keys as
  // `server_key` and `curve.server_key` are for `server`. The session moves
  // to the next one when the current one leaves a message unanswered for
  // server_timeout or refuses the handshake, and back to `server` after the
  // last.
  struct Alternate {
    std::string endpoint;
    std::optional<std::array<uint8_t, 32>> server_key;
    std::string curve_server_key;
  };
  std::vector<Alternate> alternates;
  // The session's time: heartbeats, timeouts, backoff, slowdowns. Null: the
  // steady clock. A federation in simulated time passes its
  // transport::SimulatedNetwork. Not owned.
  const Clock* clock{nullptr};
};

// Counters a session keeps for reports and tests.
struct ClientStats {
  int64_t rounds_trained{0};
  int64_t updates_accepted{0};
  int64_t updates_rejected{0};
  int64_t reconnects{0};
  int64_t bad_messages{0};        // malformed or unexpected messages from the server
  int64_t handshake_failures{0};  // CURVE handshakes the server refused or that failed
  uint64_t bytes_sent{0};
  uint64_t bytes_received{0};
  double train_seconds{0};  // total local training time (with the slowdown)
  double last_train_seconds{0};
  int64_t dropped_out{0};  // tasks trained but not answered (ClientOptions::dropout)
  int64_t withdrawn{0};    // tasks the server withdrew (over-selection closed the round)

  // Adds another session's counts (a device that left and rejoined).
  void Add(const ClientStats& o) {
    rounds_trained += o.rounds_trained;
    updates_accepted += o.updates_accepted;
    updates_rejected += o.updates_rejected;
    reconnects += o.reconnects;
    bad_messages += o.bad_messages;
    handshake_failures += o.handshake_failures;
    bytes_sent += o.bytes_sent;
    bytes_received += o.bytes_received;
    train_seconds += o.train_seconds;
    last_train_seconds = o.last_train_seconds;
    dropped_out += o.dropped_out;
    withdrawn += o.withdrawn;
  }
};

class ClientSession final {
 public:
  // `client` does the training; it must outlive the session.
  ClientSession(ClientOptions options, std::shared_ptr<transport::Context> context,
                Participant* client);
  ~ClientSession();
  ClientSession(const ClientSession&) = delete;
  ClientSession& operator=(const ClientSession&) = delete;

  // Connects and sends the first HELLO.
  Status Start();

  // Handles every message waiting on the socket (training inline on a TASK),
  // then sends a heartbeat or reconnects if one is due. Errors are returned only
  // for conditions the session cannot recover from (FailedPrecondition: the
  // server refuses this client for a reason retrying cannot fix); a malformed
  // message is counted, logged and dropped.
  Status Step();

  // The socket to poll; changes after a reconnect. Null while backing off.
  transport::Socket* socket() const;

  // Seconds until Step() has timed work to do (heartbeat, reconnect).
  double SecondsUntilDue() const;

  // The session's time (ClientOptions::clock).
  const Clock& clock() const;

  // True once the server sent DONE.
  bool done() const;
  // Nothing of a round in hand: no update trained and not yet sent or not
  // yet answered. The moment a device may leave (a training window closed).
  bool idle() const;
  // The server's closing message (valid when done()).
  const std::string& done_message() const;

  const ClientStats& stats() const;
  const std::string& id() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Runs `session` until DONE, `*stop` becomes true, `leave_when_idle` says so
// while the session is idle(), or an unrecoverable error.
Status RunClient(ClientSession* session, std::shared_ptr<transport::Context> context,
                 const std::atomic<bool>* stop,
                 const std::function<bool()>& leave_when_idle = nullptr);

}  // namespace fl

#endif  // FEDGE_CLIENT_SESSION_H_
