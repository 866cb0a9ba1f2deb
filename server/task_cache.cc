#include "server/task_cache.h"

#include <memory>

#include "common/wire/compact.h"
#include "common/wire/serialize.h"
#include "crypto/message.h"
#include "crypto/sha256.h"

namespace fl {

namespace {
// The server's id in envelopes it sends.
const char kServerId[] = "server";
}  // namespace

std::vector<transport::SharedFrame> TaskCache::For(
    const ClientEntry& c, const TaskRef& task, uint64_t round,
    const std::array<uint8_t, wire::kNonceBytes>& nonce, const GlobalModel& model,
    const RoundPlan& plan) {
  int variant = !c.reads_extensions ? 0 : ask_before_upload_ ? 2 : 1;
  if (variant > 0 && c.needs_model_code && !model_code_.empty()) variant += 2;
  std::vector<transport::SharedFrame>& frames = frames_[variant];
  if (frames.empty()) frames = Build(variant, round, nonce, model, plan, &envelopes_[variant]);
  if (task.step != round) return {};  // (invariant: callers refresh it)
  if (task.nonce == nonce) return frames;
  wire::Envelope env = envelopes_[variant];
  env.nonce = task.nonce;
  return {std::make_shared<const std::string>(SealEnvelope(env, signer_)), frames[1]};
}

std::vector<transport::SharedFrame> TaskCache::Build(
    int variant, uint64_t round, const std::array<uint8_t, wire::kNonceBytes>& nonce,
    const GlobalModel& model, const RoundPlan& plan, wire::Envelope* unsealed) const {
  wire::Task task;
  if (variant >= 3) {
    task.model_code = model_code_;
    task.model_code_signature = model_code_signature_;
    variant -= 2;
  }
  task.config = plan.train;
  task.config.deadline_seconds = plan.deadline_seconds;
  if (variant == 0) {
    // Optional fields, which a device older than them cannot read.
    task.config.trainable.clear();
    task.config.proximal_mu = 0;
    task.config.normalize_mean.clear();
    task.config.normalize_std.clear();
    task.config.class_names.clear();
  }
  task.ask_before_upload = variant == 2;
  if (variant >= 1) task.root_endorsement = plan.root_endorsement;
  task.config.dp_sampling_rate = task.config.dp_clip = 0;
  if (variant >= 1 && plan.private_round()) {
    // For the relays among the recipients (devices have nothing to do with
    // it): sample at this rate and clip to this norm.
    task.config.dp_sampling_rate = plan.sampling_rate;
    task.config.dp_clip = plan.dp_clip;
  }
  // Built for this TASK and dropped with it: between rounds only the
  // encoded TASK holds the model in its wire form.
  task.model = wire::Compact(model.state(), model.downlink());
  wire::Envelope env;
  env.type = wire::MessageType::kTask;
  env.flags = wire::kFlagReadsExtensions;
  env.sender = kServerId;
  env.round = round;
  env.model_version = model.version();
  env.nonce = nonce;
  std::string payload = wire::Encode(task);
  env.payload_length = payload.size();
  env.payload_digest = Sha256(payload);
  *unsealed = env;
  return {std::make_shared<const std::string>(SealEnvelope(env, signer_)),
          std::make_shared<const std::string>(std::move(payload))};
}

}  // namespace fl
