#include "common/trainer.h"

#include <malloc.h>

#include <mutex>
#include <numeric>

#include "common/clock.h"
#include "common/random.h"

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

TensorDataset ToTensors(const ImageDataset& data) {
  TensorDataset out;
  auto bytes = torch::from_blob(const_cast<uint8_t*>(data.pixels.data()),
                                {data.count, 1, data.rows, data.cols}, torch::kUInt8);
  out.images = (bytes.to(torch::kFloat32).div_(255.0).sub_(kMnistPixelMean).div_(kMnistPixelStd));
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

Result<TrainStats> TrainLocal(Model& model, const TensorDataset& data,
                              const TrainOptions& options) {
  const int64_t n = data.size();
  if (n == 0) return Status::InvalidArgument("cannot train on an empty dataset");
  if (options.epochs < 1) {
    return Status::InvalidArgument("epochs must be >= 1, got " + std::to_string(options.epochs));
  }
  if (!(options.lr > 0)) {
    return Status::InvalidArgument("learning rate must be > 0, got " + std::to_string(options.lr));
  }
  if (options.teacher != nullptr &&
      (!(options.temperature > 0) || options.distill_alpha < 0 || options.distill_alpha > 1)) {
    return Status::InvalidArgument("distillation needs temperature > 0 and alpha in [0, 1]");
  }
  const int64_t batch = options.batch_size <= 0 ? n : std::min(options.batch_size, n);
  std::vector<torch::Tensor> params = model.parameters();
  if (!options.masks.empty() && options.masks.size() != params.size()) {
    return Status::InvalidArgument("got " + std::to_string(options.masks.size()) + " masks for " +
                                   std::to_string(params.size()) + " parameters");
  }
  for (size_t i = 0; i < options.masks.size(); ++i) {
    if (options.masks[i].defined() && !options.masks[i].sizes().equals(params[i].sizes())) {
      return Status::InvalidArgument("mask " + std::to_string(i) + " does not match its parameter");
    }
  }
  ThreadScope threads(options.threads);
  TrainStats stats;
  const double t0 = NowSeconds();
  try {
    model.train();
    torch::optim::SGD optimizer(model.parameters(), torch::optim::SGDOptions(options.lr)
                                                        .momentum(options.momentum)
                                                        .weight_decay(options.weight_decay));
    // Where each parameter is pruned (the masks' complement, as bool).
    std::vector<torch::Tensor> pruned(options.masks.size());
    for (size_t i = 0; i < options.masks.size(); ++i) {
      if (options.masks[i].defined()) pruned[i] = options.masks[i].to(torch::kBool).logical_not();
    }
    // FedProx's anchor: the parameters training started from.
    std::vector<torch::Tensor> anchor;
    if (options.proximal_mu > 0) {
      for (const auto& p : params) anchor.push_back(p.detach().clone());
    }
    Random rng(options.seed);
    std::vector<int64_t> order(n);
    for (int epoch = 1; epoch <= options.epochs; ++epoch) {
      const double e0 = NowSeconds();
      std::iota(order.begin(), order.end(), 0);
      rng.Shuffle(&order);
      auto perm = torch::tensor(order, torch::kInt64);
      double loss_sum = 0;
      int64_t correct = 0;
      for (int64_t begin = 0; begin < n; begin += batch) {
        const int64_t end = std::min(begin + batch, n);
        auto idx = perm.slice(0, begin, end);
        auto x = data.images.index_select(0, idx);
        auto y = data.labels.index_select(0, idx);
        optimizer.zero_grad();
        auto logits = model.forward(x);
        auto loss = torch::nn::functional::cross_entropy(logits, y);
        if (options.teacher != nullptr) {
          torch::Tensor soft;
          {
            torch::NoGradGuard no_grad;
            soft = torch::softmax(options.teacher->forward(x) / options.temperature, 1);
          }
          const double t = options.temperature;
          auto kd = torch::nn::functional::kl_div(
              torch::log_softmax(logits / t, 1), soft,
              torch::nn::functional::KLDivFuncOptions().reduction(torch::kBatchMean));
          loss = options.distill_alpha * t * t * kd + (1 - options.distill_alpha) * loss;
        }
        loss.backward();
        if (!anchor.empty()) {
          torch::NoGradGuard no_grad;
          for (size_t i = 0; i < params.size(); ++i) {
            if (!params[i].grad().defined()) continue;
            params[i].grad().add_(params[i].detach() - anchor[i], options.proximal_mu);
          }
        }
        for (size_t i = 0; i < pruned.size(); ++i) {
          // A fill, not a product: a gradient that is not finite (a model
          // diverging) times 0 would still be NaN at a pruned position.
          if (pruned[i].defined() && params[i].grad().defined()) {
            params[i].grad().masked_fill_(pruned[i], 0);
          }
        }
        optimizer.step();
        loss_sum += loss.item<double>() * (end - begin);
        // Training accuracy is only reported through on_epoch; federated
        // rounds do not ask for it, so they skip the argmax.
        if (options.on_epoch) correct += logits.argmax(1).eq(y).sum().item<int64_t>();
        stats.steps++;
      }
      stats.samples_seen += n;
      const double mean = loss_sum / n;
      if (epoch == 1) stats.first_epoch_loss = mean;
      stats.last_epoch_loss = mean;
      if (options.on_epoch) {
        options.on_epoch(
            EpochStats{epoch, mean, static_cast<double>(correct) / n, NowSeconds() - e0});
      }
    }
    // The mask invariant, checked rather than enforced: a pruned weight that
    // moved means a bug in the masking above, and must not be hidden.
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < options.masks.size(); ++i) {
      if (!options.masks[i].defined()) continue;
      const int64_t leaked =
          params[i].ne(0).logical_and(options.masks[i].logical_not()).sum().item<int64_t>();
      if (leaked != 0) {
        return Status::Internal(std::to_string(leaked) + " pruned weights of parameter " +
                                std::to_string(i) + " became nonzero during training");
      }
    }
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

Result<EvalResult> Evaluate(Model& model, const ImageDataset& data, int64_t batch_size,
                            int threads) {
  const int64_t n = data.count;
  if (n == 0) return Status::InvalidArgument("cannot evaluate on an empty dataset");
  if (batch_size <= 0 || batch_size > n) batch_size = n;
  torch::Tensor pixels, labels_u8, images, labels;
  try {
    pixels = torch::from_blob(const_cast<uint8_t*>(data.pixels.data()),
                              {data.count, 1, data.rows, data.cols}, torch::kUInt8);
    labels_u8 =
        torch::from_blob(const_cast<uint8_t*>(data.labels.data()), {data.count}, torch::kUInt8);
    // Reused for every batch; the last, shorter batch uses a prefix.
    images = torch::empty({batch_size, 1, data.rows, data.cols}, torch::kFloat32);
    labels = torch::empty({batch_size}, torch::kInt64);
  } catch (const c10::Error& e) {
    return Status::Internal("evaluation buffers", e.what_without_backtrace());
  }
  return EvaluateBatches(model, n, batch_size, threads,
                         [&](int64_t begin, int64_t end, torch::Tensor* x, torch::Tensor* y) {
                           *x = images.slice(0, 0, end - begin);
                           *y = labels.slice(0, 0, end - begin);
                           // Same arithmetic as ToTensors, so both overloads give the same numbers.
                           x->copy_(pixels.slice(0, begin, end))
                               .div_(255.0)
                               .sub_(kMnistPixelMean)
                               .div_(kMnistPixelStd);
                           y->copy_(labels_u8.slice(0, begin, end));
                         });
}

}  // namespace fl
