#include "experiments/sim/mpi_world.h"

#include <chrono>
#include <cstdlib>
#include <thread>
#include <vector>

#ifdef FL_HAVE_MPI
#include <mpi.h>
#endif

namespace fl {

bool MpiWorld::Built() {
#ifdef FL_HAVE_MPI
  return true;
#else
  return false;
#endif
}

MpiWorld::MpiWorld(int* argc, char*** argv) {
#ifdef FL_HAVE_MPI
  // Started by mpirun (Open MPI, or a PMIx launcher): join. A plain start
  // stays a world of one without touching MPI (a singleton MPI_Init would
  // start Open MPI's runtime for nothing).
  if (std::getenv("OMPI_COMM_WORLD_SIZE") == nullptr && std::getenv("PMIX_RANK") == nullptr &&
      std::getenv("PMI_SIZE") == nullptr) {
    return;
  }
  // Threads (workers, the server's) run beside MPI; only the main thread calls it.
  int provided = 0;
  MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
  joined_ = true;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &size_);
#else
  (void)argc;
  (void)argv;
#endif
}

MpiWorld::~MpiWorld() {
#ifdef FL_HAVE_MPI
  if (joined_) MPI_Finalize();
#endif
}

#ifdef FL_HAVE_MPI
namespace {

// Waits for `request` looking every 5 ms: a blocking MPI call spins a core,
// which the ranks of one small machine need for training.
void Await(MPI_Request* request) {
  for (int done = 0;;) {
    MPI_Test(request, &done, MPI_STATUS_IGNORE);
    if (done) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

}  // namespace
#endif

std::string MpiWorld::Broadcast(const std::string& value) {
#ifdef FL_HAVE_MPI
  if (size_ > 1) {
    int n = static_cast<int>(value.size());
    MPI_Request request;
    MPI_Ibcast(&n, 1, MPI_INT, 0, MPI_COMM_WORLD, &request);
    Await(&request);
    std::vector<char> bytes(value.begin(), value.end());
    bytes.resize(static_cast<size_t>(n));
    MPI_Ibcast(bytes.data(), n, MPI_CHAR, 0, MPI_COMM_WORLD, &request);
    Await(&request);
    return std::string(bytes.begin(), bytes.end());
  }
#endif
  return value;
}

bool MpiWorld::AllTrue(bool mine) {
#ifdef FL_HAVE_MPI
  if (size_ > 1) {
    int in = mine ? 1 : 0, out = 0;
    MPI_Allreduce(&in, &out, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    return out == 1;
  }
#endif
  return mine;
}

void MpiWorld::Release() {
#ifdef FL_HAVE_MPI
  if (size_ > 1) {
    int over = 1;
    MPI_Request request;
    MPI_Ibcast(&over, 1, MPI_INT, 0, MPI_COMM_WORLD, &request);
    MPI_Wait(&request, MPI_STATUS_IGNORE);
  }
#endif
}

bool MpiWorld::Wait(const std::function<bool()>& give_up) {
#ifdef FL_HAVE_MPI
  if (size_ > 1) {
    int over = 0, done = 0;
    MPI_Request request;
    MPI_Ibcast(&over, 1, MPI_INT, 0, MPI_COMM_WORLD, &request);
    for (;;) {
      MPI_Test(&request, &done, MPI_STATUS_IGNORE);
      if (done) return true;
      if (give_up && give_up()) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
#endif
  (void)give_up;
  return true;
}

void MpiWorld::Abort(int code) {
#ifdef FL_HAVE_MPI
  if (joined_) MPI_Abort(MPI_COMM_WORLD, code);
#endif
  std::exit(code);
}

}  // namespace fl
