#include "server/torch_runtime.h"

#include "common/dataset.h"
#include "common/model_zoo.h"
#include "common/trainer.h"

namespace fl {
namespace {

// The server evaluates in batches of 50, not kEvalBatch (100): half the
// activations (the CNN's first convolution alone is 10 MB at 100), for a 1%
// slower pass (fl-bench-eval, 2026-11-28, AMD EPYC: 1.234 s against 1.221 s for
// the 10k test images on one thread). The evaluation overlaps training, so its
// memory adds to the server's peak (experiments/BENCHMARKS.md).
constexpr int64_t kServerEvalBatch = 50;

class TorchEvaluator final : public Evaluator {
 public:
  TorchEvaluator(ModelPtr model, Dataset test, int threads)
      : model_(std::move(model)), test_(std::move(test)), threads_(threads) {}

  Status Evaluate(const ModelState& state, double* accuracy, double* mean_loss) override {
    // The model evaluates the submitted copy in place: no second copy.
    FL_RETURN_IF_ERROR(BindModelState(*model_, state));
    auto r = fl::Evaluate(*model_, test_, kServerEvalBatch, threads_);
    if (!r.ok()) return r.status();
    *accuracy = r->accuracy;
    *mean_loss = r->mean_loss;
    return Status::OK();
  }

 private:
  ModelPtr model_;
  Dataset test_;
  int threads_;
};

}  // namespace

ModelRuntime TorchRuntime() {
  ModelRuntime rt;
  rt.initial_model = [](const std::string& architecture, uint64_t seed) -> Result<ModelState> {
    auto model = CreateModel(architecture, seed);
    if (!model.ok()) return model.status();
    return GetModelState((*model)->architecture, **model);
  };
  rt.make_evaluator = [](const std::string& architecture, Dataset test,
                         int threads) -> Result<std::unique_ptr<Evaluator>> {
    auto model = CreateModel(architecture, /*seed=*/0);
    if (!model.ok()) return model.status();
    FL_RETURN_IF_ERROR(CheckModelFitsData(**model, architecture, test, "the server's test set"));
    return std::unique_ptr<Evaluator>(
        std::make_unique<TorchEvaluator>(std::move(model).value(), std::move(test), threads));
  };
  return rt;
}

}  // namespace fl
