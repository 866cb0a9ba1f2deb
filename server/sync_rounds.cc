#include "server/sync_rounds.h"

#include <openssl/crypto.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "common/codec.h"
#include "crypto/message.h"
#include "server/aggregator.h"
#include "server/global_model.h"
#include "server/registry.h"

namespace fl {

namespace {
// Messages read before a round's selection, so that queued HELLOs of clients
// that reconnected have updated their routes.
const int kDrainBeforeSelection = 4096;
// Evaluations allowed to queue behind the one running before the server waits
// for them (each holds a copy of a global model).
const size_t kMaxEvaluationsQueued = 2;
}  // namespace

RoundPlan RootPlan(const RoundPlan& base, const ServerOptions& o, uint64_t r, double dp_clip) {
  RoundPlan plan = base;
  plan.train.lr = RoundLearningRate(o, static_cast<int>(r));
  plan.train.seed = o.seed * 1000003ULL + r;
  if (plan.private_round()) plan.dp_clip = dp_clip;
  return plan;
}

RoundCollector::RoundCollector(const ServerOptions& o, SchedulerHost* host, RoundPlan base,
                               std::optional<WalContents> resumed)
    : o_(o), host_(*host), base_(std::move(base)), resumed_(std::move(resumed)) {
  plan_ = base_;
  uniform_ = UniformSelector(o.fraction, o.over_selection, o.seed,
                             [this](int want) { return HeldUpdateCap(want); });
  poisson_ = PoissonSelector(host, [this] { return plan_.sampling_rate; });
}

std::optional<TaskRef> RoundCollector::TaskOf(const std::string& id) const {
  if (!round_.selected.count(id)) return std::nullopt;
  TaskRef t;
  t.step = round_.round;
  t.nonce = round_.nonce;
  t.base = host_.model().version();
  const auto it = round_.limits.registered.find(id);
  if (it != round_.limits.registered.end()) t.registered = it->second;
  return t;
}

bool RoundCollector::Admit(const std::string& peer, const wire::Envelope& env, const char* what) {
  const std::string& who = env.sender;
  if (!round_.collecting || env.round != round_.round) {
    host_.Refuse(peer, who, env, "stale_round",
                 std::string(what) + " for round " + std::to_string(env.round) +
                     (round_.collecting ? "; collecting round " + std::to_string(round_.round)
                                        : "; no round is open"));
    return false;
  }
  if (CRYPTO_memcmp(env.nonce.data(), round_.nonce.data(), round_.nonce.size()) != 0) {
    host_.Refuse(peer, who, env, "bad_nonce",
                 std::string(what) +
                     " does not carry this round's nonce (replayed from another run?)");
    return false;
  }
  if (!round_.selected.count(who)) {
    host_.Refuse(peer, who, env, "not_selected",
                 "client was not selected for round " + std::to_string(round_.round));
    return false;
  }
  if (!round_.pending.count(who)) {
    host_.Refuse(peer, who, env, "replay", "already answered this round");
    return false;
  }
  return true;
}

int RoundCollector::HeldUpdateCap(int want) {
  Aggregator& rule = host_.rule();
  const size_t per_update =
      rule.held_bytes_per_value() * std::max<size_t>(host_.model().kept_count(), 1);
  if (per_update == 0) return want;
  const int cap = static_cast<int>(std::clamp<size_t>(o_.max_aggregation_bytes / per_update, 1,
                                                      std::numeric_limits<int>::max()));
  if (want > cap && !warned_held_cap_) {
    warned_held_cap_ = true;
    spdlog::warn(
        "--strategy {} holds every delta of a round ({} B each): selecting {} devices a round, "
        "not {}, to stay within --max-aggregation-mb {:.0f}",
        rule.name(), per_update, cap, want,
        static_cast<double>(o_.max_aggregation_bytes) / (1 << 20));
  }
  return cap;
}

// What --min-clients counts: live participants; in private rounds, the
// devices they are (a relay counts as the devices it says it serves), the
// population the sampling rate applies to.
int64_t RoundCollector::LiveForMinimum() const {
  if (!plan_.private_round()) return host_.Live(nullptr);
  std::vector<std::string> ids;
  host_.Live(&ids);
  int64_t n = 0;
  for (const auto& id : ids) n += host_.PopulationOf(id);
  return n;
}

Status RoundCollector::WaitForEvaluations(const std::atomic<bool>* stop, bool* abandoned) {
  // Evaluations may run behind the rounds, but only a little: each waiting
  // one holds a copy of a global model. The server answers while it waits.
  while (host_.evaluations_outstanding() > kMaxEvaluationsQueued) {
    if (stop && stop->load()) {
      *abandoned = true;
      return Status::OK();
    }
    FL_RETURN_IF_ERROR(host_.Pump(host_.Now() + 0.05, stop, nullptr));
  }
  return Status::OK();
}

Status RoundCollector::WaitForLive(uint64_t r, const std::atomic<bool>* stop, bool* abandoned) {
  // Whatever is queued in the socket is read first (here and at every
  // check): a client that reconnected is then known by its new connection,
  // not by the one it dropped.
  FL_RETURN_IF_ERROR(host_.Drain(kDrainBeforeSelection));
  double next_log = host_.Now();
  // (A round reopened from its log with every device answered needs nobody.)
  const bool nothing_owed = resumed_ && resumed_->header.round == r &&
                            resumed_->entries.size() >= resumed_->header.selected.size();
  while (!nothing_owed && LiveForMinimum() < o_.min_clients) {
    if (stop && stop->load()) {
      *abandoned = true;
      return Status::OK();
    }
    if (host_.Now() >= plan_.live_by) {
      spdlog::warn(
          "round {}: {} of {} devices live halfway to the parent's deadline; running with them",
          r, LiveForMinimum(), o_.min_clients);
      break;
    }
    if (host_.Now() >= next_log) {
      spdlog::info("round {}: waiting for clients ({} of {} live{})", r, LiveForMinimum(),
                   o_.min_clients,
                   plan_.private_round() && !o_.relays_dir.empty() ? ", relays' devices counted"
                                                                   : "");
      next_log = host_.Now() + 5;
    }
    FL_RETURN_IF_ERROR(host_.Pump(host_.Now() + 0.5, stop, nullptr));
    FL_RETURN_IF_ERROR(host_.Drain(kDrainBeforeSelection));
  }
  return Status::OK();
}

Result<std::vector<std::string>> RoundCollector::Select(uint64_t r, int* live) {
  std::vector<std::string> active;
  host_.Live(&active);  // sorted by id (std::map order)
  *live = static_cast<int>(active.size());
  if (resumed_ && resumed_->header.round == r) {
    WalContents c = std::move(*resumed_);
    resumed_.reset();
    FL_RETURN_IF_ERROR(host_.ReopenLog(std::move(c), /*selection=*/true));
    // Its target as the selection had it (over-selection), from the
    // population the log recorded; else every device it selected.
    round_.target = round_.selected.size();
    if (o_.over_selection > 1 && !o_.privacy.enabled()) {
      round_.target = std::min<size_t>(
          round_.selected.size(),
          static_cast<size_t>(std::max(1L, std::lround(o_.fraction * round_.limits.population))));
    }
    return std::vector<std::string>(round_.pending.begin(), round_.pending.end());
  }
  // A relay's parent may name a codec its devices did not register for: those
  // that cannot encode with it are not asked.
  const Codec* codec = FindCodec(plan_.train.codec);
  const std::string name = codec ? codec->name() : kDefaultCodec;
  const auto& clients = host_.registry().entries();
  active.erase(std::remove_if(active.begin(), active.end(),
                              [&](const std::string& id) {
                                const auto it = clients.find(id);
                                return it != clients.end() &&
                                       std::find(it->second.codecs.begin(),
                                                 it->second.codecs.end(),
                                                 name) == it->second.codecs.end();
                              }),
               active.end());
  Selection s = (plan_.private_round() ? poisson_ : uniform_)->Select(std::move(active), r);
  round_.limits.population = static_cast<uint32_t>(std::min<int64_t>(s.population, UINT32_MAX));
  if (o_.privacy.enabled() && o_.fraction * s.population < 20 && !warned_few_participants_) {
    warned_few_participants_ = true;
    spdlog::warn(
        "differential privacy with {:.1f} expected participants a round ({} live devices x "
        "--fraction {}): the noise on the average has standard deviation {:.3g} x the clip "
        "per value and will swamp the updates; DP-FedAvg needs many devices a round "
        "(hundreds or more)",
        o_.fraction * s.population, s.population, o_.fraction,
        o_.privacy.noise_multiplier / std::max(o_.fraction * s.population, 1e-9));
  }
  round_.selected = std::set<std::string>(s.ids.begin(), s.ids.end());
  round_.target = s.target;
  round_.pending = round_.selected;
  round_.m.selected = static_cast<int>(round_.selected.size());
  // What each selected device registered with, as of its selection: a HELLO
  // it sends later does not change what its update may claim. (A relay's
  // claim is many devices': it is bounded apart.)
  round_.limits.registered.clear();
  std::vector<int64_t> registered;
  for (const auto& id : round_.selected) {
    const auto it = clients.find(id);
    const int64_t n = it == clients.end() ? 0 : it->second.num_examples;
    if (!host_.IsRelay(id)) registered.push_back(n);
    round_.limits.registered[id] = n;
  }
  host_.SetLimits(std::move(registered));
  round_.nonce = RandomNonce();
  WalHeader h{r,
              round_.nonce,
              host_.model().version(),
              round_.limits.weight_cap,
              round_.limits.norm_bound,
              round_.limits.registered,
              round_.limits.population};
  FL_RETURN_IF_ERROR(host_.OpenLog(h, /*with_staleness=*/false));
  return s.ids;
}

void RoundCollector::WithdrawTheRest(uint64_t r) {
  for (const auto& id : round_.pending) {
    host_.Withdraw(id, r, round_.nonce,
                   "the round has the updates it needed; this task is withdrawn");
  }
  if (o_.verbose) {
    spdlog::info("round {}: {} updates in; {} selected devices told their work is not needed", r,
                 round_.entries.size(), round_.pending.size());
  }
  round_.m.withdrawn = static_cast<int>(round_.pending.size());
  round_.pending.clear();
}

Status RoundCollector::RunRound(uint64_t r, const std::atomic<bool>* stop, bool* abandoned) {
  FL_RETURN_IF_ERROR(host_.BeginRound(r));
  FL_RETURN_IF_ERROR(WaitForEvaluations(stop, abandoned));
  if (*abandoned) return Status::OK();
  FL_RETURN_IF_ERROR(WaitForLive(r, stop, abandoned));
  if (*abandoned) return Status::OK();
  const double t0 = host_.Now();
  int live = 0;
  auto ask = Select(r, &live);
  if (!ask.ok()) return ask.status();
  // One TASK (per kind of client), encoded and hashed once, sent to every
  // selected client.
  host_.ResetTransfers();
  round_.round = r;
  round_.collecting = true;
  round_.started = round_.last_accept_time = t0;
  round_.first_update_time = 0;
  for (const auto& id : *ask) host_.SendTask(id);
  if (o_.verbose) {
    spdlog::info("round {}: selected {} of {} live clients, model {}", r, round_.m.selected, live,
                 ShortVersion(host_.model().version()));
  }
  const double deadline = std::min(t0 + plan_.deadline_seconds, plan_.end);
  FL_RETURN_IF_ERROR(host_.Pump(deadline, stop, [&] {
    host_.GiveUpOnVanished();
    return round_.pending.empty() || round_.entries.size() >= round_.target;
  }));
  if (!round_.pending.empty() && round_.entries.size() >= round_.target) WithdrawTheRest(r);
  round_.collecting = false;
  round_.reopened = false;
  host_.CloseTransfers(/*keep=*/false);
  if (stop && stop->load()) {
    spdlog::warn("round {} abandoned on signal; the checkpoint of round {} stays", r,
                 host_.completed());
    *abandoned = true;
    return Status::OK();
  }
  RoundMetrics& m = round_.m;
  m.collect_seconds = (round_.pending.empty() ? round_.last_accept_time : host_.Now()) - t0;
  if (m.participants >= 2) m.ingest_seconds = round_.last_accept_time - round_.first_update_time;
  for (const auto& id : round_.pending) {
    spdlog::warn("round {}: {} missed the {:.0f} s deadline", r, id, plan_.deadline_seconds);
    host_.MissedDeadline(id);
  }
  // Aggregate (from the log, in sender order), persist, evaluate in the
  // background.
  return host_.Commit(/*may_skip_eval=*/false);
}

Status SyncRounds::Run(const std::atomic<bool>* stop, bool* abandoned) {
  for (uint64_t r = host_.completed() + 1; r <= static_cast<uint64_t>(o_.rounds); ++r) {
    plan_ = RootPlan(base_, o_, r, host_.dp_clip());
    FL_RETURN_IF_ERROR(RunRound(r, stop, abandoned));
    if (*abandoned) break;
  }
  return Status::OK();
}

}  // namespace fl
