#include "server/scheduler.h"

#include <spdlog/spdlog.h>

#include <limits>

#include "server/aggregator.h"
#include "server/buffered_async.h"
#include "server/parent_rounds.h"
#include "server/server.h"
#include "server/sync_rounds.h"
#include "server/wal.h"

namespace fl {

namespace {

// A relay hands its parent the exact weighted sum of its devices' deltas (or
// a robust rule's aggregate of them, as a sum); server optimizers, privacy,
// pruning and asynchronous rounds belong to the root, which applies them to
// the relays' partials (docs/relays.md).
Status CheckRelay(const ServerOptions& o) {
  const std::string& name = o.strategy.name;
  if (name != "fedavg" && name != "median" && name != "trimmed_mean" && name != "krum" &&
      name != "multikrum") {
    return Status::InvalidArgument(
        "a relay (--parent) aggregates with fedavg, median, trimmed_mean, krum or multikrum; "
        "--strategy " +
        name + " belongs on the root");
  }
  if (o.strategy.server_lr != 0 && o.strategy.server_lr != 1) {
    return Status::InvalidArgument(
        "a relay (--parent) hands up its devices' mean; --server-lr belongs on the root");
  }
  if (o.privacy.enabled() || o.mode != "sync" || o.prune_to > 0 || o.resume ||
      o.over_selection > 1) {
    return Status::InvalidArgument(
        "a relay (--parent) takes its rounds from the parent: --dp-*, --mode async, "
        "--prune-to, --over-selection and --resume belong on the root");
  }
  return Status::OK();
}

Status CheckAsync(const ServerOptions& o) {
  const AsyncOptions& a = o.async;
  if (!(a.concurrency >= 1 && a.concurrency <= 100000)) {
    return Status::InvalidArgument("--concurrency", "must be in [1, 100000]");
  }
  if (!(a.buffer >= 1 && a.buffer <= 100000)) {
    return Status::InvalidArgument("--buffer", "must be in [1, 100000]");
  }
  if (!(a.staleness_exponent >= 0 && a.staleness_exponent <= 10)) {
    return Status::InvalidArgument("--staleness-exponent", "must be in [0, 10]");
  }
  if (!(a.max_staleness >= 0 && a.max_staleness <= 1000000)) {
    return Status::InvalidArgument("--max-staleness", "must be in [0, 1000000]");
  }
  if (o.privacy.enabled()) {
    return Status::InvalidArgument("--mode async",
                                   "cannot be combined with privacy: the accountant assumes each "
                                   "round Poisson-samples the devices whose updates it uses");
  }
  if (o.prune_to > 0) {
    return Status::InvalidArgument("--mode async",
                                   "cannot be combined with federated pruning (--prune-to): a "
                                   "mask that tightens would void the deltas of every task out "
                                   "on devices");
  }
  if (o.over_selection > 1) {
    return Status::InvalidArgument("--over-selection",
                                   "is for synchronous rounds; asynchronous mode never waits for "
                                   "a round's slowest device");
  }
  if (const int need = RobustMinimum(o.strategy); need > a.buffer) {
    return Status::InvalidArgument(
        "--buffer", "--strategy " + o.strategy.name + " needs at least " + std::to_string(need) +
                        " updates a step; --buffer is " + std::to_string(a.buffer));
  }
  return Status::OK();
}

}  // namespace

Status CheckModes(const ServerOptions& o) {
  if (o.parent) FL_RETURN_IF_ERROR(CheckRelay(o));
  if (!(o.over_selection >= 1 && o.over_selection <= 10)) {
    return Status::InvalidArgument("--over-selection must be in [1, 10]");
  }
  if (o.over_selection > 1 && o.privacy.enabled()) {
    return Status::InvalidArgument("--over-selection",
                                   "cannot be combined with privacy: the accountant assumes each "
                                   "sampled device's update is used (Poisson sampling)");
  }
  if (o.mode != "sync" && o.mode != "async") {
    return Status::InvalidArgument("--mode", "must be sync or async, got '" + o.mode + "'");
  }
  if (o.mode == "async") FL_RETURN_IF_ERROR(CheckAsync(o));
  return Status::OK();
}

Status CheckAggregationFits(const ServerOptions& o, size_t per_update) {
  if (const int need = RobustMinimum(o.strategy); need > 0) {
    // A robust rule capped below what it needs resists nothing: the median of
    // one delta is that delta.
    const size_t fits = per_update ? o.max_aggregation_bytes / per_update
                                   : std::numeric_limits<size_t>::max();
    if (fits < static_cast<size_t>(need)) {
      return Status::InvalidArgument(
          "--max-aggregation-mb " + std::to_string(o.max_aggregation_bytes >> 20) + " holds " +
          std::to_string(fits) + " deltas of this model (" + std::to_string(per_update) +
          " B each); --strategy " + o.strategy.name + " needs at least " + std::to_string(need) +
          " a round to resist an attacker: raise --max-aggregation-mb");
    }
    if (fits < static_cast<size_t>(o.min_clients)) {
      spdlog::warn(
          "--max-aggregation-mb holds {} deltas, fewer than --min-clients {}: rounds select {} "
          "of the live devices",
          fits, o.min_clients, fits);
    }
  }
  // A rule that holds every delta holds an asynchronous step's buffer.
  if (o.mode == "async" && per_update > 0 &&
      o.max_aggregation_bytes / per_update < static_cast<size_t>(o.async.buffer)) {
    return Status::InvalidArgument(
        "--buffer", std::to_string(o.async.buffer) + " deltas of this model (" +
                        std::to_string(per_update) + " B each) do not fit in --max-aggregation-mb " +
                        std::to_string(o.max_aggregation_bytes >> 20) + ", which --strategy " +
                        o.strategy.name + " holds them in");
  }
  return Status::OK();
}

std::unique_ptr<Scheduler> MakeScheduler(const ServerOptions& o, SchedulerHost* host,
                                         RoundPlan base, std::optional<WalContents> resumed) {
  if (o.parent) return MakeParentRounds(o, host, std::move(base));
  if (o.mode == "async") return MakeBufferedAsync(o, host, std::move(base), std::move(resumed));
  return std::make_unique<SyncRounds>(o, host, std::move(base), std::move(resumed));
}

}  // namespace fl
