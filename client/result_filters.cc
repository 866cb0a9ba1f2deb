#include "client/result_filters.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <thread>

#include "common/model_state.h"
#include "common/wire/limits.h"

namespace fl {

namespace {

// Test hook: the training took this much longer (the thread sleeps).
class TrainDelay final : public ResultFilter {
 public:
  TrainDelay(double seconds, const Clock* clock) : seconds_(seconds), clock_(clock) {}
  Status Apply(Outgoing* out) override {
    clock_->SleepFor(seconds_);
    out->res.seconds += seconds_;
    out->compute_seconds = out->res.seconds;
    return Status::OK();
  }

 private:
  const double seconds_;
  const Clock* clock_;
};

// A slower device: the same work, slowdown times the time (the session holds
// the update back until a device of that speed would have finished).
class Slowdown final : public ResultFilter {
 public:
  explicit Slowdown(double factor) : factor_(factor) {}
  Status Apply(Outgoing* out) override {
    out->res.seconds *= factor_;
    return Status::OK();
  }

 private:
  const double factor_;
};

// A device that goes out of coverage after training: its update is never sent.
class Dropout final : public ResultFilter {
 public:
  Dropout(double probability, uint64_t seed, std::string id, bool verbose)
      : p_(probability), rng_(seed), id_(std::move(id)), verbose_(verbose) {}
  Status Apply(Outgoing* out) override {
    if (!(rng_.UniformDouble() < p_)) return Status::OK();
    out->dropped = true;
    if (verbose_) {
      spdlog::info("[{}] round {}: dropping out of this task (--dropout {}); no update", id_,
                   out->round, p_);
    }
    return Status::OK();
  }

 private:
  const double p_;
  Random rng_;
  const std::string id_;
  const bool verbose_;
};

// The UPDATE's fields from the result, and a relay's partial: its exact sum
// goes up as it is (neither a delta nor quantized nor in error feedback).
class RelayPartial final : public ResultFilter {
 public:
  Status Apply(Outgoing* out) override {
    wire::Update& u = out->update;
    u.num_examples = out->res.num_examples;
    u.train_loss = out->res.last_epoch_loss;
    u.train_seconds = out->res.seconds;
    u.contributors = out->res.contributors;
    u.within_clip = out->res.within_clip;
    if (out->res.exact_sum.empty()) return Status::OK();
    u.codec = wire::kCodecExactSum;
    u.data = std::move(out->res.exact_sum);
    out->complete = true;
    return Status::OK();
  }
};

// The delta from the task's model: the kept values (of the trainable tensors
// only, with a trainable subset). A model that diverged gives a delta that
// is not finite. It is sent with a training loss that is not finite either,
// which the server refuses whatever the codec made of the values, so the
// round does not wait for this device; and it is not carried into the next
// round's error feedback.
class Delta final : public ResultFilter {
 public:
  Delta(std::string id) : id_(std::move(id)) {}
  Status Apply(Outgoing* out) override {
    const FitIns& ins = *out->ins;
    Result<std::vector<float>> delta =
        ins.trainable.empty() ? KeptDifference(out->res.parameters, ins.parameters)
                              : KeptDifference(SelectTensors(out->res.parameters, ins.trainable),
                                               SelectTensors(ins.parameters, ins.trainable));
    // A device holds as few copies of the model at once as it can: both
    // go before the delta is encoded.
    out->res.parameters = ModelState();
    out->ins->parameters = ModelState();
    if (!delta.ok()) return delta.status();  // same model in and out: cannot differ
    out->delta = std::move(delta).value();
    out->finite =
        std::all_of(out->delta.begin(), out->delta.end(), [](float v) { return std::isfinite(v); });
    if (!out->finite) {
      out->update.train_loss = std::nan("");
      spdlog::warn(
          "[{}] round {}: training diverged (the update is not finite); sending it for the "
          "server to refuse",
          id_, out->round);
    }
    return Status::OK();
  }

 private:
  const std::string id_;
};

// The round's codec (the TASK names it), with error feedback when the TASK
// asks for it and the delta is finite.
class Encode final : public ResultFilter {
 public:
  explicit Encode(ErrorFeedback* feedback) : feedback_(feedback) {}
  Status Apply(Outgoing* out) override {
    const wire::TrainConfig& config = out->ins->config;
    const Codec* codec = FindCodec(config.codec);
    if (!codec) return Status::InvalidArgument("codec '" + config.codec + "' is not known");
    const CodecParams p = wire::CodecParamsOf(config, out->ins->seed);
    out->update.codec = codec->name();
    if (config.error_feedback && out->finite) {
      out->update.data = feedback_->Encode(*codec, out->delta, p);
    } else {
      feedback_->Reset();
      out->update.data = codec->Encode(out->delta.data(), out->delta.size(), p);
    }
    std::vector<float>().swap(out->delta);
    out->complete = true;
    return Status::OK();
  }

 private:
  ErrorFeedback* feedback_;
};

}  // namespace

FilterChain DeviceFilters(const FilterOptions& o, ErrorFeedback* feedback) {
  FilterChain chain;
  if (o.train_delay_seconds > 0) {
    chain.Add(
        std::make_unique<TrainDelay>(o.train_delay_seconds, o.clock ? o.clock : SystemClock()));
  }
  if (o.slowdown > 1) chain.Add(std::make_unique<Slowdown>(o.slowdown));
  if (o.dropout > 0) {
    chain.Add(std::make_unique<Dropout>(o.dropout, o.fault_seed, o.id, o.verbose));
  }
  chain.Add(std::make_unique<RelayPartial>());
  chain.Add(std::make_unique<Delta>(o.id));
  chain.Add(std::make_unique<Encode>(feedback));
  return chain;
}

}  // namespace fl
