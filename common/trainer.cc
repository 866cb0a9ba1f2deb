#include "common/trainer.h"

#include <malloc.h>

#include <mutex>
#include <numeric>
#include <tuple>

#include "common/clock.h"
#include "common/random.h"
#include "common/reproducible.h"

namespace fl {
namespace {

// Sets the intra-op thread count for this call and restores it afterwards.
class ThreadScope {
 public:
  explicit ThreadScope(int threads) : saved_(torch::get_num_threads()) {
    if (threads > 0 && threads != saved_) torch::set_num_threads(threads);
  }
  ~ThreadScope() {
    if (torch::get_num_threads() != saved_) torch::set_num_threads(saved_);
  }

 private:
  int saved_;
};

}  // namespace

void UseDeterministicKernels() {
  at::globalContext().setDeterministicAlgorithms(true, /*warn_only=*/false);
  at::globalContext().setUserEnabledMkldnn(false);
}

Status BecomeReproducible(char** argv) {
  if (!ReproducibleEnvironmentSet()) {
    FL_RETURN_IF_ERROR(PinReproducibleEnvironment(argv));
    // (Pinning runs the program again: reaching here, it is pinned already.)
  }
  UseDeterministicKernels();
  return Status::OK();
}

namespace {

// [1, C, 1, ...] (or [1] for one pair) views of the normalisation, to
// broadcast over a batch [N, C, ...].
std::pair<torch::Tensor, torch::Tensor> NormalizationTensors(const Dataset& data) {
  const auto& n = data.normalization;
  std::vector<int64_t> view(data.shape.size() + 1, 1);
  if (n.mean.size() > 1) view[1] = static_cast<int64_t>(n.mean.size());
  auto mean = torch::tensor(n.mean, torch::kFloat32).view(view);
  auto std = torch::tensor(n.std, torch::kFloat32).view(view);
  return {mean, std};
}

std::vector<int64_t> BatchShape(const Dataset& data, int64_t n) {
  std::vector<int64_t> shape{n};
  shape.insert(shape.end(), data.shape.begin(), data.shape.end());
  return shape;
}

// Raw samples [begin, end) of `data` as floats into `x` (shaped for them):
// bytes scaled by 1/255, then normalised. One path for ToTensors and the raw
// Evaluate, so both give the same numbers.
void NormalizeInto(const Dataset& data, const torch::Tensor& raw, const torch::Tensor& mean,
                   const torch::Tensor& std, int64_t begin, int64_t end, torch::Tensor* x) {
  x->copy_(raw.slice(0, begin, end));
  if (!data.floats) x->div_(255.0);
  if (mean.defined()) x->sub_(mean).div_(std);
}

torch::Tensor RawSamples(const Dataset& data) {
  return data.floats ? torch::from_blob(const_cast<float*>(data.features.data()),
                                        BatchShape(data, data.count), torch::kFloat32)
                     : torch::from_blob(const_cast<uint8_t*>(data.pixels.data()),
                                        BatchShape(data, data.count), torch::kUInt8);
}

}  // namespace

Status CheckModelFitsData(Model& model, const std::string& model_name,
                          const std::vector<int64_t>& sample_shape, int num_classes,
                          const std::string& data_name) {
  Dataset data;  // the shape and classes, for BatchShape and the messages
  data.shape = sample_shape;
  data.num_classes = num_classes;
  const std::string in = "[2, " + data.ShapeString() + "]";
  std::vector<int64_t> out_shape;
  try {
    torch::NoGradGuard no_grad;
    const bool was_training = model.is_training();
    model.eval();
    const torch::Tensor out = model.forward(torch::zeros(BatchShape(data, 2)));
    model.train(was_training);
    out_shape = out.sizes().vec();
  } catch (const std::exception& e) {
    std::string what = TorchMessage(e);
    if (what.size() > 300) what = what.substr(0, 300) + "...";
    return Status::InvalidArgument(
        model_name, "does not take the samples of " + data_name + " (a batch " + in + "): " + what);
  }
  if (out_shape.size() != 2 || out_shape[0] != 2 || out_shape[1] < data.num_classes) {
    std::string got;
    for (int64_t d : out_shape) got += (got.empty() ? "" : "x") + std::to_string(d);
    return Status::InvalidArgument(
        model_name, "maps a batch " + in + " to " + got + "; " + data_name + " has " +
                        std::to_string(data.num_classes) + " classes, so fedge needs logits [2, " +
                        std::to_string(data.num_classes) + "]");
  }
  return Status::OK();
}

TensorDataset ToTensors(const Dataset& data) {
  TensorDataset out;
  torch::Tensor mean, std;
  if (!data.normalization.empty()) std::tie(mean, std) = NormalizationTensors(data);
  out.images = torch::empty(BatchShape(data, data.count), torch::kFloat32);
  NormalizeInto(data, RawSamples(data), mean, std, 0, data.count, &out.images);
  out.labels =
      torch::from_blob(const_cast<uint8_t*>(data.labels.data()), {data.count}, torch::kUInt8)
          .to(torch::kInt64);
  return out;
}

Result<TensorDataset> Subset(const TensorDataset& data, const std::vector<int64_t>& indices) {
  const int64_t n = data.size();
  for (int64_t i : indices) {
    if (i < 0 || i >= n) {
      return Status::InvalidArgument("sample index " + std::to_string(i) +
                                     " out of range for a dataset of " + std::to_string(n));
    }
  }
  auto idx = torch::tensor(indices, torch::kInt64);
  return TensorDataset{data.images.index_select(0, idx).contiguous(),
                       data.labels.index_select(0, idx).contiguous()};
}

namespace {

Status CheckTrainOptions(const TrainOptions& o, int64_t n, const std::vector<torch::Tensor>& params,
                         size_t state_tensors) {
  if (n == 0) return Status::InvalidArgument("cannot train on an empty dataset");
  if (o.epochs < 1) {
    return Status::InvalidArgument("epochs must be >= 1, got " + std::to_string(o.epochs));
  }
  if (!(o.lr > 0)) {
    return Status::InvalidArgument("learning rate must be > 0, got " + std::to_string(o.lr));
  }
  if (o.teacher != nullptr &&
      (!(o.temperature > 0) || o.distill_alpha < 0 || o.distill_alpha > 1)) {
    return Status::InvalidArgument("distillation needs temperature > 0 and alpha in [0, 1]");
  }
  if (!o.masks.empty() && o.masks.size() != state_tensors) {
    return Status::InvalidArgument("got " + std::to_string(o.masks.size()) + " masks for " +
                                   std::to_string(state_tensors) + " tensors");
  }
  for (size_t i = 0; i < o.masks.size(); ++i) {
    if (o.masks[i].defined() &&
        (i >= params.size() || !o.masks[i].sizes().equals(params[i].sizes()))) {
      return Status::InvalidArgument("mask " + std::to_string(i) + " does not match its parameter");
    }
  }
  if (!o.frozen.empty() && o.frozen.size() != state_tensors) {
    return Status::InvalidArgument("got " + std::to_string(o.frozen.size()) +
                                   " trainable flags for " + std::to_string(state_tensors) +
                                   " tensors");
  }
  return Status::OK();
}

// What TrainOptions::frozen freezes, for one call: the parameters that get no
// gradient (given back when this goes: a model shared by many clients,
// fl-sim's, is left as it was found), and the running statistics, which
// leave as they came, like a frozen weight.
class Freeze {
 public:
  Freeze(Model& model, const TrainOptions& o, const std::vector<torch::Tensor>& params,
         const std::vector<torch::Tensor>& state) {
    const auto named = NamedStateTensors(model);
    for (size_t i = params.size(); i < o.frozen.size(); ++i) {
      if (!o.frozen[i]) continue;
      stats_.emplace_back(state[i], state[i].detach().clone());
      stat_names_.push_back(named[i].key());
    }
    for (size_t i = 0; i < params.size(); ++i) {
      if (o.frozen.empty() || !o.frozen[i]) trained_.push_back(params[i]);
    }
    for (size_t i = 0; i < o.frozen.size() && i < params.size(); ++i) {
      if (o.frozen[i] && params[i].requires_grad()) {
        params[i].requires_grad_(false);
        weights_.push_back(params[i]);
      }
    }
  }
  ~Freeze() {
    for (auto& p : weights_) p.requires_grad_(true);
  }
  const std::vector<torch::Tensor>& trained() const { return trained_; }
  const std::vector<std::string>& stat_names() const { return stat_names_; }
  void RestoreStats() {
    for (auto& [tensor, values] : stats_) tensor.copy_(values);
  }

 private:
  std::vector<std::pair<torch::Tensor, torch::Tensor>> stats_;  // tensor, its values
  std::vector<std::string> stat_names_;
  std::vector<torch::Tensor> trained_;
  std::vector<torch::Tensor> weights_;
};

// The teacher gives its eval-mode predictions (BatchNorm on its running
// statistics, which stay as they are; no dropout), for the duration.
struct TeacherMode {
  explicit TeacherMode(Model* t) : teacher(t), was_training(t && t->is_training()) {
    if (teacher) teacher->eval();
  }
  ~TeacherMode() {
    if (teacher) teacher->train(was_training);
  }
  Model* teacher;
  bool was_training;
};

// One epoch's training, in mini-batches in a fresh shuffle of `rng`.
struct EpochRun {
  Model& model;
  const TensorDataset& data;
  const TrainOptions& o;
  const std::vector<torch::Tensor>& params;
  // Where each parameter is pruned, and FedProx's anchor (the parameters
  // training started from).
  const std::vector<torch::Tensor>& pruned;
  const std::vector<torch::Tensor>& anchor;
  torch::optim::SGD& optimizer;
  int64_t batch;
  // BatchNorm cannot train on a batch of one: a shard's last batch of one
  // sample is left out when the model has running statistics.
  bool has_stats;

  // The batch's loss: cross-entropy, or with a teacher the distillation mix.
  torch::Tensor Loss(const torch::Tensor& logits, const torch::Tensor& x,
                     const torch::Tensor& y) const {
    auto loss = torch::nn::functional::cross_entropy(logits, y);
    if (o.teacher == nullptr) return loss;
    torch::Tensor soft;
    {
      torch::NoGradGuard no_grad;
      soft = torch::softmax(o.teacher->forward(x) / o.temperature, 1);
    }
    const double t = o.temperature;
    auto kd = torch::nn::functional::kl_div(
        torch::log_softmax(logits / t, 1), soft,
        torch::nn::functional::KLDivFuncOptions().reduction(torch::kBatchMean));
    return o.distill_alpha * t * t * kd + (1 - o.distill_alpha) * loss;
  }

  // FedProx's pull toward the anchor, then no gradient where pruned: a fill,
  // not a product (a gradient that is not finite, a model diverging, times 0
  // would still be NaN at a pruned position).
  void AdjustGradients() const {
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < anchor.size(); ++i) {
      if (!params[i].grad().defined()) continue;
      params[i].grad().add_(params[i].detach() - anchor[i], o.proximal_mu);
    }
    for (size_t i = 0; i < pruned.size(); ++i) {
      if (pruned[i].defined() && params[i].grad().defined()) {
        params[i].grad().masked_fill_(pruned[i], 0);
      }
    }
  }

  void Run(int epoch, Random* rng, std::vector<int64_t>* order, TrainStats* stats) {
    const int64_t n = data.size();
    const double e0 = NowSeconds();
    std::iota(order->begin(), order->end(), 0);
    rng->Shuffle(order);
    auto perm = torch::tensor(*order, torch::kInt64);
    double loss_sum = 0;
    int64_t correct = 0;
    for (int64_t begin = 0; begin < n; begin += batch) {
      const int64_t end = std::min(begin + batch, n);
      if (has_stats && batch > 1 && end - begin == 1) break;
      auto idx = perm.slice(0, begin, end);
      auto x = data.images.index_select(0, idx);
      auto y = data.labels.index_select(0, idx);
      optimizer.zero_grad();
      auto logits = model.forward(x);
      auto loss = Loss(logits, x, y);
      loss.backward();
      AdjustGradients();
      optimizer.step();
      loss_sum += loss.item<double>() * (end - begin);
      // Training accuracy is only reported through on_epoch; federated rounds
      // do not ask for it, so they skip the argmax.
      if (o.on_epoch) correct += logits.argmax(1).eq(y).sum().item<int64_t>();
      stats->steps++;
      if (o.on_step) {
        o.on_step((static_cast<double>(epoch - 1) * n + end) / (static_cast<double>(o.epochs) * n));
      }
    }
    stats->samples_seen += n;
    const double mean = loss_sum / n;
    if (epoch == 1) stats->first_epoch_loss = mean;
    stats->last_epoch_loss = mean;
    if (o.on_epoch) {
      o.on_epoch(EpochStats{epoch, mean, static_cast<double>(correct) / n, NowSeconds() - e0});
    }
  }
};

// The mask invariant, checked rather than enforced: a pruned weight that
// moved means a bug in the masking, and must not be hidden.
Status CheckMasksHeld(const TrainOptions& o, const std::vector<torch::Tensor>& params) {
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < o.masks.size(); ++i) {
    if (!o.masks[i].defined()) continue;
    const int64_t leaked =
        params[i].ne(0).logical_and(o.masks[i].logical_not()).sum().item<int64_t>();
    if (leaked != 0) {
      return Status::Internal(std::to_string(leaked) + " pruned weights of parameter " +
                              std::to_string(i) + " became nonzero during training");
    }
  }
  return Status::OK();
}

}  // namespace

Result<TrainStats> TrainLocal(Model& model, const TensorDataset& data,
                              const TrainOptions& options) {
  const int64_t n = data.size();
  std::vector<torch::Tensor> params = model.parameters();
  // Masks and trainable flags are per state tensor: the parameters, then the
  // running statistics (which the forward pass moves, not the optimizer).
  const std::vector<torch::Tensor> state = StateTensors(model);
  FL_RETURN_IF_ERROR(CheckTrainOptions(options, n, params, state.size()));
  const int64_t batch = options.batch_size <= 0 ? n : std::min(options.batch_size, n);
  Freeze freeze(model, options, params, state);
  if (freeze.trained().empty()) return Status::InvalidArgument("every parameter is frozen");
  ThreadScope threads(options.threads);
  TeacherMode teacher_mode(options.teacher);
  TrainStats stats;
  const double t0 = NowSeconds();
  try {
    model.train();
    // A frozen BatchNorm normalises as it serves: with its running statistics.
    if (!freeze.stat_names().empty()) model.EvalModulesOf(freeze.stat_names());
    torch::optim::SGD optimizer(freeze.trained(), torch::optim::SGDOptions(options.lr)
                                                      .momentum(options.momentum)
                                                      .weight_decay(options.weight_decay));
    std::vector<torch::Tensor> pruned(options.masks.size());
    for (size_t i = 0; i < options.masks.size(); ++i) {
      if (options.masks[i].defined()) pruned[i] = options.masks[i].to(torch::kBool).logical_not();
    }
    std::vector<torch::Tensor> anchor;
    if (options.proximal_mu > 0) {
      for (const auto& p : params) anchor.push_back(p.detach().clone());
    }
    EpochRun run{model,     data,   options,
                 params,    pruned, anchor,
                 optimizer, batch,  state.size() > params.size()};
    Random rng(options.seed);
    std::vector<int64_t> order(n);
    for (int epoch = 1; epoch <= options.epochs; ++epoch) run.Run(epoch, &rng, &order, &stats);
    FL_RETURN_IF_ERROR(CheckMasksHeld(options, params));
    freeze.RestoreStats();
    // Gradients are not needed until the next call, which makes new ones: a
    // device keeps one copy of the model's size less between rounds.
    for (auto& p : params) p.mutable_grad().reset();
  } catch (const c10::Error& e) {
    return Status::Internal("local training failed", e.what_without_backtrace());
  }
  stats.seconds = NowSeconds() - t0;
  return stats;
}

void RetainFreedTensorMemory() {
  static std::once_flag once;
  std::call_once(once, [] {
    // Blocks up to 32 MiB come from the heap and are reused; the heap is given
    // back to the kernel only when 32 MiB at its top are free.
    mallopt(M_MMAP_THRESHOLD, 32 << 20);
    mallopt(M_TRIM_THRESHOLD, 32 << 20);
  });
}

namespace {

// Accumulates loss and correct predictions over the batches of one pass.
class EvalPass {
 public:
  explicit EvalPass(Model& model) : model_(model) {
    model_.eval();
    infer_ = model_.PrepareInference();
  }
  ~EvalPass() { model_.train(); }

  void Add(const torch::Tensor& x, const torch::Tensor& y) {
    auto logits = infer_(x);
    loss_sum_ +=
        torch::nn::functional::cross_entropy(
            logits, y, torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum))
            .item<double>();
    correct_ += logits.argmax(1).eq(y).sum().item<int64_t>();
  }

  EvalResult Result(int64_t n) const {
    EvalResult r;
    r.count = n;
    r.accuracy = static_cast<double>(correct_) / n;
    r.mean_loss = loss_sum_ / n;
    return r;
  }

 private:
  Model& model_;
  InferenceFn infer_;
  double loss_sum_{0};
  int64_t correct_{0};
};

}  // namespace

namespace {

// One evaluation pass over `n` samples in batches of `batch_size`: the checks,
// allocator and thread settings, and the LibTorch error boundary both
// overloads share. `batch(begin, end, &x, &y)` provides the tensors of
// samples [begin, end).
template <typename BatchFn>
Result<EvalResult> EvaluateBatches(Model& model, int64_t n, int64_t batch_size, int threads,
                                   BatchFn&& batch) {
  if (n == 0) return Status::InvalidArgument("cannot evaluate on an empty dataset");
  RetainFreedTensorMemory();
  ThreadScope scope(threads);
  try {
    torch::NoGradGuard no_grad;
    EvalPass pass(model);
    for (int64_t begin = 0; begin < n; begin += batch_size) {
      const int64_t end = std::min(begin + batch_size, n);
      torch::Tensor x, y;
      batch(begin, end, &x, &y);
      pass.Add(x, y);
    }
    return pass.Result(n);
  } catch (const c10::Error& e) {
    return Status::Internal("evaluation failed", e.what_without_backtrace());
  }
}

}  // namespace

Result<EvalResult> Evaluate(Model& model, const TensorDataset& data, int64_t batch_size,
                            int threads) {
  const int64_t n = data.size();
  if (batch_size <= 0) batch_size = n;
  return EvaluateBatches(model, n, batch_size, threads,
                         [&](int64_t begin, int64_t end, torch::Tensor* x, torch::Tensor* y) {
                           *x = data.images.slice(0, begin, end);
                           *y = data.labels.slice(0, begin, end);
                         });
}

Result<EvalResult> Evaluate(Model& model, const Dataset& data, int64_t batch_size, int threads) {
  const int64_t n = data.count;
  if (n == 0) return Status::InvalidArgument("cannot evaluate on an empty dataset");
  if (batch_size <= 0 || batch_size > n) batch_size = n;
  torch::Tensor raw, labels_u8, images, labels, mean, std;
  try {
    raw = RawSamples(data);
    labels_u8 =
        torch::from_blob(const_cast<uint8_t*>(data.labels.data()), {data.count}, torch::kUInt8);
    if (!data.normalization.empty()) std::tie(mean, std) = NormalizationTensors(data);
    // Reused for every batch; the last, shorter batch uses a prefix.
    images = torch::empty(BatchShape(data, batch_size), torch::kFloat32);
    labels = torch::empty({batch_size}, torch::kInt64);
  } catch (const c10::Error& e) {
    return Status::Internal("evaluation buffers", e.what_without_backtrace());
  }
  return EvaluateBatches(model, n, batch_size, threads,
                         [&](int64_t begin, int64_t end, torch::Tensor* x, torch::Tensor* y) {
                           *x = images.slice(0, 0, end - begin);
                           *y = labels.slice(0, 0, end - begin);
                           NormalizeInto(data, raw, mean, std, begin, end, x);
                           y->copy_(labels_u8.slice(0, begin, end));
                         });
}

}  // namespace fl
