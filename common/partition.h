// Splitting a labelled dataset across federated clients.
//
// Each partitioner returns, per client, the list of sample indices it holds. All
// are deterministic given the seed, and every result is disjoint and covering:
// each index in [0, n) belongs to exactly one client.
//
//   IID        shuffle, then equal shares (sizes differ by at most one).
//   Shards     McMahan et al. 2017 "pathological non-IID": sort by label, cut into
//              clients * shards_per_client shards, deal shards_per_client to each
//              client. For MNIST with 100 clients: 200 shards of 300, 2 per client.
//              Shards here are label-pure (each label's samples are cut into a share
//              of the shards proportional to its count), so a client with 2 shards
//              holds at most 2 labels; the paper's contiguous cut lets a few shards
//              straddle two labels. Shard sizes differ by a few percent as a result.
//   Dirichlet  Hsu et al. 2019: client k draws a class mix q_k ~ Dir(alpha * p),
//              p the global class distribution, and fills an equal share of samples
//              by drawing classes from q_k. The concentration of class c is
//              alpha * p_c, as in the paper (10 balanced classes, alpha = 1: 0.1
//              per class). Small alpha gives near single-class clients; large
//              alpha approaches IID.
#ifndef FEDGE_COMMON_PARTITION_H_
#define FEDGE_COMMON_PARTITION_H_

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"

namespace fl {

// Per-client sample indices, each list in ascending order.
using Partition = std::vector<std::vector<int64_t>>;

enum class PartitionScheme { kIid, kShards, kDirichlet };

// Parses "iid", "shards" or "dirichlet".
Result<PartitionScheme> ParsePartitionScheme(const std::string& name);
const char* PartitionSchemeName(PartitionScheme scheme);

struct PartitionOptions {
  // Which scheme to use.
  PartitionScheme scheme{PartitionScheme::kIid};
  // Number of clients to split the data across.
  int clients{100};
  // Shards per client (kShards only).
  int shards_per_client{2};
  // Concentration parameter (kDirichlet only); must be > 0.
  double alpha{0.5};
  // Seed for every random choice the partitioner makes.
  uint64_t seed{1};
};

// Partitions samples with the given labels (values in [0, num_classes)).
// Errors: clients < 1, more clients (or shards) than samples, alpha <= 0.
Result<Partition> MakePartition(const std::vector<uint8_t>& labels, int num_classes,
                                const PartitionOptions& options);

// A natural split (scheme "column"): `groups` gives each sample's device (an
// index below `num_groups`, from a CSV column); the devices are dealt to the
// `clients` in turn, one each when `clients` equals `num_groups`.
// InvalidArgument when there are fewer devices than clients.
Result<Partition> PartitionByGroup(const std::vector<int32_t>& groups, int num_groups, int clients);

// The individual schemes, as used by MakePartition.
Result<Partition> PartitionIid(int64_t n, int clients, uint64_t seed);
Result<Partition> PartitionShards(const std::vector<uint8_t>& labels, int num_classes, int clients,
                                  int shards_per_client, uint64_t seed);
Result<Partition> PartitionDirichlet(const std::vector<uint8_t>& labels, int num_classes,
                                     int clients, double alpha, uint64_t seed);

}  // namespace fl

#endif  // FEDGE_COMMON_PARTITION_H_
