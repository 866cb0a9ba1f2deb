// The end of a round (server/conductor.h): its logged updates become the
// next global model (a relay's: an exact sum for its parent), the checkpoint
// commits it, the evaluator gets it.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>

#include "common/clock.h"
#include "common/fixed_point.h"
#include "common/codec.h"
#include "server/async_tasks.h"
#include "server/conductor.h"

namespace fl {

namespace {
// Evaluations allowed to queue behind the one running before a step goes
// without (each holds a copy of a global model).
const size_t kMaxEvaluationsQueued = 2;
}  // namespace

// The end of the open round (or step) `r`.
Status Conductor::Commit(bool may_skip_eval) {
  OpenRound& open_round = open();
  RoundMetrics& m = open_round.m;
  const uint64_t r = m.round;
  FL_RETURN_IF_ERROR(CommitAcks(/*wait=*/true));
  if (!open_round.entries.empty() || o_.privacy.enabled()) {
    // (A private round releases its noise even when nobody answered.)
    FL_RETURN_IF_ERROR(AggregateFromLog());
    if (!open_round.entries.empty()) {
      m.mean_train_loss =
          open_round.train_loss_sum / static_cast<double>(open_round.entries.size());
    }
  } else {
    spdlog::warn("round {}: no update accepted; the global model is unchanged", r);
  }
  if (pruning_.Tighten(r, &model_, aggregator_.get())) m.mask_changed = true;
  m.sparsity = PrunableSparsity(model_.state());
  round_ = r;
  open_round.log.reset();
  FL_RETURN_IF_ERROR(WriteCheckpoint(r));
  m.round_seconds = Now() - open_round.started;
  m.test_accuracy = m.test_loss = std::nan("");
  const bool eval = ShouldEvaluate(r, may_skip_eval);
  if (eval) evaluator_->Submit(r, model_.state());
  reporter_->Add(m, eval);
  return reporter_->Report(/*wait=*/false);
}

// The checkpoint is the round's commit point: once it is written the log is
// spent, and global.flm is derived from it (rewritten on resume).
Status Conductor::WriteCheckpoint(uint64_t r) {
  if (!store_->writes()) return Status::OK();
  OpenRound& open_round = open();
  open_round.m.round_seconds = Now() - open_round.started;
  Checkpoint c;
  c.round = round_;
  c.seed = o_.seed;
  c.model = model_.state();
  c.reference_norm = model_.reference_norm();
  c.strategy = aggregator_->name();
  c.strategy_state = aggregator_->SaveState();
  c.pruning = pruning_.Describe();
  c.settings = RunSettings();
  c.pending_rows = reporter_->PendingRows();
  c.pending_rows.push_back(RoundReporter::RowOf(open_round.m));
  return store_->Commit(c, [this, r](const char* step) { MaybeCrash(step, r); });
}

bool Conductor::ShouldEvaluate(uint64_t r, bool may_skip) {
  bool eval = evaluator_ &&
              ((r % std::max(1, o_.eval_every) == 0) || r == static_cast<uint64_t>(o_.rounds));
  if (eval && may_skip && evaluator_->outstanding() > kMaxEvaluationsQueued) {
    // Steps come faster than evaluations: this one goes without (its row has
    // no accuracy) rather than queue another copy of the model.
    eval = false;
    if (!warned_eval_skipped_) {
      warned_eval_skipped_ = true;
      spdlog::warn(
          "step {}: steps come faster than the evaluation; steps whose model would queue "
          "behind {} others are not evaluated (raise --eval-every or --buffer)",
          r, kMaxEvaluationsQueued);
    }
  }
  return eval;
}

// Aggregates the round's logged updates in the order of their senders' ids,
// whatever order they arrived in, into the global model (or a relay's sum).
Status Conductor::AggregateFromLog() {
  OpenRound& open_round = open();
  RoundMetrics& m = open_round.m;
  std::vector<WalEntry> order = open_round.entries;
  // (The offset orders two updates of one sender, which a step never has.)
  std::sort(order.begin(), order.end(), [](const WalEntry& a, const WalEntry& b) {
    return a.sender != b.sender ? a.sender < b.sender : a.offset < b.offset;
  });
  CapPartials(&order);
  // Each buffer goes as soon as it is done with, so the model-sized ones that
  // follow (the new version's encoding, the checkpoint, the next TASK) reuse
  // its memory rather than add to the server's peak.
  Aggregator& agg = rule();
  agg.Begin(model_.kept_count(), {plan().sampling_rate * open_round.limits.population,
                                  SecretSeed("noise", open_round.round)});
  {
    std::string buffer;
    for (const auto& e : order) {
      std::string_view encoded;
      FL_RETURN_IF_ERROR(open_round.log->ReadDelta(e, &buffer, &encoded));
      // An update its checks passed and the rule still cannot take (a
      // partial's mean that rounds onto the fixed-point range's edge) is
      // left out, the same way in a resumed run; the round goes on.
      if (Status add = AddLogged(e, encoded, &ingest_.delta); !add.ok()) {
        spdlog::error("round {}: {}'s update is left out of the aggregate: {}", open_round.round,
                      e.sender, add.message());
        m.rejected["aggregation_refused"]++;
        totals_rejected_["aggregation_refused"]++;
      }
    }
  }
  ingest_.FreeBuffers();  // until the next round's first update
  const int64_t count = agg.count();
  m.clipped = agg.clipped();
  if (plan().hands_up_sum) {
    // A relay: its exact sum goes up as it is; the model stays the task's
    // (the root steps, after its noise when its rounds are private). None
    // left: an empty partial, which its parent refuses (relay_empty).
    open_round.sum = FixedSum();
    return count == 0 ? Status::OK() : agg.FinishSum(&open_round.sum);
  }
  return ApplyStep(count);
}

// All or nothing: a step with a value out of range is not committed.
Status Conductor::ApplyStep(int64_t count) {
  RoundMetrics& m = open().m;
  Aggregator& agg = rule();
  const Status st = model_.Step(&agg, model_.ValueLimit(o_.max_param_value));
  if (privacy_) {
    m.epsilon = privacy_->epsilon();
    m.dp_clip = privacy_->dp_clip();
  }
  if (st.ok()) {
    if (const int64_t n = ClampRunningVariances(&model_.state())) {
      // Honest devices' variances average to one >= 0; below it, a quantized
      // delta, a server optimizer's overshoot or a device pushing
      // BatchNorm's statistics.
      spdlog::warn(
          "round {}: the {} step took {} BatchNorm running variance value(s) below 0; set to 0 "
          "(a coordinate-wise robust strategy, such as median, resists a device that pushes "
          "them)",
          m.round, agg.name(), n);
    }
    model_.Changed();
    return Status::OK();
  }
  m.committed = false;
  m.rejected["global_out_of_range"]++;
  totals_rejected_["global_out_of_range"]++;
  spdlog::error(
      "round {}: the {} step from {} updates is not committed, the global model is "
      "unchanged: {}",
      m.round, agg.name(), count, st.message());
  return Status::OK();
}

// Adds one logged update to the round's aggregate: a relay's exact partial
// sum as integers, a device's delta (FedBuff: a stale one counts s(tau) of a
// fresh one). (A log written before partials were exact holds a relay's mean
// as a 32-bit delta: a private one is made its devices' sum again.)
Status Conductor::AddLogged(const WalEntry& e, std::string_view encoded,
                            std::vector<float>* delta) {
  Aggregator& agg = rule();
  const size_t kept = model_.kept_count();
  const double staleness =
      e.staleness > 0 ? StalenessWeight(e.staleness, o_.async.staleness_exponent) : 1.0;
  if (LooksLikeFixedSum(encoded)) {
    FixedSum part;
    FL_RETURN_IF_ERROR(DecodeFixedSum(encoded, kept, &part));
    if (e.within_clip >= 0) return agg.Add({part.weight, nullptr, &part, e.within_clip});
    if (staleness != 1.0) {
      for (FixedInt& x : part.values) x = RoundFixed(static_cast<double>(x) * staleness);
    }
    return agg.Add({e.weight, nullptr, &part});
  }
  const Codec* codec = CodecOfBytes(encoded);
  if (!codec) return Status::Corruption("a logged delta in no codec this server knows");
  FL_RETURN_IF_ERROR(codec->Decode(encoded, kept, delta));
  if (e.within_clip >= 0) {
    FixedSum part;
    FL_RETURN_IF_ERROR(AddWeighted(&part, e.contributors, delta->data(), delta->size()));
    return agg.Add({part.weight, nullptr, &part, e.within_clip});
  }
  if (staleness != 1.0) {
    const float s = static_cast<float>(staleness);
    for (float& v : *delta) v *= s;
  }
  return agg.Add(e.weight, delta);
}

// Relays' partial aggregates: none counts more than max_weight_ratio times
// the (lower) median of the round's partials' weight per device, for each of
// its devices; a relay that claims its devices hold more than the others' is
// held to that. From the log alone (weights and contributors), so a resumed
// round caps as the uninterrupted one did.
void Conductor::CapPartials(std::vector<WalEntry>* entries) const {
  // (A private partial weighs one per device: there is nothing to cap.)
  if (!(o_.max_weight_ratio > 0) || plan().private_round()) return;
  std::vector<double> per_device;
  for (const auto& e : *entries) {
    if (e.contributors > 1) per_device.push_back(static_cast<double>(e.weight) / e.contributors);
  }
  if (per_device.size() < 2) return;
  const size_t mid = (per_device.size() - 1) / 2;
  std::nth_element(per_device.begin(), per_device.begin() + mid, per_device.end());
  const double cap = std::max(1.0, o_.max_weight_ratio * per_device[mid]);
  for (auto& e : *entries) {
    if (e.contributors <= 1) continue;
    const auto most = static_cast<int64_t>(std::floor(cap * e.contributors));
    if (e.weight <= most) continue;
    spdlog::warn(
        "round {}: {}'s partial aggregate claims {} examples for {} devices; counted as {} "
        "(--max-weight-ratio {} x the median partial's {:.0f} per device)",
        open().round, e.sender, e.weight, e.contributors, most, o_.max_weight_ratio,
        per_device[mid]);
    e.weight = most;
  }
}

// A reopened log's partials were aggregated as this run aggregates them: a
// private round's are sums of clipped deltas weighing one per device, any
// other a weighted sum, and the two do not mix.
Status Conductor::CheckLoggedPartials(const WalContents& c) const {
  for (const auto& e : c.entries) {
    if (e.within_clip >= 0 && !o_.privacy.enabled()) {
      return Status::FailedPrecondition(
          "the round log " + store_->WalPath() +
          " holds private partial aggregates (central DP): resume with the run's --dp-* "
          "settings");
    }
    if (e.within_clip < 0 && e.contributors > 1 && o_.privacy.enabled()) {
      return Status::FailedPrecondition("the round log " + store_->WalPath() +
                                        " holds partial aggregates of a round without privacy: "
                                        "resume without --dp-*");
    }
  }
  return Status::OK();
}

// At --resume: the rounds.csv rows the checkpoint owes (its pending rows
// after the file's last row) are written again, the checkpoint's own round
// evaluated again when the server evaluates; earlier ones, whose models are
// gone, without accuracy.
void Conductor::RestorePendingRows(const std::vector<Checkpoint::Row>& rows, uint64_t last_row) {
  for (const auto& row : rows) {
    if (row.round <= last_row || row.round > round_) continue;
    RoundMetrics rm;
    rm.round = row.round;
    rm.participants = static_cast<int>(row.participants);
    rm.upload_bytes = row.upload_bytes;
    rm.download_bytes = row.download_bytes;
    rm.round_seconds = row.round_seconds;
    rm.max_delta_norm = row.max_delta_norm;
    rm.test_accuracy = rm.test_loss = std::nan("");
    if (row.round == round_ && privacy_) rm.epsilon = privacy_->epsilon();
    const bool eval = evaluator_ && row.round == round_;
    if (eval) evaluator_->Submit(row.round, model_.state());
    spdlog::warn("rounds.csv has no row for round {}; writing it from the checkpoint{}",
                 row.round, eval ? " once the model is evaluated again" : ", without accuracy");
    reporter_->Add(rm, eval);
  }
}

}  // namespace fl
