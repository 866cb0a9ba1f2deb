// fl-local: trains a model-zoo network on one federated client's shard and
// reports its test accuracy. The single-client baseline that every federated
// run is compared against.
//
//   fl-local --model mnist_cnn --partition iid --clients 10 --client 0 --epochs 2
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <string>

#include "client/local_client.h"
#include "common/clock.h"
#include "common/data_flags.h"
#include "common/dataset.h"
#include "common/model_zoo.h"
#include "common/partition.h"

namespace {

// Flags, one per field, with their defaults.
struct Options {
  // Folder with the four MNIST-format IDX files.
  fl::DataOptions data = fl::DataAt(FL_DEFAULT_DATA_DIR);
  std::string trainable;
  // Model zoo architecture.
  std::string model = "mnist_cnn";
  // How the training set is split across clients: iid, shards, dirichlet.
  std::string partition = "iid";
  // Number of clients the training set is split across.
  int clients = 10;
  // Which client's shard to train on.
  int client = 0;
  // Dirichlet concentration (partition = dirichlet).
  double alpha = 0.5;
  // Local epochs, batch size, SGD hyperparameters.
  int epochs = 2;
  int64_t batch = 10;
  double lr = 0.05;
  double momentum = 0.0;
  double weight_decay = 0.0;
  // Seed for partition, initial weights and shuffling.
  uint64_t seed = 1;
  // Intra-op threads for training.
  int threads = 1;
};

void AddFlags(CLI::App& app, Options& o) {
  app.add_option("--data", o.data.path,
                 "Training data: an IDX folder (MNIST's file names), a CSV file, or class "
                 "folders of images")
      ->capture_default_str();
  std::string models;
  for (const auto& m : fl::ListModels()) models += std::string(models.empty() ? "" : ", ") + m.name;
  app.add_option("--model", o.model, "Architecture: " + models + ", or a TorchScript file (.pt)")
      ->capture_default_str();
  app.add_option("--partition", o.partition, "iid | shards | dirichlet")->capture_default_str();
  app.add_option("--clients", o.clients, "Clients the training set is split across")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--client", o.client, "Index of the client whose shard to train on")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option("--alpha", o.alpha, "Dirichlet concentration")->capture_default_str();
  app.add_option("--epochs,-E", o.epochs, "Local epochs")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--batch,-B", o.batch, "Batch size (0 = whole shard)")->capture_default_str();
  app.add_option("--lr", o.lr, "SGD learning rate")->capture_default_str();
  app.add_option("--momentum", o.momentum, "SGD momentum")->capture_default_str();
  app.add_option("--weight-decay", o.weight_decay, "L2 weight decay")->capture_default_str();
  app.add_option("--seed", o.seed, "Seed for partition, weights and shuffling")
      ->capture_default_str();
  app.add_option("--threads", o.threads, "Intra-op threads")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  fl::AddDataFormatFlags(app, &o.data);
  app.add_option("--trainable", o.trainable,
                 "Patterns of the tensors that train, e.g. 'fc2.*' (the others are frozen)");
}

// The client's shard of `train`, with its labels' histogram in the log.
fl::Result<std::vector<int64_t>> Shard(const Options& o, const fl::Dataset& train) {
  auto scheme = fl::ParsePartitionScheme(o.partition);
  if (!scheme.ok()) return fl::Status::InvalidArgument("--partition", scheme.status().message());
  fl::PartitionOptions popts;
  popts.scheme = *scheme;
  popts.clients = o.clients;
  popts.alpha = o.alpha;
  popts.seed = o.seed;
  auto parts = fl::MakePartition(train.labels, train.num_classes, popts);
  if (!parts.ok()) return parts.status().WithContext("partition");
  std::vector<int64_t> shard = (*parts)[o.client];
  std::vector<int> hist(train.num_classes, 0);
  for (int64_t i : shard) hist[train.labels[i]]++;
  std::string hs;
  for (int c = 0; c < train.num_classes; ++c) hs += (c ? " " : "") + std::to_string(hist[c]);
  spdlog::info("partition {} over {} clients; client {} holds {} samples, per label [{}]",
               o.partition, o.clients, o.client, shard.size(), hs);
  return shard;
}

// The training instructions: the model's initial weights and the flags'
// hyperparameters.
fl::Result<fl::FitIns> FitInsOf(const Options& o) {
  auto init = fl::CreateModel(o.model, o.seed);
  if (!init.ok()) return init.status();
  fl::FitIns ins;
  ins.parameters = fl::GetModelState((*init)->architecture, **init);
  ins.epochs = o.epochs;
  ins.batch_size = o.batch;
  ins.lr = o.lr;
  ins.momentum = o.momentum;
  ins.weight_decay = o.weight_decay;
  ins.seed = o.seed;
  if (!o.trainable.empty()) {
    auto which = fl::MatchTrainable(ins.parameters, o.trainable);
    if (!which.ok()) return which.status();
    ins.trainable = std::move(which).value();
    spdlog::info("trainable: {} of {} parameters",
                 fl::SelectTensors(ins.parameters, ins.trainable).NumParameters(),
                 ins.parameters.NumParameters());
  }
  return ins;
}

// Evaluates, trains, evaluates, prints the table. The exit code.
int TrainAndReport(const Options& o, fl::LocalClient* client, const fl::FitIns& ins,
                   const fl::Dataset& test, size_t shard_size) {
  const double e0 = fl::NowSeconds();
  auto before = client->Evaluate(ins.parameters, test);
  const double eval_before_secs = fl::NowSeconds() - e0;
  if (!before.ok()) {
    spdlog::error("{}", before.status().ToString());
    return 1;
  }
  const double t0 = fl::NowSeconds();
  auto fit = client->Fit(ins, [&](int epoch, double loss, double acc, double secs) {
    spdlog::info(
        "epoch {}/{}: train loss {:.4f}, train accuracy {:.2f}%, {:.1f} s ({:.0f} samples/s)",
        epoch, o.epochs, loss, 100 * acc, secs, shard_size / secs);
  });
  if (!fit.ok()) {
    spdlog::error("training: {}", fit.status().ToString());
    return 1;
  }
  const double train_secs = fl::NowSeconds() - t0;
  const double e1 = fl::NowSeconds();
  auto after = client->Evaluate(fit->parameters, test);
  const double eval_after_secs = fl::NowSeconds() - e1;
  if (!after.ok()) {
    spdlog::error("{}", after.status().ToString());
    return 1;
  }
  std::printf("\n%-28s %s\n", "model", o.model.c_str());
  std::printf("%-28s %s, client %d of %d, %zu samples\n", "shard", o.partition.c_str(), o.client,
              o.clients, shard_size);
  std::printf("%-28s %.1f s (%d epochs)\n", "training time", train_secs, o.epochs);
  std::printf("%-28s %.2f%% (loss %.4f)\n", "test accuracy before", 100 * before->accuracy,
              before->loss);
  std::printf("%-28s %.2f%% (loss %.4f) on %lld test images\n", "test accuracy after",
              100 * after->accuracy, after->loss, static_cast<long long>(after->num_examples));
  std::printf("%-28s %.2f s before, %.2f s after\n", "evaluation time", eval_before_secs,
              eval_after_secs);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{"fl-local: train a model on one client's shard and report test accuracy"};
  AddFlags(app, o);
  CLI11_PARSE(app, argc, argv);
  if (o.client >= o.clients) {
    spdlog::error("--client {} is out of range for --clients {}", o.client, o.clients);
    return 2;
  }
  if (!fl::ParsePartitionScheme(o.partition).ok()) {
    spdlog::error("--partition: {}", fl::ParsePartitionScheme(o.partition).status().message());
    return 2;
  }
  spdlog::info("seed {}", o.seed);
  auto splits = fl::LoadData(o.data, /*need_train=*/true, /*need_test=*/true);
  if (!splits.ok()) {
    spdlog::error("loading data: {}", splits.status().ToString());
    return 1;
  }
  spdlog::info("data {}: {}", o.data.path, fl::DescribeData(*splits));
  auto shard = Shard(o, splits->train);
  if (!shard.ok()) {
    spdlog::error("{}", shard.status().message());
    return 2;
  }
  auto client = fl::LocalClient::Create(o.model, splits->train, *shard, o.threads);
  if (!client.ok()) {
    spdlog::error("creating client: {}", client.status().ToString());
    return 1;
  }
  auto ins = FitInsOf(o);
  if (!ins.ok()) {
    spdlog::error("{}", ins.status().ToString());
    return 2;
  }
  spdlog::info("model {} ({} parameters); training E={} B={} lr={} momentum={} on {} thread(s)",
               o.model, ins->parameters.NumParameters(), o.epochs, o.batch, o.lr, o.momentum,
               o.threads);
  return TrainAndReport(o, client->get(), *ins, splits->test, shard->size());
}
