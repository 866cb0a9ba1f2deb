// A test oracle: federated averaging (McMahan et al. 2017) over whole models,
// computed from its definition in docs/protocol.md ("Exact sums") and not
// with the server's code, so that tests can hold the server's aggregate to
// it bit for bit:
//
//   new = old + server_lr * sum_k (n_k / n) * delta_k,   n = sum_k n_k
//
// where delta_k = (client k's parameters after local training) - old: each
// delta value rounded to a multiple of 2^-40 (to nearest, ties to even), the
// weighted sum kept in 128-bit integers, the mean S / n / 2^40 in double, and
// the new value old + server_lr * mean in double, rounded to float. With
// server_lr = 1 this is the sample-weighted mean of the client models. Only
// the global model's kept positions move: pruned weights stay 0.
#ifndef FEDGE_TESTS_FEDAVG_ORACLE_H_
#define FEDGE_TESTS_FEDAVG_ORACLE_H_

#include <cstdint>
#include <vector>

#include "common/model_state.h"
#include "common/status.h"

namespace fl {

// One client's contribution to a round.
struct ClientUpdate {
  // Examples the client trained on (its weight n_k); must be > 0.
  int64_t num_examples{0};
  // Client parameters minus the round's global parameters, same layout as global.
  ModelState delta;
};

struct FedAvgOptions {
  // The round's global model. Not owned; must outlive the call.
  const ModelState* global{nullptr};
  // The accepted updates. Not owned; must outlive the call.
  const std::vector<ClientUpdate>* updates{nullptr};
  // Server learning rate applied to the averaged delta (1 = plain FedAvg).
  double server_lr{1.0};
};

// Returns the new global model. InvalidArgument when there are no updates, a
// weight is not positive, or an update's layout differs from the global model.
Result<ModelState> FedAvg(const FedAvgOptions& options);

// Returns `after - before`, tensor by tensor. InvalidArgument on layout mismatch.
Result<ModelState> Difference(const ModelState& after, const ModelState& before);

}  // namespace fl

#endif  // FEDGE_TESTS_FEDAVG_ORACLE_H_
