// Devices as threads of the test process, for tests about a server (a crash,
// relays, exact sums) whose devices need not be processes: each one runs
// what fl-client runs, a ClientSession (client/session.h) over its own ZeroMQ
// context with a LocalClient that trains on one thread, with the settings of
// test::ClientArgs (tests/federation_util.h). A LibTorch process costs about
// 0.8 CPU-s before its main (experiments/results/2026-12-07/ctest_time.txt);
// the test process has paid it once already. fl-client itself, its flags and
// its process lifecycle, is tested as a process elsewhere
// (IntegrationTest.*AsProcesses, the relay tests with enrolled devices).
#ifndef FEDGE_TESTS_DEVICE_THREADS_H_
#define FEDGE_TESTS_DEVICE_THREADS_H_

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "client/local_client.h"
#include "client/session.h"
#include "common/data_loader.h"
#include "common/partition.h"
#include "common/text.h"
#include "server/server.h"
#include "tests/test_util.h"
#include "transport/simulated_network.h"
#include "transport/transport.h"

namespace fl {
namespace test {

// MNIST's training split, loaded once per test process, normalised as
// fl-client normalises it (statistics of the split).
inline const Dataset& MnistTrain() {
  static const Dataset* train = [] {
    DataOptions o;
    o.path = MnistDir();
    auto splits = LoadData(o, /*need_train=*/true, /*need_test=*/false);
    return splits.ok() ? new Dataset(std::move(splits->train)) : new Dataset();
  }();
  return *train;
}

class DeviceThreads {
 public:
  // Starts devices `first`..`first + count - 1` at `servers` (comma-separated:
  // the first, then the alternates a device fails over to): device k is "c<k>"
  // and holds IID shard k of `partitions` of MNIST, as
  // fl-client --id ck --partition iid --num-partitions P --partition-index k
  // does (seed 1). Insecure, heartbeats every 0.3 s, the server given up after
  // 2 s of silence, reconnects at most 1 s apart.
  //
  // With `net`, the devices talk over that simulated network and live in its
  // time (transport/simulated_network.h): each takes part from before its
  // thread starts until it ends. `tweak`, when set, adjusts device k's options
  // (a slower one, a training delay).
  DeviceThreads(const std::string& servers, int first, int count, int partitions,
                std::shared_ptr<transport::SimulatedNetwork> net = nullptr,
                const std::function<void(int, ClientOptions*)>& tweak = nullptr)
      : net_(std::move(net)) {
    const Dataset& train = MnistTrain();
    PartitionOptions po;
    po.clients = partitions;
    auto parts = MakePartition(train.labels, train.num_classes, po);
    status_.resize(static_cast<size_t>(count));
    stats_.resize(static_cast<size_t>(count));
    if (train.count == 0 || !parts.ok()) {
      for (auto& st : status_) st = Status::NotFound("MNIST training split", MnistDir());
      return;
    }
    const std::vector<std::string> endpoints = SplitList(servers, ',');
    for (int i = 0; i < count; ++i) {
      ClientOptions co;
      co.server = endpoints.front();
      for (size_t e = 1; e < endpoints.size(); ++e) co.alternates.push_back({endpoints[e], {}, {}});
      co.id = "c" + std::to_string(first + i);
      co.heartbeat_seconds = 0.3;
      co.server_timeout_seconds = 2;
      co.backoff_max_seconds = 1;
      co.verbose = false;
      if (net_) co.clock = net_.get();
      if (tweak) tweak(first + i, &co);
      const std::vector<int64_t>& shard = (*parts)[static_cast<size_t>(first + i)];
      if (net_) net_->Join();  // left when the thread ends
      threads_.emplace_back([this, co, &train, shard, at = static_cast<size_t>(i)] {
        status_[at] = Run(co, train, shard, &stats_[at]);
        if (net_) net_->Leave();
        ++finished_;
      });
    }
  }
  // Stops the devices that have not had their DONE, and waits for them.
  ~DeviceThreads() { (void)Join(); }
  DeviceThreads(const DeviceThreads&) = delete;
  DeviceThreads& operator=(const DeviceThreads&) = delete;

  // Waits up to `seconds` for every device to have its DONE (or to fail);
  // true when they all did.
  bool WaitDone(double seconds) {
    const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
    while (finished_.load() < status_.size() && std::chrono::steady_clock::now() < until) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return finished_.load() == status_.size();
  }

  // Device `first + i`'s counts, once Join() returned.
  const ClientStats& stats(int i) const { return stats_[static_cast<size_t>(i)]; }

  // Stops them and waits; the first device's error.
  Status Join() {
    stop_ = true;
    for (auto& t : threads_) t.join();
    threads_.clear();
    for (const auto& st : status_) {
      if (!st.ok()) return st;
    }
    return Status::OK();
  }

 private:
  Status Run(const ClientOptions& co, const Dataset& train, const std::vector<int64_t>& shard,
             ClientStats* stats) {
    auto client = LocalClient::Create("", train, shard, /*threads=*/1);
    if (!client.ok()) return client.status().WithContext(co.id);
    std::shared_ptr<transport::Context> ctx = net_;
    if (!ctx) ctx = transport::CreateZmqContext();
    ClientSession session(co, ctx, client->get());
    Status st = session.Start();
    if (st.ok()) st = RunClient(&session, ctx, &stop_);
    *stats = session.stats();
    return st.WithContext(co.id);
  }

  const std::shared_ptr<transport::SimulatedNetwork> net_;
  std::atomic<bool> stop_{false};
  std::atomic<size_t> finished_{0};
  std::vector<Status> status_;
  std::vector<ClientStats> stats_;  // each device's, once its thread ended
  std::vector<std::thread> threads_;
};

// The options of an in-process server over `net`, in its time, as
// fl-server --bind tcp://127.0.0.1:* --model MODEL --rounds ROUNDS
// --min-clients N --fraction 1 --insecure sets them, quiet.
inline ServerOptions SimulatedServerOptions(transport::SimulatedNetwork* net,
                                            const std::string& model, int rounds, int min_clients) {
  ServerOptions so;
  so.bind = "tcp://127.0.0.1:*";
  so.model = model;
  so.rounds = rounds;
  so.min_clients = min_clients;
  so.fraction = 1;
  so.insecure = true;
  so.verbose = false;
  so.clock = net;
  return so;
}

// Runs `server` to its end on a thread that takes part in `net`'s time from
// the constructor on.
class ServerThread {
 public:
  ServerThread(Server* server, transport::SimulatedNetwork* net) : net_(net) {
    net_->Join();
    thread_ = std::thread([this, server] {
      summary_ = server->Run(nullptr, nullptr);
      net_->Leave();
    });
  }
  ~ServerThread() {
    if (thread_.joinable()) thread_.join();
  }
  ServerThread(const ServerThread&) = delete;
  ServerThread& operator=(const ServerThread&) = delete;
  // Waits for the run's end (the caller must not take part meanwhile).
  Result<ServerSummary> Join() {
    thread_.join();
    return summary_;
  }

 private:
  transport::SimulatedNetwork* const net_;
  Result<ServerSummary> summary_ = Status::Internal("not run");
  std::thread thread_;
};

}  // namespace test
}  // namespace fl

#endif  // FEDGE_TESTS_DEVICE_THREADS_H_
