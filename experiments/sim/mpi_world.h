// The ranks of an MPI job fl-sim runs in: `mpirun -np N fl-sim --config X.toml`
// (Open MPI). Rank 0 runs the real server; every rank hosts its share of the
// virtual clients (client k on rank k mod N), which reach the server over the
// same ZeroMQ protocol as deployed devices. MPI only starts the ranks and
// passes the server's endpoint and the end of the run; no model or update
// travels over it. Built when CMake finds MPI (FL_HAVE_MPI); otherwise, and
// when fl-sim was not started by mpirun, the world is this process alone.
#ifndef FEDGE_EXPERIMENTS_SIM_MPI_WORLD_H_
#define FEDGE_EXPERIMENTS_SIM_MPI_WORLD_H_

#include <functional>
#include <string>

namespace fl {

class MpiWorld {
 public:
  // Joins the job when started by mpirun (its environment says so), else a
  // world of one. Call once, before anything else reads argv.
  MpiWorld(int* argc, char*** argv);
  ~MpiWorld();  // leaves the job (MPI_Finalize)
  MpiWorld(const MpiWorld&) = delete;
  MpiWorld& operator=(const MpiWorld&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }
  // True when this build can join an MPI job.
  static bool Built();

  // Every rank gets rank 0's `value` (collective: all ranks call it).
  std::string Broadcast(const std::string& value);
  // True when `mine` is true on every rank (collective).
  bool AllTrue(bool mine);
  // Rank 0 says the run is over; the other ranks wait for it in Wait, which
  // polls every 20 ms rather than keeping a core busy, and returns early (false)
  // when `give_up` says so. Collective.
  void Release();
  bool Wait(const std::function<bool()>& give_up);
  // Ends every rank of the job with `code` (a rank that fails alone would leave
  // the others waiting for it).
  [[noreturn]] void Abort(int code);

 private:
  int rank_{0};
  int size_{1};
  bool joined_{false};
};

}  // namespace fl

#endif  // FEDGE_EXPERIMENTS_SIM_MPI_WORLD_H_
