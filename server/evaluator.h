// Central evaluation off the server's receive thread.
//
// Evaluating the global model on a test set takes about a second for the
// FedAvg CNN; done on the thread that owns the socket, it silences the server
// for that long, and on slower machines long enough for clients to give up on
// it. BackgroundEvaluator owns its own model instance and a worker thread: the
// server submits a copy of each round's global model and collects the results,
// in submission order, whenever it looks. The next round trains meanwhile.
//
// The header stays free of LibTorch; the implementation uses it.
#ifndef FEDGE_SERVER_EVALUATOR_H_
#define FEDGE_SERVER_EVALUATOR_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "common/model_state.h"
#include "common/status.h"

namespace fl {

// The outcome of evaluating the global model of one round.
struct Evaluation {
  uint64_t round{0};
  Status status;        // not OK: accuracy and loss are NaN
  double accuracy{0};   // fraction in [0, 1]
  double mean_loss{0};  // mean cross-entropy per sample
  double seconds{0};    // wall time of the evaluation
};

class BackgroundEvaluator final {
 public:
  // Loads the test split of the MNIST-format folder `data_dir` and starts the
  // worker. `threads`: LibTorch intra-op threads of the worker. `delay_seconds`
  // is added to every evaluation (a test hook standing in for a slow machine).
  static Result<std::unique_ptr<BackgroundEvaluator>> Create(const std::string& architecture,
                                                             const std::string& data_dir,
                                                             int threads, double delay_seconds);
  // Finishes the evaluation in progress, drops queued ones, joins the worker.
  ~BackgroundEvaluator();
  BackgroundEvaluator(const BackgroundEvaluator&) = delete;
  BackgroundEvaluator& operator=(const BackgroundEvaluator&) = delete;

  // Queues `model` (the global model after `round`) for evaluation.
  void Submit(uint64_t round, ModelState model);

  // The oldest finished evaluation, if any.
  std::optional<Evaluation> TryTake();

  // Blocks until the oldest submitted evaluation is finished and returns it
  // (nullopt when nothing was submitted and not taken).
  std::optional<Evaluation> Take();

  // Evaluations submitted and not yet taken.
  size_t outstanding() const;

 private:
  struct Impl;
  explicit BackgroundEvaluator(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace fl

#endif  // FEDGE_SERVER_EVALUATOR_H_
