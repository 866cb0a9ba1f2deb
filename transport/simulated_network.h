// A whole federation in one process, in simulated time: an in-memory
// transport whose Poll waits on a simulated clock. Tests of liveness,
// deadlines and failover run the server and its devices as threads over it,
// and the server's own time decides what happens, not the machine's load.
//
// Time moves only when every participant waits (in Poll or in SleepFor): the
// clock then jumps to the earliest deadline any of them waits for. Work
// between waits (training, aggregation) takes no simulated time; delays a
// test asks for (a slow device, a slow evaluation) take exactly what they say.
//
// A participant is a thread that runs a server or a device. It takes part
// from Join() to Leave() (Participation does both), and only participants may
// wait on the network. Work handed to a thread outside (the server's
// evaluation) is counted with BeginWork()/EndWork() (common/clock.h).
//
// Semantics the server and devices rely on, as ZeroMQ has them: a listening
// socket routes by the id of each connecting socket; a connecting socket
// reaches whatever listens on its endpoint now (a restarted server on the same
// endpoint gets its messages); a frame over the receiver's max_frame_bytes
// drops the message; with CURVE on the listening side, a connecting socket
// must pin that side's key and be authorized, and receives the handshake
// error ZeroMQ's monitor would give otherwise. Nothing is encrypted: the keys
// only decide who may talk. One difference: a message sent while nothing
// listens on its endpoint is dropped (ZeroMQ queues it until a server binds).
// Notify() wakes WaitFor's waiters only, not Poll's: a thread that polls
// sees a change of state at its next timeout (the server's Pump looks every
// 0.2 s).
//
// Thread-safe: one mutex guards the network and its clock.
#ifndef FEDGE_TRANSPORT_SIMULATED_NETWORK_H_
#define FEDGE_TRANSPORT_SIMULATED_NETWORK_H_

#include <condition_variable>
#include <deque>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/clock.h"
#include "transport/transport.h"

namespace fl {
namespace transport {

class SimulatedNetwork final : public Context, public Clock {
 public:
  // The clock starts at `start_seconds` (non-zero: some code takes 0 for
  // "never").
  explicit SimulatedNetwork(double start_seconds = 1000.0);
  ~SimulatedNetwork() override;
  SimulatedNetwork(const SimulatedNetwork&) = delete;
  SimulatedNetwork& operator=(const SimulatedNetwork&) = delete;

  // Context. An endpoint is any string; one with a '*' (tcp://127.0.0.1:*)
  // gets a unique inproc:// name, which endpoint() returns.
  Result<std::unique_ptr<Socket>> Listen(const std::string& endpoint,
                                         const SocketOptions& options) override;
  Result<std::unique_ptr<Socket>> Connect(const std::string& endpoint,
                                          const SocketOptions& options) override;
  Result<int> Poll(const std::vector<Socket*>& sockets, int timeout_ms,
                   std::vector<bool>* ready) override;

  // Clock.
  double Now() const override;
  void SleepFor(double seconds) const override;
  void BeginWork() const override;
  void EndWork() const override;
  bool WaitFor(double seconds, const std::function<bool()>& ready) const override;
  void Notify() const override;

  // Participants (see above).
  void Join() { BeginWork(); }
  void Leave() { EndWork(); }
  class Participation {
   public:
    explicit Participation(SimulatedNetwork* net) : net_(net) { net_->Join(); }
    ~Participation() { net_->Leave(); }
    Participation(const Participation&) = delete;
    Participation& operator=(const Participation&) = delete;

   private:
    SimulatedNetwork* net_;
  };

  // Messages delivered and dropped so far (a test can check nothing was lost).
  int64_t delivered() const;
  int64_t dropped() const;

 private:
  class SimSocket;
  struct Waiter {
    double deadline;
    std::vector<const SimSocket*> sockets;
    const std::function<bool()>* ready{nullptr};  // WaitFor's
    bool woken{false};
  };

  // All with mu_ held.
  void Wait(std::unique_lock<std::mutex>* lock, double deadline,
            std::vector<const SimSocket*> sockets,
            const std::function<bool()>* ready = nullptr) const;
  void MaybeAdvance() const;
  void CheckBusy() const;  // aborts, naming the misuse, when busy_ < 0
  void Deliver(SimSocket* to, Received rx);
  Status SendFrom(SimSocket* from, const std::string& peer, std::vector<std::string> frames);
  void Remove(SimSocket* s);

  mutable std::mutex mu_;
  mutable std::condition_variable cv_;
  mutable double now_;
  mutable int busy_{0};
  mutable std::list<Waiter*> waiters_;
  std::map<std::string, SimSocket*> listeners_;  // by endpoint
  std::map<std::string, SimSocket*> connected_;  // by routing id
  int64_t next_id_{1};
  int64_t delivered_{0};
  int64_t dropped_{0};
};

}  // namespace transport
}  // namespace fl

#endif  // FEDGE_TRANSPORT_SIMULATED_NETWORK_H_
