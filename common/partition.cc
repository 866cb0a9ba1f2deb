#include "common/partition.h"

#include <algorithm>
#include <numeric>

#include "common/random.h"

namespace fl {
namespace {

Status CheckCounts(int64_t n, int clients, int64_t units, const char* what) {
  if (clients < 1)
    return Status::InvalidArgument("clients must be >= 1, got " + std::to_string(clients));
  if (units > n) {
    return Status::InvalidArgument("cannot make " + std::to_string(units) + " " + what + " from " +
                                   std::to_string(n) + " samples");
  }
  return Status::OK();
}

void SortEach(Partition* p) {
  for (auto& v : *p) std::sort(v.begin(), v.end());
}

// Splits `total` into integers proportional to `weights` (largest remainder).
std::vector<int64_t> Apportion(const std::vector<int64_t>& weights, int64_t total) {
  const int64_t wsum = std::accumulate(weights.begin(), weights.end(), int64_t{0});
  std::vector<int64_t> out(weights.size(), 0);
  std::vector<std::pair<double, size_t>> rema;
  int64_t given = 0;
  for (size_t i = 0; i < weights.size(); ++i) {
    const double exact = static_cast<double>(weights[i]) * total / wsum;
    out[i] = static_cast<int64_t>(exact);
    given += out[i];
    rema.push_back({exact - out[i], i});
  }
  // Ties broken by index so the result is deterministic.
  std::sort(rema.begin(), rema.end(), [](const auto& a, const auto& b) {
    return a.first != b.first ? a.first > b.first : a.second < b.second;
  });
  for (size_t k = 0; given < total; ++k, ++given) out[rema[k % rema.size()].second]++;
  return out;
}

}  // namespace

Result<PartitionScheme> ParsePartitionScheme(const std::string& name) {
  if (name == "iid") return PartitionScheme::kIid;
  if (name == "shards") return PartitionScheme::kShards;
  if (name == "dirichlet") return PartitionScheme::kDirichlet;
  return Status::InvalidArgument("unknown partition scheme '" + name +
                                 "' (expected iid, shards or dirichlet)");
}

const char* PartitionSchemeName(PartitionScheme scheme) {
  switch (scheme) {
    case PartitionScheme::kIid:
      return "iid";
    case PartitionScheme::kShards:
      return "shards";
    case PartitionScheme::kDirichlet:
      return "dirichlet";
  }
  return "unknown";
}

Result<Partition> PartitionIid(int64_t n, int clients, uint64_t seed) {
  FL_RETURN_IF_ERROR(CheckCounts(n, clients, clients, "client shares"));
  std::vector<int64_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  Random rng(seed);
  rng.Shuffle(&order);
  Partition out(clients);
  for (int k = 0; k < clients; ++k) {
    // Client k gets [k*n/K, (k+1)*n/K): shares differ by at most one.
    const int64_t begin = k * n / clients, end = (k + 1) * n / clients;
    out[k].assign(order.begin() + begin, order.begin() + end);
  }
  SortEach(&out);
  return out;
}

Result<Partition> PartitionShards(const std::vector<uint8_t>& labels, int num_classes, int clients,
                                  int shards_per_client, uint64_t seed) {
  const int64_t n = static_cast<int64_t>(labels.size());
  if (shards_per_client < 1) {
    return Status::InvalidArgument("shards_per_client must be >= 1, got " +
                                   std::to_string(shards_per_client));
  }
  const int64_t num_shards = int64_t{clients} * shards_per_client;
  FL_RETURN_IF_ERROR(CheckCounts(n, clients, num_shards, "shards"));

  // Group indices by label (ascending index within a label: a stable sort by label).
  std::vector<std::vector<int64_t>> by_label(num_classes);
  for (int64_t i = 0; i < n; ++i) by_label[labels[i]].push_back(i);
  std::vector<int64_t> counts(num_classes);
  for (int c = 0; c < num_classes; ++c) counts[c] = by_label[c].size();
  if (num_shards < std::count_if(
                       counts.begin(), counts.end(), [](int64_t c) { return c > 0; })) {
    return Status::InvalidArgument(
        "need at least one shard per label present: " + std::to_string(num_shards) + " shards");
  }

  // Each label gets a share of the shards proportional to its count (at least one
  // for a label that is present), and its run is cut into that many near-equal
  // label-pure shards.
  std::vector<int64_t> shards_of = Apportion(counts, num_shards);
  for (int c = 0; c < num_classes; ++c) {
    if (counts[c] > 0 && shards_of[c] == 0) {
      // Take one from the label with the most shards per sample.
      int donor = static_cast<int>(std::max_element(shards_of.begin(), shards_of.end()) -
                                   shards_of.begin());
      shards_of[donor]--;
      shards_of[c]++;
    }
  }
  std::vector<std::vector<int64_t>> shards;
  shards.reserve(num_shards);
  for (int c = 0; c < num_classes; ++c) {
    const int64_t m = counts[c], s = shards_of[c];
    for (int64_t j = 0; j < s; ++j) {
      shards.emplace_back(by_label[c].begin() + j * m / s, by_label[c].begin() + (j + 1) * m / s);
    }
  }

  // Deal shards to clients in a random order.
  std::vector<int64_t> order(shards.size());
  std::iota(order.begin(), order.end(), 0);
  Random rng(seed);
  rng.Shuffle(&order);
  Partition out(clients);
  for (size_t i = 0; i < order.size(); ++i) {
    auto& dst = out[i / shards_per_client];
    dst.insert(dst.end(), shards[order[i]].begin(), shards[order[i]].end());
  }
  SortEach(&out);
  return out;
}

Result<Partition> PartitionDirichlet(const std::vector<uint8_t>& labels, int num_classes,
                                     int clients, double alpha, uint64_t seed) {
  const int64_t n = static_cast<int64_t>(labels.size());
  if (!(alpha > 0)) {
    return Status::InvalidArgument("dirichlet alpha must be > 0, got " + std::to_string(alpha));
  }
  FL_RETURN_IF_ERROR(CheckCounts(n, clients, clients, "client shares"));
  Random rng(seed);

  // Per-class pools of indices, shuffled; we pop from the back.
  std::vector<std::vector<int64_t>> pool(num_classes);
  for (int64_t i = 0; i < n; ++i) pool[labels[i]].push_back(i);
  for (auto& p : pool) rng.Shuffle(&p);

  // q_k ~ Dir(alpha * p), p = global class distribution.
  std::vector<double> prior(num_classes);
  for (int c = 0; c < num_classes; ++c) {
    prior[c] = alpha * static_cast<double>(pool[c].size()) / n;
    if (prior[c] <= 0) prior[c] = 1e-12;  // absent class: essentially zero mass
  }
  std::vector<std::vector<double>> mix(clients);
  for (int k = 0; k < clients; ++k) mix[k] = rng.Dirichlet(prior);

  // Fill clients round-robin, one sample each per pass, so pools deplete evenly
  // across clients instead of starving the last ones. When a drawn class is empty
  // the draw is renormalised over the classes that still have samples.
  Partition out(clients);
  std::vector<int64_t> want(clients);
  for (int k = 0; k < clients; ++k) want[k] = (k + 1) * n / clients - k * n / clients;
  for (int64_t pass = 0, placed = 0; placed < n; ++pass) {
    for (int k = 0; k < clients; ++k) {
      if (static_cast<int64_t>(out[k].size()) >= want[k]) continue;
      double total = 0;
      for (int c = 0; c < num_classes; ++c) {
        if (!pool[c].empty()) total += mix[k][c];
      }
      int chosen = -1;
      if (total > 0) {
        double u = rng.UniformDouble() * total;
        for (int c = 0; c < num_classes; ++c) {
          if (pool[c].empty()) continue;
          chosen = c;
          u -= mix[k][c];
          if (u < 0) break;
        }
      } else {
        // This client's classes are exhausted: take from the largest remaining pool.
        chosen = static_cast<int>(
            std::max_element(pool.begin(), pool.end(),
                             [](const auto& a, const auto& b) { return a.size() < b.size(); }) -
            pool.begin());
      }
      out[k].push_back(pool[chosen].back());
      pool[chosen].pop_back();
      ++placed;
    }
  }
  SortEach(&out);
  return out;
}

Result<Partition> MakePartition(const std::vector<uint8_t>& labels, int num_classes,
                                const PartitionOptions& options) {
  for (size_t i = 0; i < labels.size(); ++i) {
    if (labels[i] >= num_classes) {
      return Status::InvalidArgument("label " + std::to_string(labels[i]) + " at index " +
                                     std::to_string(i) + " >= num_classes " +
                                     std::to_string(num_classes));
    }
  }
  switch (options.scheme) {
    case PartitionScheme::kIid:
      return PartitionIid(static_cast<int64_t>(labels.size()), options.clients, options.seed);
    case PartitionScheme::kShards:
      return PartitionShards(labels, num_classes, options.clients, options.shards_per_client,
                             options.seed);
    case PartitionScheme::kDirichlet:
      return PartitionDirichlet(labels, num_classes, options.clients, options.alpha, options.seed);
  }
  return Status::InvalidArgument("unknown partition scheme");
}

Result<Partition> PartitionByGroup(const std::vector<int32_t>& groups, int num_groups,
                                   int clients) {
  if (groups.empty()) {
    return Status::InvalidArgument("partition \"column\"",
                                   "needs a group column naming each sample's device (CSV data, "
                                   "--group-column / data.group_column)");
  }
  if (clients < 1 || clients > num_groups) {
    return Status::InvalidArgument("the group column", "names " + std::to_string(num_groups) +
                                                           " devices, fewer than the " +
                                                           std::to_string(clients) + " clients");
  }
  Partition parts(static_cast<size_t>(clients));
  for (size_t i = 0; i < groups.size(); ++i) {
    parts[static_cast<size_t>(groups[i] % clients)].push_back(static_cast<int64_t>(i));
  }
  return parts;
}

}  // namespace fl
