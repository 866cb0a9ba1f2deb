// Local training and evaluation of a model-zoo classifier.
//
// TrainLocal is what a federated client runs on its shard each round: SGD with
// learning rate, momentum and weight decay for E epochs at batch size B, with the
// shuffle order drawn from a seed. Evaluate reports accuracy and mean
// cross-entropy on a labelled set. LibTorch exceptions are caught here and come
// back as a Status.
#ifndef FEDGE_COMMON_TRAINER_H_
#define FEDGE_COMMON_TRAINER_H_

#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <vector>

#include "common/dataset.h"
#include "common/model_zoo.h"
#include "common/status.h"

namespace fl {

// Samples as a float tensor [N, ...shape], normalised (Dataset::normalization),
// and labels as int64 [N].
struct TensorDataset {
  torch::Tensor images;
  torch::Tensor labels;
  int64_t size() const { return labels.defined() ? labels.size(0) : 0; }
};

// Converts raw samples to tensors: bytes x / 255, then (x - mean[c]) / std[c].
TensorDataset ToTensors(const Dataset& data);

// Returns the rows of `data` at `indices`, copied into contiguous tensors.
// InvalidArgument when an index is out of range.
Result<TensorDataset> Subset(const TensorDataset& data, const std::vector<int64_t>& indices);

// Checks that `model` maps a batch of `data`'s samples to logits [N, K] with
// K >= data.num_classes. InvalidArgument naming `model_name`, `data_name` and
// the mismatch otherwise (a zoo CNN given CSV rows, a script with 5 outputs
// for 10 classes).
Status CheckModelFitsData(Model& model, const std::string& model_name,
                          const std::vector<int64_t>& sample_shape, int num_classes,
                          const std::string& data_name);
inline Status CheckModelFitsData(Model& model, const std::string& model_name, const Dataset& data,
                                 const std::string& data_name) {
  return CheckModelFitsData(model, model_name, data.shape, data.num_classes, data_name);
}

// Progress after each local epoch.
struct EpochStats {
  int epoch{0};         // 1-based
  double mean_loss{0};  // mean training loss over the epoch's batches, per sample
  double accuracy{0};   // training accuracy over the epoch (during training)
  double seconds{0};    // wall time of the epoch
};

struct TrainOptions {
  // Local epochs E.
  int epochs{1};
  // Local batch size B; <= 0 means the whole shard in one batch (B = infinity).
  int64_t batch_size{10};
  // SGD learning rate.
  double lr{0.01};
  // SGD momentum (0 = plain SGD).
  double momentum{0.0};
  // L2 weight decay added by SGD.
  double weight_decay{0.0};
  // FedProx proximal term (Li et al. 2020): adds (mu / 2) ||w - w0||^2 to the
  // loss, w0 the parameters on entry, i.e. mu (w - w0) to each gradient
  // (masked like the rest of it). 0 = off.
  double proximal_mu{0.0};
  // Seed for the per-epoch shuffle order.
  uint64_t seed{1};
  // Intra-op threads for this training call; one is fastest per client on small
  // machines (several clients train in parallel instead).
  int threads{1};
  // Called after every epoch, when set.
  std::function<void(const EpochStats&)> on_epoch;
  // Called after every optimizer step, when set, with the fraction of the
  // whole call's work done (epochs x examples): for progress lines, which
  // the caller throttles (common/progress.h).
  std::function<void(double)> on_step;
  // Sparse masks, one per state tensor (StateTensors order: the parameters,
  // then any running statistics, which are never masked): an
  // undefined tensor leaves that parameter dense; otherwise a bool (or float)
  // tensor of the parameter's shape, true/1 = kept, false/0 = pruned. Pruned
  // weights must be 0 on entry and stay exactly 0: their gradients are zeroed
  // before every step, so momentum buffers and weight decay (wd * 0) never
  // move them either.
  std::vector<torch::Tensor> masks;
  // On-device transfer learning: one flag per state tensor (StateTensors
  // order), true = frozen for this call: no gradient is computed for it (so
  // nothing upstream of the first trainable layer is back-propagated, and its
  // activations are not kept for that), the optimizer does not hold it, and
  // it leaves exactly as it came (a frozen running statistic too). Empty:
  // everything trains.
  std::vector<bool> frozen;
  // Knowledge distillation (Hinton et al. 2015), when `teacher` is set: the loss
  // is alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T))
  //       + (1 - alpha) * cross-entropy(student, labels).
  // The teacher is evaluated with gradients off and is not modified.
  Model* teacher{nullptr};
  double temperature{4.0};
  double distill_alpha{0.5};
};

struct TrainStats {
  int64_t samples_seen{0};  // examples processed, summed over epochs
  int64_t steps{0};         // optimizer steps
  double first_epoch_loss{0};
  double last_epoch_loss{0};
  double seconds{0};
};

// Trains `model` in place on all of `data` (already the client's shard).
Result<TrainStats> TrainLocal(Model& model, const TensorDataset& data, const TrainOptions& options);

struct EvalResult {
  double accuracy{0};   // fraction in [0, 1]
  double mean_loss{0};  // mean cross-entropy per sample
  int64_t count{0};
};

// Batch size of Evaluate unless told otherwise. Measured on the FedAvg CNN
// over the 10k MNIST test images, one thread (fl-bench-eval, 2026-11-28): 100
// was fastest on the raw-bytes path and within 2% of the fastest on the float
// set; 50 and 200 were 1-6% slower, 500 and 1000 35-60% slower.
constexpr int64_t kEvalBatch = 100;

// Evaluates in batches of `batch_size` with gradients off, through the model's
// inference plan (Model::PrepareInference). `threads` as in TrainOptions
// (<= 0: leave LibTorch's setting alone).
Result<EvalResult> Evaluate(Model& model, const TensorDataset& data,
                            int64_t batch_size = kEvalBatch, int threads = 0);

// The same on raw samples: each batch is normalised into one reused buffer, so
// the float copy of the whole set (4 bytes a pixel) never exists.
Result<EvalResult> Evaluate(Model& model, const Dataset& data, int64_t batch_size = kEvalBatch,
                            int threads = 0);

// Tells the C library to keep freed blocks below 32 MiB for reuse instead of
// returning them to the kernel at every free (and to trim the heap only when
// 32 MiB at its top are free). LibTorch allocates and frees its activation
// buffers every batch; returned to the kernel, each comes back as fresh pages,
// and at evaluation batch sizes the page faults cost more than the arithmetic.
// Called by Evaluate (once per process); larger blocks (a whole dataset) still
// go back to the kernel when freed. Training at small batches does not need it
// (fl-bench-train measured no difference), so an edge client that only trains
// keeps the C library's defaults and its smaller footprint.
void RetainFreedTensorMemory();

}  // namespace fl

#endif  // FEDGE_COMMON_TRAINER_H_
