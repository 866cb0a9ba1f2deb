#include "client/local_client.h"

#include "common/model_zoo.h"
#include "common/trainer.h"

namespace fl {

struct LocalClient::Impl {
  std::string architecture;
  ModelPtr model;
  TensorDataset shard;
  int threads{1};
};

LocalClient::LocalClient(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
LocalClient::~LocalClient() = default;

Result<std::unique_ptr<LocalClient>> LocalClient::Create(const std::string& architecture,
                                                         const ImageDataset& data,
                                                         const std::vector<int64_t>& indices,
                                                         int threads) {
  if (indices.empty()) return Status::InvalidArgument("client has no training samples");
  auto model = CreateModel(architecture, /*seed=*/0);
  if (!model.ok()) return model.status();
  auto impl = std::make_unique<Impl>();
  impl->architecture = architecture;
  impl->model = std::move(model).value();
  impl->threads = threads;
  try {
    auto shard = Subset(ToTensors(data), indices);
    if (!shard.ok()) return shard.status();
    impl->shard = std::move(shard).value();
  } catch (const c10::Error& e) {
    return Status::Internal("building the client's shard", e.what_without_backtrace());
  }
  return std::unique_ptr<LocalClient>(new LocalClient(std::move(impl)));
}

int64_t LocalClient::num_examples() const { return impl_->shard.size(); }

ModelState LocalClient::GetParameters() const {
  return GetModelState(impl_->architecture, *impl_->model);
}

Result<FitRes> LocalClient::Fit(const FitIns& ins, const EpochCallback& on_epoch) {
  if (ins.parameters.architecture != impl_->architecture) {
    return Status::InvalidArgument("task is for model '" + ins.parameters.architecture +
                                   "' but this client runs '" + impl_->architecture + "'");
  }
  FL_RETURN_IF_ERROR(SetModelState(*impl_->model, ins.parameters));
  TrainOptions opts;
  opts.epochs = ins.epochs;
  opts.batch_size = ins.batch_size;
  opts.lr = ins.lr;
  opts.momentum = ins.momentum;
  opts.weight_decay = ins.weight_decay;
  opts.seed = ins.seed;
  opts.threads = impl_->threads;
  if (on_epoch) {
    opts.on_epoch = [&](const EpochStats& e) {
      on_epoch(e.epoch, e.mean_loss, e.accuracy, e.seconds);
    };
  }
  auto stats = TrainLocal(*impl_->model, impl_->shard, opts);
  if (!stats.ok()) return stats.status();
  FitRes res;
  res.parameters = GetParameters();
  res.num_examples = impl_->shard.size();
  res.first_epoch_loss = stats->first_epoch_loss;
  res.last_epoch_loss = stats->last_epoch_loss;
  res.seconds = stats->seconds;
  return res;
}

Result<EvaluateRes> LocalClient::Evaluate(const ModelState& parameters, const ImageDataset& data) {
  FL_RETURN_IF_ERROR(SetModelState(*impl_->model, parameters));
  TensorDataset test;
  try {
    test = ToTensors(data);
  } catch (const c10::Error& e) {
    return Status::Internal("converting the evaluation set", e.what_without_backtrace());
  }
  auto r = fl::Evaluate(*impl_->model, test);
  if (!r.ok()) return r.status();
  return EvaluateRes{r->accuracy, r->mean_loss, r->count};
}

}  // namespace fl
