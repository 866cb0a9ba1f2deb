// The federation's global model as the server holds it between rounds: the
// weights and masks, the version TASKs name, which tensors train, and what
// the update checks derive from it. Its federated pruning schedule lives here
// too: the mask is the model's.
#ifndef FEDGE_SERVER_GLOBAL_MODEL_H_
#define FEDGE_SERVER_GLOBAL_MODEL_H_

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "common/model_state.h"
#include "common/status.h"
#include "common/wire/messages.h"

namespace fl {

class Aggregator;

// L2 norm of a model's kept values (pruned values are 0).
double KeptNorm(const ModelState& m);

class GlobalModel {
 public:
  using Version = std::array<uint8_t, 32>;

  // The weights; after changing them, call Changed().
  ModelState& state() { return state_; }
  const ModelState& state() const { return state_; }
  // The SHA-256 of the model as TASKs carry it (wire::Compact in the
  // downlink format); changes only with the model or the format.
  const Version& version() const { return version_; }
  // Kept (unpruned) values of the trainable tensors: the length of every delta.
  size_t kept_count() const { return kept_count_; }
  // Largest |value|: with it, most updates pass the range check without a
  // pass over the model.
  double max_abs() const { return max_abs_; }
  // --trainable: which tensors train (empty: all).
  const std::vector<uint8_t>& trainable() const { return trainable_; }
  wire::ValueFormat downlink() const { return downlink_; }

  // Replaces the model (and which tensors train, and its TASK format).
  void Set(ModelState state, std::vector<uint8_t> trainable, wire::ValueFormat downlink);
  void SetTrainable(std::vector<uint8_t> trainable);
  // Recomputes the version, kept count and largest value after the weights changed.
  void Changed();

  // The largest magnitude a value may have: `max_param_value`, and never
  // more than the downlink format carries.
  float ValueLimit(double max_param_value) const;

  // L2 norm of the run's starting model (kept values of the trainable
  // tensors): the reference of the derived update-norm bound. Fixed for the
  // run, so accepted updates cannot raise the bound round after round.
  double reference_norm() const { return reference_norm_; }
  void set_reference_norm(double norm) { reference_norm_ = norm; }
  // Sets it from the model when it is not set yet.
  void InitReferenceNorm();

  // Adds `aggregator`'s step to the trainable tensors' kept values, all or
  // nothing (Aggregator::Finish), within `max_abs`.
  Status Step(Aggregator* aggregator, float max_abs);

 private:
  ModelState state_;
  Version version_{};
  size_t kept_count_{0};
  double max_abs_{0};
  std::vector<uint8_t> trainable_;
  wire::ValueFormat downlink_{wire::ValueFormat::kFp32};
  double reference_norm_{0};
};

// Federated pruning (ServerOptions::prune_to): after each of rounds
// 1..rounds the aggregated model is pruned by magnitude to Zhu & Gupta's
// gradual schedule, from the starting model's sparsity to `to`.
// Deterministic from the model, so a resumed run prunes alike.
struct PruningSchedule {
  double from{0};
  double to{0};  // 0: the mask never changes
  int rounds{0};
  bool erk{false};
  bool global{true};

  // The schedule in words ("" = none), kept in checkpoints.
  std::string Describe() const;
  // After round `r`: tightens `model`'s mask when the schedule says so, and
  // `aggregator`'s per-value state follows. True when the mask changed.
  bool Tighten(uint64_t r, GlobalModel* model, Aggregator* aggregator) const;
};

}  // namespace fl

#endif  // FEDGE_SERVER_GLOBAL_MODEL_H_
