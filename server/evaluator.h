// Central evaluation off the server's receive thread.
//
// Evaluating the global model on a test set takes about a second for the
// FedAvg CNN; done on the thread that owns the socket, it silences the server
// for that long, and on slower machines long enough for clients to give up on
// it. BackgroundEvaluator runs an Evaluator (its own model instance) on a
// worker thread: the server submits a copy of each round's global model and
// collects the results, in submission order, whenever it looks. The next
// round trains meanwhile.
//
// Free of LibTorch: the evaluator that uses it is injected (ModelRuntime).
#ifndef FEDGE_SERVER_EVALUATOR_H_
#define FEDGE_SERVER_EVALUATOR_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "common/clock.h"
#include "common/data_loader.h"
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

// Evaluates a global model, e.g. on a test set. Called from the evaluation
// thread only. The LibTorch one is in server/torch_runtime.h, outside fl_server.
class Evaluator {
 public:
  virtual ~Evaluator() = default;
  // Accuracy (fraction in [0, 1]) and mean loss of `model`.
  virtual Status Evaluate(const ModelState& model, double* accuracy, double* mean_loss) = 0;
};

// What the server needs from a machine-learning runtime, passed in so that
// fl_server itself does not link LibTorch (server/torch_runtime.h has the
// LibTorch one).
struct ModelRuntime {
  // The initial parameters of `architecture`, seeded (NotFound for a name the
  // runtime does not know).
  std::function<Result<ModelState>(const std::string& architecture, uint64_t seed)> initial_model;
  // An evaluator of `architecture` on `test` (normalised as it says), with
  // `threads` intra-op threads. InvalidArgument when the model does not fit
  // the data. May be empty: then a server asked to evaluate refuses to start.
  std::function<Result<std::unique_ptr<Evaluator>>(const std::string& architecture, Dataset test,
                                                   int threads)>
      make_evaluator;
};

// Runs an Evaluator on a worker thread of its own.
class BackgroundEvaluator final {
 public:
  // Starts the worker. `delay_seconds` of `clock`'s time are added to every
  // evaluation (a test hook standing in for a slow machine): its result is
  // taken no sooner. The worker's own work is handed over on `clock`
  // (Clock::BeginWork), so simulated time waits for it.
  static std::unique_ptr<BackgroundEvaluator> Create(std::unique_ptr<Evaluator> evaluator,
                                                     double delay_seconds,
                                                     const Clock* clock = SystemClock());
  // Finishes the evaluation in progress, drops queued ones, joins the worker.
  ~BackgroundEvaluator();
  BackgroundEvaluator(const BackgroundEvaluator&) = delete;
  BackgroundEvaluator& operator=(const BackgroundEvaluator&) = delete;

  // Queues `model` (the global model after `round`) for evaluation.
  void Submit(uint64_t round, ModelState model);

  // The oldest finished evaluation, if any (and its delay is over).
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
