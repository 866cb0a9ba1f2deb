// fl-partition: writes one data folder per client from a shared dataset.
//
// Splits the training set of an MNIST-format folder with one of fedge's
// partitioners (the same ones fl-sim and fl-client --partition use, so a seed
// gives the same shards everywhere) and writes each client's shard as the
// train-* IDX files of its own folder, ready for fl-client --data. With
// --test, every folder also gets the test split (for clients that evaluate).
//
//   fl-partition --data data/mnist --partition iid --clients 100 --only 10 --out runs/devices
//   -> runs/devices/c0 ... runs/devices/c9, 600 images each
#include "common/partition.h"

#include <CLI/CLI.hpp>
#include <cstdio>
#include <string>

#include "common/data_loader.h"
#include "common/dataset.h"

namespace {

// The group-column values whose samples client `k` holds, for the log.
std::string DeviceNames(const fl::Dataset& data, const fl::Partition& parts, int k) {
  std::vector<bool> seen(data.group_names.size(), false);
  std::string out;
  int listed = 0;
  for (int64_t i : parts[static_cast<size_t>(k)]) {
    const int32_t g = data.groups[static_cast<size_t>(i)];
    if (seen[static_cast<size_t>(g)]) continue;
    seen[static_cast<size_t>(g)] = true;
    if (++listed <= 3) out += (out.empty() ? "" : ", ") + data.group_names[static_cast<size_t>(g)];
  }
  return out + (listed > 3 ? ", ..." : "");
}

}  // namespace

int main(int argc, char** argv) {
  fl::DataOptions data = fl::DataAt(FL_DEFAULT_DATA_DIR);
  std::string scheme = "iid";
  std::string out;
  int clients = 100;
  int only = 0;
  double alpha = 0.5;
  uint64_t seed = 1;
  bool with_test = false;
  CLI::App app{"fl-partition: write one data folder per client (IDX files) from a shared set"};
  app.add_option("--data", data.path,
                 "Data to split (its training split): an IDX folder, a CSV file or class folders")
      ->capture_default_str();
  app.add_option("--partition,--scheme", scheme,
                 "iid | shards | dirichlet | column (a CSV column naming each sample's device: "
                 "--group-column); fl-sim's and fl-client's --partition")
      ->capture_default_str();
  app.add_option("--group-column", data.group_column,
                 "CSV data, --partition column: the column naming each sample's device (name or "
                 "0-based index)");
  app.add_option("--test-data", data.test_path, "With --test: where the test split comes from");
  app.add_option("--test-fraction", data.test_fraction,
                 "Hold out this fraction of --data as the test split (not given to any client; "
                 "with --test, copied into every folder)")
      ->check(CLI::Range(0.0, 0.99));
  app.add_option("--label-column", data.label_column,
                 "CSV data: the label column, by name or 0-based index (default: the last)");
  app.add_option("--clients", clients, "Number of shards")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--only", only, "Write only the first N shards (0: all)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option("--alpha", alpha, "Dirichlet concentration (--partition dirichlet)")
      ->capture_default_str();
  app.add_option("--seed", seed, "Partition seed")->capture_default_str();
  app.add_flag("--test", with_test, "Also copy the test split into every folder");
  app.add_option("--out", out, "Folder for the client folders c0, c1, ...")->required();
  CLI11_PARSE(app, argc, argv);

  auto fail = [](const fl::Status& st) {
    std::fprintf(stderr, "fl-partition: %s\n", st.ToString().c_str());
    return 1;
  };
  const bool by_column = scheme == "column";
  auto parsed = by_column ? fl::Result<fl::PartitionScheme>(fl::PartitionScheme::kIid)
                          : fl::ParsePartitionScheme(scheme);
  if (!parsed.ok()) return fail(parsed.status());
  // Devices get raw samples; the federation normalises them.
  data.normalize = "none";
  auto splits = fl::LoadData(data, /*need_train=*/true, /*need_test=*/with_test);
  if (!splits.ok()) return fail(splits.status());
  std::printf("data %s: %s\n", data.path.c_str(), fl::DescribeData(*splits).c_str());
  const fl::Dataset* train = &splits->train;
  const fl::Dataset* test = &splits->test;
  fl::Result<fl::Partition> parts = fl::Partition();
  if (by_column) {
    parts =
        fl::PartitionByGroup(train->groups, static_cast<int>(train->group_names.size()), clients);
  } else {
    fl::PartitionOptions po;
    po.scheme = *parsed;
    po.clients = clients;
    po.alpha = alpha;
    po.seed = seed;
    parts = fl::MakePartition(train->labels, train->num_classes, po);
  }
  if (!parts.ok()) return fail(parts.status());
  const int n = only > 0 ? std::min(only, clients) : clients;
  for (int k = 0; k < n; ++k) {
    auto shard = fl::SelectSamples(*train, (*parts)[k]);
    if (!shard.ok()) return fail(shard.status());
    const std::string dir = out + "/c" + std::to_string(k);
    fl::Status st = fl::WriteMnistFolder(dir, fl::Split::kTrain, *shard);
    if (st.ok() && with_test) st = fl::WriteMnistFolder(dir, fl::Split::kTest, *test);
    if (!st.ok()) return fail(st);
    std::printf("%s: %lld training samples%s\n", dir.c_str(), static_cast<long long>(shard->count),
                by_column ? (" (" + DeviceNames(*train, *parts, k) + ")").c_str() : "");
  }
  std::printf("wrote %d client folder(s) of %d %s shards of %s (seed %llu)\n", n, clients,
              scheme.c_str(), data.path.c_str(), static_cast<unsigned long long>(seed));
  return 0;
}
