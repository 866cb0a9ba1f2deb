#include "client/local_client.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstring>

#include "common/model_zoo.h"
#include "common/text.h"
#include "common/trainer.h"
#include "common/wire/limits.h"

namespace fl {

class SharedModel {
 public:
  std::string source;        // the zoo name or TorchScript file it was made from
  std::string architecture;  // what model states carry (ModelArchitecture)
  ModelPtr model;
};

Result<std::shared_ptr<SharedModel>> NewSharedModel(const std::string& architecture) {
  auto model = CreateModel(architecture, /*seed=*/0);
  if (!model.ok()) return model.status();
  auto s = std::make_shared<SharedModel>();
  s->source = architecture;
  s->architecture = (*model)->architecture;
  s->model = std::move(model).value();
  return s;
}

struct LocalClient::Impl {
  // What the client was asked to train; empty: whatever the server sends.
  std::string requested;
  // The architecture of `model` (empty until the first TASK when following).
  std::string architecture;
  std::shared_ptr<SharedModel> model;
  TensorDataset shard;
  // The shard as loaded, to normalise again when the federation's
  // normalisation (in the TASK) is not the one `shard` has.
  Dataset raw;
  // The shard's sample shape and class count, which a model must fit.
  std::vector<int64_t> sample_shape;
  int num_classes{0};
  int threads{1};
};

Status CheckModelFitsData(const std::string& architecture, const Dataset& data,
                          const std::string& data_name) {
  auto model = CreateModel(architecture, /*seed=*/1);
  if (!model.ok()) return model.status();
  return CheckModelFitsData(**model, architecture, data, data_name);
}

LocalClient::LocalClient(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
LocalClient::~LocalClient() = default;

Result<std::unique_ptr<LocalClient>> LocalClient::Create(const std::string& architecture,
                                                         const Dataset& data,
                                                         const std::vector<int64_t>& indices,
                                                         int threads,
                                                         std::shared_ptr<SharedModel> shared) {
  if (indices.empty()) return Status::InvalidArgument("client has no training samples");
  if (shared && shared->source != architecture) {
    return Status::InvalidArgument("shared model is '" + shared->source + "', client needs '" +
                                   architecture + "'");
  }
  if (shared && architecture.empty()) {
    return Status::InvalidArgument("a client on a shared model needs its architecture");
  }
  if (!shared && !architecture.empty()) {
    auto own = NewSharedModel(architecture);
    if (!own.ok()) return own.status();
    shared = std::move(own).value();
    FL_RETURN_IF_ERROR(
        CheckModelFitsData(*shared->model, architecture, data, "this device's data"));
  }
  // Copy only this client's images before converting to float, so creating many
  // small clients costs in proportion to their shards, not the whole dataset.
  auto local = SelectSamples(data, indices);
  if (!local.ok()) return local.status();
  auto impl = std::make_unique<Impl>();
  // A TorchScript file is known by its content (ModelArchitecture).
  impl->requested = shared ? shared->architecture : architecture;
  impl->architecture = impl->requested;
  impl->model = std::move(shared);
  impl->threads = threads;
  impl->sample_shape = data.shape;
  impl->num_classes = data.num_classes;
  try {
    impl->shard = ToTensors(*local);
    impl->raw = std::move(local).value();
  } catch (const c10::Error& e) {
    return Status::Internal("building the client's shard", e.what_without_backtrace());
  }
  return std::unique_ptr<LocalClient>(new LocalClient(std::move(impl)));
}

const std::string& LocalClient::architecture() const { return impl_->requested; }

int64_t LocalClient::num_examples() const { return impl_->shard.size(); }

ModelState LocalClient::GetParameters() const {
  if (!impl_->model) return ModelState();
  return GetModelState(impl_->architecture, *impl_->model->model);
}

Status LocalClient::Prepare(const std::string& architecture) {
  if (impl_->requested.empty() && architecture != impl_->architecture) {
    // Following the server: build the architecture its TASK carries, from the
    // zoo only. A TorchScript model is code: a device runs one only when its
    // operator gave it the file (--model FILE.pt), never a path a TASK names.
    bool zoo = false;
    for (const auto& info : ListModels()) zoo = zoo || architecture == info.name;
    if (!zoo) {
      return Status::FailedPrecondition(
          "the server trains '" + Printable(architecture) + "', which is not a built-in model",
          architecture.rfind("torchscript:", 0) == 0
              ? "start fl-client with --model FILE.pt, the same TorchScript file as the server's"
              : "this fl-client knows only the built-in models");
    }
    auto model = NewSharedModel(architecture);
    if (!model.ok()) {
      return Status::FailedPrecondition(
          "the server trains '" + Printable(architecture) + "', which this fl-client does not know",
          model.status().message());
    }
    FL_RETURN_IF_ERROR(CheckModelFitsData(*(*model)->model, Printable(architecture),
                                          impl_->sample_shape, impl_->num_classes,
                                          "this device's data"));
    impl_->model = std::move(model).value();
    impl_->architecture = architecture;
  }
  if (architecture != impl_->architecture) {
    return Status::InvalidArgument("task is for model '" + Printable(architecture) +
                                   "' but this client runs '" + impl_->architecture + "'");
  }
  return Status::OK();
}

Status LocalClient::AdoptModelFile(const std::string& path, const std::string& architecture) {
  auto model = NewSharedModel(path);
  if (!model.ok()) return model.status();
  if ((*model)->architecture != architecture) {
    return Status::InvalidArgument(path, "is " + (*model)->architecture + ", not " + architecture);
  }
  // The federation's model cannot train on this device's data: no later TASK
  // changes that, so the session ends.
  if (Status fits = CheckModelFitsData(*(*model)->model, path, impl_->sample_shape,
                                       impl_->num_classes, "this device's data");
      !fits.ok()) {
    return Status::FailedPrecondition(fits.message());
  }
  impl_->model = std::move(model).value();
  impl_->requested = impl_->architecture = architecture;
  spdlog::info("training {} from {} (the server's file, signature checked)", architecture, path);
  return Status::OK();
}

Result<std::vector<TensorLayout>> LocalClient::Layout(const std::string& architecture) {
  FL_RETURN_IF_ERROR(Prepare(architecture));
  std::vector<TensorLayout> layout;
  for (const auto& p : NamedStateTensors(*impl_->model->model)) {
    layout.push_back({p.key(), p.value().sizes().vec()});
  }
  return layout;
}

size_t LocalClient::TaskPayloadLimit() const {
  auto limit_of = [](const Model& m) {
    size_t values = 0, tensors = 0;
    for (const auto& p : NamedStateTensors(m)) {
      values += static_cast<size_t>(p.value().numel());
      ++tensors;
    }
    return wire::TaskPayloadLimit(values, tensors);
  };
  if (!impl_->requested.empty() && impl_->model) return limit_of(*impl_->model->model);
  size_t largest = 0;
  for (const auto& info : ListModels()) {
    auto m = CreateModel(info.name, 0);
    if (m.ok()) largest = std::max(largest, limit_of(**m));
  }
  return largest;
}

Status LocalClient::Adopt(const FitIns& ins) {
  FL_RETURN_IF_ERROR(Prepare(ins.parameters.architecture));
  FL_RETURN_IF_ERROR(AdoptNormalization(ins.normalization));
  return AdoptClassNames(ins.class_names);
}

Status LocalClient::AdoptNormalization(const Normalization& want) {
  if (want.empty() ||
      (want.mean == impl_->raw.normalization.mean && want.std == impl_->raw.normalization.std)) {
    return Status::OK();
  }
  FL_RETURN_IF_ERROR(CheckNormalization(impl_->raw, want, "the TASK's normalisation"));
  spdlog::info("normalising this device's data as the federation does: {} (was {})",
               want.ToString(),
               impl_->raw.normalization.empty() ? std::string("none")
                                                : impl_->raw.normalization.ToString());
  impl_->raw.normalization = want;
  try {
    impl_->shard = ToTensors(impl_->raw);
  } catch (const c10::Error& e) {
    return Status::Internal("normalising the client's shard", e.what_without_backtrace());
  }
  return Status::OK();
}

// A device that lacks a class (or lists them in another order) numbers its
// classes as the federation does. One whose class the federation does not
// have cannot take part: FailedPrecondition stops it with the reason.
// Renumbered on a copy, kept only when the model takes it.
Status LocalClient::AdoptClassNames(const std::vector<std::string>& names) {
  if (names.empty() || impl_->raw.class_names.empty() || names == impl_->raw.class_names) {
    return Status::OK();
  }
  Dataset renumbered = impl_->raw;
  if (Status st = UseClassNames(&renumbered, names, "this device's data"); !st.ok()) {
    return Status::FailedPrecondition(st.message());
  }
  if (Status st = CheckModelFitsData(*impl_->model->model, impl_->architecture,
                                     impl_->sample_shape, renumbered.num_classes,
                                     "the federation's classes");
      !st.ok()) {
    return Status::FailedPrecondition(st.message());
  }
  const std::vector<std::string> had = std::move(impl_->raw.class_names);
  impl_->raw = std::move(renumbered);
  std::string mapping;
  for (size_t i = 0; i < had.size(); ++i) {
    const size_t to =
        static_cast<size_t>(std::find(names.begin(), names.end(), had[i]) - names.begin());
    mapping += (i ? ", " : "") + Printable(had[i]) + " " + std::to_string(to);
  }
  spdlog::info("numbering this device's classes as the federation does ({} classes): {}",
               names.size(), mapping);
  impl_->num_classes = impl_->raw.num_classes;
  try {
    impl_->shard = ToTensors(impl_->raw);
  } catch (const c10::Error& e) {
    return Status::Internal("relabelling the client's shard", e.what_without_backtrace());
  }
  return Status::OK();
}

Result<FitRes> LocalClient::Fit(const FitIns& ins, const EpochCallback& on_epoch) {
  FL_RETURN_IF_ERROR(Adopt(ins));
  Model& model = *impl_->model->model;
  FL_RETURN_IF_ERROR(SetModelState(model, ins.parameters));
  TrainOptions opts;
  opts.epochs = ins.epochs;
  opts.batch_size = ins.batch_size;
  opts.lr = ins.lr;
  opts.momentum = ins.momentum;
  opts.weight_decay = ins.weight_decay;
  opts.proximal_mu = ins.proximal_mu;
  opts.seed = ins.seed;
  opts.threads = impl_->threads;
  opts.masks = MasksOf(ins.parameters);
  if (!ins.trainable.empty()) {
    if (ins.trainable.size() != ins.parameters.tensors.size()) {
      return Status::InvalidArgument("the TASK names " + std::to_string(ins.trainable.size()) +
                                     " trainable flags for a model of " +
                                     std::to_string(ins.parameters.tensors.size()) + " tensors");
    }
    for (uint8_t t : ins.trainable) opts.frozen.push_back(t == 0);
  }
  if (on_epoch) {
    opts.on_epoch = [&](const EpochStats& e) {
      on_epoch(e.epoch, e.mean_loss, e.accuracy, e.seconds);
    };
  }
  opts.on_step = ins.on_progress;
  auto stats = TrainLocal(model, impl_->shard, opts);
  if (!stats.ok()) return stats.status();
  FitRes res;
  res.parameters = GetParameters();
  for (size_t i = 0; i < res.parameters.tensors.size(); ++i) {
    res.parameters.tensors[i].mask = ins.parameters.tensors[i].mask;  // the mask is shared state
  }
  res.num_examples = impl_->shard.size();
  res.first_epoch_loss = stats->first_epoch_loss;
  res.last_epoch_loss = stats->last_epoch_loss;
  res.seconds = stats->seconds;
  return res;
}

Result<EvaluateRes> LocalClient::Evaluate(const ModelState& parameters, const Dataset& data) {
  if (!impl_->model) {
    return Status::FailedPrecondition("the client has no model yet (no TASK received)");
  }
  Model& model = *impl_->model->model;
  FL_RETURN_IF_ERROR(SetModelState(model, parameters));
  // Straight from the raw bytes: no float copy of the whole set.
  auto r = fl::Evaluate(model, data, kEvalBatch, impl_->threads);
  if (!r.ok()) return r.status();
  return EvaluateRes{r->accuracy, r->mean_loss, r->count};
}

}  // namespace fl
