// A relay's rounds (server/relay_link.h): each is its parent's round, model
// and hyperparameters, run for the relay's devices as a synchronous round,
// and its exact sum goes back up.
#include "server/parent_rounds.h"

#include <spdlog/spdlog.h>

#include <limits>
#include <utility>

#include "common/wire/envelope.h"
#include "crypto/message.h"
#include "server/aggregator.h"
#include "server/global_model.h"
#include "server/registry.h"
#include "server/relay_link.h"
#include "server/sync_rounds.h"

namespace fl {

namespace {

class ParentRounds final : public RoundCollector {
 public:
  ParentRounds(const ServerOptions& o, SchedulerHost* host, RoundPlan base)
      : RoundCollector(o, host, std::move(base), std::nullopt), link_(*o.parent) {}

  // Rounds as the parent hands them over, until it ends the federation or
  // `*stop`; the server answers its devices meanwhile.
  Status Run(const std::atomic<bool>* stop, bool* abandoned) override;

 private:
  // The relay's claim to its parent: what its live devices registered with.
  // Its HELLOs read it every heartbeat: once a second is plenty, and spares
  // the receive loop a pass over every device.
  void Publish();
  // The parent's task becomes the round's plan and model. False (and the
  // parent told why) when the task cannot be run.
  Result<bool> Adopt(RelayTask* task);
  // Takes the parent's privacy out of the round's configuration (which goes
  // on to the devices): under it, the round Poisson-samples the devices and
  // hands up the sum of their clipped deltas, each weighing one, instead of
  // running the relay's own rule; the root adds the noise (docs/relays.md,
  // "Central differential privacy").
  Status TakePrivacy(uint64_t r);
  // The round's result for the parent.
  void Deliver(uint64_t r);

  RelayLink& link_;
  double published_{-1e18};
  // The aggregator of private rounds (the sum of clipped deltas,
  // PrivacyOptions::relay) for the parent's rate and clip.
  std::unique_ptr<Aggregator> private_share_;
  double share_rate_{0};
  double share_clip_{0};
  bool warned_private_rule_{false};
};

void ParentRounds::Publish() {
  const double now = host_.Now();
  if (now - published_ < 1.0) return;
  published_ = now;
  int64_t sum = 0, devices = 0;
  for (const auto& [id, c] : host_.registry().entries()) {
    if (c.reachable && now - c.last_seen <= o_.client_timeout_seconds) {
      sum += std::min(c.num_examples, o_.max_examples);  // (as the relay counts them)
      sum = std::min<int64_t>(sum, int64_t{1} << 60);
      devices += host_.PopulationOf(id);
    }
  }
  link_.SetRegistered(std::max<int64_t>(1, sum));
  link_.SetDevices(static_cast<uint32_t>(std::min<int64_t>(devices, UINT32_MAX)));
}

Status ParentRounds::TakePrivacy(uint64_t r) {
  wire::TrainConfig& train = plan_.train;
  const double rate = train.dp_sampling_rate, clip = train.dp_clip;
  train.dp_sampling_rate = train.dp_clip = 0;
  plan_.sampling_rate = plan_.dp_clip = 0;
  plan_.rule = nullptr;
  if (!(rate > 0)) {
    share_rate_ = share_clip_ = 0;
    return Status::OK();
  }
  if (!(rate == share_rate_ && clip == share_clip_ && private_share_)) {
    PrivacyOptions share;
    share.relay = true;
    share.clip = clip;
    auto agg = MakeAggregator(StrategyOptions{}, share);
    if (!agg.ok()) return agg.status();
    private_share_ = std::move(agg).value();
    if (share_rate_ == 0 && o_.verbose) {
      spdlog::info(
          "round {}: the root's rounds are private: devices Poisson-sampled at rate {}, each "
          "delta clipped to {:.4g} and weighing one",
          r, rate, clip);
    }
    share_rate_ = rate;
    share_clip_ = clip;
  }
  plan_.sampling_rate = rate;
  plan_.dp_clip = clip;
  plan_.rule = private_share_.get();
  if (o_.strategy.name != "fedavg" && !warned_private_rule_) {
    warned_private_rule_ = true;
    spdlog::warn(
        "round {}: the root's rounds are private (central DP): this relay hands up the mean of "
        "its devices' clipped deltas, which the root's noise is calibrated to; --strategy {} is "
        "not applied in private rounds",
        r, o_.strategy.name);
  }
  return Status::OK();
}

Result<bool> ParentRounds::Adopt(RelayTask* task) {
  const uint64_t r = task->round;
  const wire::TrainConfig& tc = task->config;
  if (!tc.trainable.empty() && tc.trainable.size() != task->parameters.tensors.size()) {
    link_.Deliver(r, Status::InvalidArgument("the parent's trainable list names " +
                                             std::to_string(tc.trainable.size()) +
                                             " tensors; the model has " +
                                             std::to_string(task->parameters.tensors.size())));
    return false;
  }
  // The parent's model and hyperparameters (its seed too) become this
  // round's. The relay answers within 80% of the parent's deadline, leaving
  // the rest for its own upload.
  plan_ = base_;
  plan_.hands_up_sum = true;
  plan_.train = tc;
  FL_RETURN_IF_ERROR(TakePrivacy(r));
  plan_.deadline_seconds = std::max(0.5, 0.8 * tc.deadline_seconds);
  // Devices that are not live by half of it would not have time to train.
  plan_.live_by = host_.Now() + 0.5 * plan_.deadline_seconds;
  plan_.end = host_.Now() + plan_.deadline_seconds;
  // The model goes down as it came (its encoding, so its version, is the
  // root's), with the root's endorsement of it when that version matches.
  GlobalModel& model = host_.model();
  model.Set(std::move(task->parameters), tc.trainable, task->format);
  if (auto root = wire::DecodeEnvelope(task->root_endorsement);
      root.ok() &&
      ((root->model_version == model.version() && root->round == r) || task->debug_endorse_anyway)) {
    plan_.root_endorsement = std::move(task->root_endorsement);
  } else if (!task->root_endorsement.empty()) {
    spdlog::warn(
        "round {}: the model is not the one the root signed (version {}); devices that check "
        "the root's signature (--root-key) will refuse it",
        r, ShortVersion(model.version()));
  }
  if (host_.completed() == 0) {
    model.set_reference_norm(KeptNorm(SelectTensors(model.state(), model.trainable())));
  }
  return true;
}

void ParentRounds::Deliver(uint64_t r) {
  const RoundMetrics& m = round_.m;
  if (!m.committed) {
    link_.Deliver(
        r, Status::Unavailable("round " + std::to_string(r) + ": the step was not committed"));
    return;
  }
  RelayResult res;
  res.round = r;
  for (const auto& e : round_.entries) {
    res.contributors += e.contributors;  // (the devices of relays below it too)
  }
  // The exact sum and its weight (its partials' weights as the round capped
  // them; in a private round one per device). No device answered: an empty
  // partial, no weight, so that the parent does not wait until its deadline.
  FixedSum sum = std::exchange(round_.sum, FixedSum());
  if (!round_.entries.empty()) res.sum = std::move(sum);
  res.weight = res.sum.weight;
  if (plan_.private_round()) {
    // How many were within the clip (the parent's adaptive clipping counts them).
    res.within_clip = std::max<int64_t>(0, res.contributors - m.clipped);
  }
  res.train_loss = m.mean_train_loss;
  link_.Deliver(r, std::move(res));
}

Status ParentRounds::Run(const std::atomic<bool>* stop, bool* abandoned) {
  for (;;) {
    FL_RETURN_IF_ERROR(host_.Pump(std::numeric_limits<double>::infinity(), stop, [&] {
      Publish();
      return link_.Ready();
    }));
    if (stop && stop->load()) {
      *abandoned = true;
      return Status::OK();
    }
    std::optional<RelayTask> task = link_.TakeTask();
    if (!task) {
      if (!link_.finished()) continue;  // (the session gave up on it meanwhile)
      if (link_.parent_done()) return Status::OK();
      // The devices are not told the federation is over: it is not.
      return Status::Unavailable("relay: " + link_.finish_reason());
    }
    const uint64_t r = task->round;
    if (r < host_.completed()) {
      // A parent restarted without its checkpoint numbers its rounds anew.
      spdlog::warn("round {} from the parent, after this relay's round {}: was it restarted?", r,
                   host_.completed());
    }
    auto adopted = Adopt(&*task);
    if (!adopted.ok()) return adopted.status();
    if (!*adopted) continue;
    bool stopped = false;
    Status st = RunRound(r, stop, &stopped);
    plan_.live_by = plan_.end = std::numeric_limits<double>::infinity();
    if (!st.ok()) {
      link_.Deliver(r, st);
      return st;
    }
    if (stopped) {
      link_.Deliver(r, Status::Unavailable("the relay is stopping"));
      *abandoned = true;
      return Status::OK();
    }
    Deliver(r);
  }
}

}  // namespace

std::unique_ptr<Scheduler> MakeParentRounds(const ServerOptions& o, SchedulerHost* host,
                                            RoundPlan base) {
  return std::make_unique<ParentRounds>(o, host, std::move(base));
}

}  // namespace fl
