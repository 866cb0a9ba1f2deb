#include "server/update_check.h"

#include <algorithm>
#include <cmath>

#include "common/fixed_point.h"
#include "common/codec.h"
#include "common/wire/limits.h"
#include "common/text.h"
#include "crypto/message.h"

namespace fl {
namespace {

Refusal Refuse(const VerifiedMessage& msg, std::string reason, std::string message) {
  return Refusal{std::move(reason), std::move(message), msg.envelope()};
}

// The L2 norm of `v` (summed in double) and its largest magnitude. Eight
// running sums instead of one: one sum waits on the previous addition at
// every value, eight keep the adder busy.
// The order of the additions is fixed, so the norm is the same every time.
double NormAndMaxAbs(const std::vector<float>& v, float* max_abs) {
  constexpr size_t kLanes = 8;
  double sq[kLanes] = {};
  float mx[kLanes] = {};
  const size_t n = v.size(), whole = n - n % kLanes;
  for (size_t i = 0; i < whole; i += kLanes) {
    for (size_t k = 0; k < kLanes; ++k) {
      const float x = v[i + k];
      sq[k] += static_cast<double>(x) * x;
      mx[k] = std::max(mx[k], std::fabs(x));
    }
  }
  for (size_t i = whole; i < n; ++i) {
    sq[0] += static_cast<double>(v[i]) * v[i];
    mx[0] = std::max(mx[0], std::fabs(v[i]));
  }
  double total = 0;
  float largest = 0;
  for (size_t k = 0; k < kLanes; ++k) {
    total += sq[k];
    largest = std::max(largest, mx[k]);
  }
  *max_abs = largest;
  return std::sqrt(total);
}

}  // namespace

std::variant<AcceptedUpdate, Refusal> CheckUpdate(const VerifiedMessage& msg, const UpdateBounds& b,
                                                  std::vector<float>* delta) {
  const wire::Envelope& env = msg.envelope();
  if (env.model_version != b.base) {
    return Refuse(msg, "wrong_base",
                  "delta is from model " + ShortVersion(env.model_version) +
                      ", round started from " + ShortVersion(b.base));
  }
  wire::Update u;
  if (Status st = msg.Decode(&u); !st.ok()) return Refuse(msg, "bad_payload", st.message());
  const wire::TrainConfig& tc = *b.train;
  const bool exact_sum = u.codec == wire::kCodecExactSum;
  // The codec the TASK asked for, and nothing else (a relay's exact sum apart).
  const Codec* codec = FindCodec(tc.codec);
  if (!exact_sum && (!codec || u.codec != codec->name())) {
    return Refuse(msg, "bad_codec",
                  "codec '" + Printable(u.codec) + "' is not the round's ('" +
                      (codec ? codec->name() : "?") + "')");
  }
  // A relay's partial aggregate: at most --relay-devices devices, each
  // counting at most --max-examples examples, from an enrolled relay only.
  const bool partial = u.contributors > 1;
  if (partial && b.relay_devices <= 0) {
    return Refuse(msg, "relay_weight",
                  "a partial aggregate of " + std::to_string(u.contributors) +
                      " devices from a participant that is not an enrolled relay (--relays)");
  }
  if (partial && static_cast<int64_t>(u.contributors) > b.relay_devices) {
    return Refuse(msg, "relay_weight",
                  "a partial aggregate of " + std::to_string(u.contributors) +
                      " devices; a relay aggregates at most " + std::to_string(b.relay_devices) +
                      " (--relay-devices)");
  }
  const bool as_relay = b.relay_devices > 0 && (b.relay || partial);
  if (b.relay_devices > 0 && u.num_examples == 0) {
    // (Refused, so the round counts the relay as answered and does not wait.)
    return Refuse(msg, "relay_empty", "none of the relay's devices answered this round");
  }
  // A relay hands up the exact sum of its devices' deltas (codec "x"), so
  // that its parent adds integers; nobody else does.
  if (exact_sum && !as_relay) {
    return Refuse(msg, "relay_weight",
                  "an exact partial sum (codec x) from a participant that is not an enrolled "
                  "relay (--relays)");
  }
  if (as_relay && !exact_sum) {
    return Refuse(msg, "wrong_codec",
                  "a relay hands up the exact sum of its devices' deltas (codec x); this one "
                  "sent codec '" +
                      Printable(u.codec) + "' (is the relay older than the root?)");
  }
  // Under central privacy a relay hands up the exact sum of its devices'
  // clipped deltas, each weighing one, with the count the adaptive clip needs;
  // any other partial would be weighed as no device's sensitivity allows.
  if (u.within_clip >= 0 && !as_relay) {
    return Refuse(msg, "relay_weight",
                  "a private partial aggregate from a participant that is not an enrolled relay "
                  "(--relays)");
  }
  if (u.within_clip >= 0 && !b.private_partials) {
    return Refuse(msg, "relay_private",
                  "a private partial aggregate (within-clip count), and this round is not "
                  "private");
  }
  if (as_relay && b.private_partials) {
    if (u.within_clip < 0) {
      return Refuse(msg, "relay_private",
                    "the round is private (central DP): a relay hands up the sum of its devices' "
                    "clipped deltas with their within-clip count, and this partial has none (is "
                    "the relay older than the root?)");
    }
    if (u.num_examples != static_cast<int64_t>(u.contributors)) {
      return Refuse(msg, "relay_weight",
                    "a private partial weighs one per device: weight " +
                        std::to_string(u.num_examples) + " for " + std::to_string(u.contributors) +
                        " device(s)");
    }
  }
  if (as_relay) {
    const int64_t most = static_cast<int64_t>(u.contributors) * b.device_cap;
    if (u.num_examples <= 0 || u.num_examples > most) {
      return Refuse(msg, "relay_weight",
                    "weight " + std::to_string(u.num_examples) + " is not in 1.." +
                        std::to_string(most) + " (" + std::to_string(u.contributors) +
                        " device(s) x --max-examples " + std::to_string(b.device_cap) + ")");
    }
  } else if (u.num_examples <= 0 || u.num_examples > b.registered) {
    // The weight: what the device trained on, never more than it registered
    // with (its HELLO), and capped by the round.
    return Refuse(msg, "bad_weight",
                  "num_examples " + std::to_string(u.num_examples) + " is not in 1.." +
                      std::to_string(b.registered) + " (what it registered with when selected)");
  }
  if (!std::isfinite(u.train_loss) || !std::isfinite(u.train_seconds)) {
    return Refuse(msg, "bad_payload", "train loss or time is not finite");
  }
  const bool private_partial = u.within_clip >= 0;
  if (exact_sum) {
    // The partial's checks below are those of its mean, what it moves the
    // model by per example.
    FixedSum sum;
    if (Status st = DecodeFixedSum(u.data, b.kept_count, &sum); !st.ok()) {
      return Refuse(msg, "bad_delta", st.message());
    }
    if (sum.weight != u.num_examples) {
      return Refuse(msg, "relay_weight",
                    "the partial sum is of weight " + std::to_string(sum.weight) +
                        " and its UPDATE claims " + std::to_string(u.num_examples));
    }
    // (The aggregation's own arithmetic, FixedMean, so that what passes
    // here is what a robust rule or clipping is later given.)
    delta->resize(b.kept_count);
    for (size_t i = 0; i < b.kept_count; ++i) {
      (*delta)[i] = static_cast<float>(FixedMean(sum.values[i], sum.weight));
    }
  } else {
    // In the format the TASK asked for, and nothing else.
    CodecParams sent;
    uint64_t count = 0;
    if (Status st = codec->Peek(u.data, &sent, &count); !st.ok()) {
      return Refuse(msg, "bad_delta", st.message());
    }
    const CodecParams asked = wire::CodecParamsOf(tc);
    if (!codec->SameFormat(sent, asked)) {
      return Refuse(msg, "wrong_codec",
                    "delta is " + codec->Describe(sent) + "; the round asked for " +
                        codec->Describe(asked));
    }
    // Values at the kept positions only: the mask is shared state. Decoded
    // values are finite (every codec's decoder bounds its scales).
    if (Status st = codec->Decode(u.data, b.kept_count, delta); !st.ok()) {
      return Refuse(msg, "bad_delta", st.message());
    }
  }
  float max_abs = 0;
  const double norm = NormAndMaxAbs(*delta, &max_abs);
  // (A private partial is clipped to the privacy clip instead: refusing it
  // would drop all its devices for one device's delta.)
  if (b.norm_bound > 0 && !(norm <= b.norm_bound) && !private_partial) {
    return Refuse(msg, "norm_too_large",
                  "delta L2 norm " + std::to_string(norm) + " exceeds the round's bound " +
                      std::to_string(b.norm_bound) + " (" + b.norm_bound_source + ")");
  }
  // Aggregation sums in fixed point (common/fixed_point.h): a value it
  // cannot hold is refused here, not at the round's end.
  if (!(max_abs < static_cast<float>(kFixedMaxAbs))) {
    return Refuse(msg, "out_of_range",
                  "a delta value of magnitude " + std::to_string(max_abs) +
                      " is beyond the aggregation's fixed-point range (+-2^23 = 8388608)");
  }
  // |g + s (o + d)| <= max|g| + s (max|o| + max|d|): only an update that
  // could reach the limit is checked value by value.
  if (b.step_scale > 0 &&
      !(b.global_max_abs + b.step_scale * (b.offset_max_abs + max_abs) <= b.value_limit)) {
    if (Status range = CheckUpdateRange(*b.global, *delta, b.step_scale, b.value_limit, b.offset,
                                        b.offset_factor);
        !range.ok()) {
      return Refuse(msg, "out_of_range", range.message());
    }
  }
  AcceptedUpdate a;
  a.weight = as_relay ? u.num_examples : std::min(u.num_examples, b.weight_cap);
  a.train_loss = u.train_loss;
  a.train_seconds = u.train_seconds;
  a.norm = norm;
  a.encoded_delta = std::move(u.data);
  a.contributors = u.contributors;
  a.within_clip = u.within_clip;
  return a;
}

Status CheckUpdateRange(const ModelState& global, const std::vector<float>& delta, double scale,
                        double limit, const std::vector<float>* offset, double offset_factor) {
  size_t j = 0;
  for (const auto& t : global.tensors) {
    for (size_t k = 0; k < t.values.size(); ++k) {
      if (!t.mask.empty() && !t.mask[k]) continue;
      const double o = offset ? offset_factor * static_cast<double>((*offset)[j]) : 0.0;
      const double v = t.values[k] + scale * (o + static_cast<double>(delta[j++]));
      if (!(std::fabs(v) <= limit)) {
        return Status::InvalidArgument("value " + std::to_string(k) + " of '" + t.name +
                                       "' would become " + std::to_string(v) +
                                       ", beyond --max-param-value " + std::to_string(limit));
      }
    }
  }
  return Status::OK();
}

}  // namespace fl
