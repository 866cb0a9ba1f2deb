// fl-partition: writes one data folder per client from a shared dataset.
//
// Splits the training set of an MNIST-format folder with one of fedge's
// partitioners (the same ones fl-sim and fl-client --partition use, so a seed
// gives the same shards everywhere) and writes each client's shard as the
// train-* IDX files of its own folder, ready for fl-client --data. With
// --test, every folder also gets the test split (for clients that evaluate).
//
//   fl-partition --data data/mnist --scheme iid --clients 100 --only 10 --out runs/devices
//   -> runs/devices/c0 ... runs/devices/c9, 600 images each
#include "common/partition.h"

#include <CLI/CLI.hpp>
#include <cstdio>
#include <string>

#include "common/dataset.h"

int main(int argc, char** argv) {
  std::string data = FL_DEFAULT_DATA_DIR;
  std::string scheme = "iid";
  std::string out;
  int clients = 100;
  int only = 0;
  double alpha = 0.5;
  uint64_t seed = 1;
  bool with_test = false;
  CLI::App app{"fl-partition: write one data folder per client (IDX files) from a shared set"};
  app.add_option("--data", data, "MNIST-format folder to split (its training set)")
      ->capture_default_str();
  app.add_option("--scheme", scheme, "iid | shards | dirichlet")->capture_default_str();
  app.add_option("--clients", clients, "Number of shards")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--only", only, "Write only the first N shards (0: all)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option("--alpha", alpha, "Dirichlet concentration (--scheme dirichlet)")
      ->capture_default_str();
  app.add_option("--seed", seed, "Partition seed")->capture_default_str();
  app.add_flag("--test", with_test, "Also copy the test split into every folder");
  app.add_option("--out", out, "Folder for the client folders c0, c1, ...")->required();
  CLI11_PARSE(app, argc, argv);

  auto fail = [](const fl::Status& st) {
    std::fprintf(stderr, "fl-partition: %s\n", st.ToString().c_str());
    return 1;
  };
  auto parsed = fl::ParsePartitionScheme(scheme);
  if (!parsed.ok()) return fail(parsed.status());
  auto train = fl::LoadMnistFolder(data, fl::Split::kTrain);
  if (!train.ok()) return fail(train.status());
  fl::Result<fl::ImageDataset> test = fl::ImageDataset();
  if (with_test) {
    test = fl::LoadMnistFolder(data, fl::Split::kTest);
    if (!test.ok()) return fail(test.status());
  }
  fl::PartitionOptions po;
  po.scheme = *parsed;
  po.clients = clients;
  po.alpha = alpha;
  po.seed = seed;
  auto parts = fl::MakePartition(train->labels, train->num_classes, po);
  if (!parts.ok()) return fail(parts.status());
  const int n = only > 0 ? std::min(only, clients) : clients;
  for (int k = 0; k < n; ++k) {
    auto shard = fl::SelectSamples(*train, (*parts)[k]);
    if (!shard.ok()) return fail(shard.status());
    const std::string dir = out + "/c" + std::to_string(k);
    fl::Status st = fl::WriteMnistFolder(dir, fl::Split::kTrain, *shard);
    if (st.ok() && with_test) st = fl::WriteMnistFolder(dir, fl::Split::kTest, *test);
    if (!st.ok()) return fail(st);
    std::printf("%s: %lld training images\n", dir.c_str(), static_cast<long long>(shard->count));
  }
  std::printf("wrote %d client folder(s) of %d %s shards of %s (seed %llu)\n", n, clients,
              scheme.c_str(), data.c_str(), static_cast<unsigned long long>(seed));
  return 0;
}
