#include "server/update_check.h"

#include <algorithm>
#include <cmath>
#include <optional>

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

using MaybeRefusal = std::optional<Refusal>;

// A relay's partial aggregate: at most --relay-devices devices, each counting
// at most --max-examples examples, from an enrolled relay only; a relay hands
// up the exact sum of its devices' deltas (codec "x"), so that its parent
// adds integers, and nobody else does; under central privacy a relay hands
// up the exact sum of its devices' clipped deltas, each weighing one, with the
// count the adaptive clip needs: any other partial would be weighed as no
// device's sensitivity allows. `*as_relay` when it is judged as a partial.
MaybeRefusal CheckPartial(const VerifiedMessage& msg, const wire::Update& u,
                          const UpdateBounds& b, bool* as_relay) {
  const bool exact_sum = u.codec == wire::kCodecExactSum;
  const bool partial = u.contributors > 1;
  const std::string devices = std::to_string(u.contributors);
  if (partial && b.relay_devices <= 0) {
    return Refuse(msg, "relay_weight",
                  "a partial aggregate of " + devices +
                      " devices from a participant that is not an enrolled relay (--relays)");
  }
  if (partial && static_cast<int64_t>(u.contributors) > b.relay_devices) {
    return Refuse(msg, "relay_weight",
                  "a partial aggregate of " + devices + " devices; a relay aggregates at most " +
                      std::to_string(b.relay_devices) + " (--relay-devices)");
  }
  *as_relay = b.relay_devices > 0 && (b.relay || partial);
  if (b.relay_devices > 0 && u.num_examples == 0) {
    // (Refused, so the round counts the relay as answered and does not wait.)
    return Refuse(msg, "relay_empty", "none of the relay's devices answered this round");
  }
  if (exact_sum && !*as_relay) {
    return Refuse(msg, "relay_weight",
                  "an exact partial sum (codec x) from a participant that is not an enrolled "
                  "relay (--relays)");
  }
  if (*as_relay && !exact_sum) {
    return Refuse(msg, "wrong_codec",
                  "a relay hands up the exact sum of its devices' deltas (codec x); this one "
                  "sent codec '" +
                      Printable(u.codec) + "' (is the relay older than the root?)");
  }
  if (u.within_clip >= 0 && !*as_relay) {
    return Refuse(msg, "relay_weight",
                  "a private partial aggregate from a participant that is not an enrolled relay "
                  "(--relays)");
  }
  if (u.within_clip >= 0 && !b.private_partials) {
    return Refuse(msg, "relay_private",
                  "a private partial aggregate (within-clip count), and this round is not "
                  "private");
  }
  if (*as_relay && b.private_partials && u.within_clip < 0) {
    return Refuse(msg, "relay_private",
                  "the round is private (central DP): a relay hands up the sum of its devices' "
                  "clipped deltas with their within-clip count, and this partial has none (is "
                  "the relay older than the root?)");
  }
  if (*as_relay && b.private_partials && u.num_examples != static_cast<int64_t>(u.contributors)) {
    return Refuse(msg, "relay_weight",
                  "a private partial weighs one per device: weight " +
                      std::to_string(u.num_examples) + " for " + devices + " device(s)");
  }
  return std::nullopt;
}

// The weight an update claims: a relay's at most its devices x
// --max-examples; a device's what it trained on, never more than it
// registered with (its HELLO), and capped by the round.
MaybeRefusal CheckWeight(const VerifiedMessage& msg, const wire::Update& u, const UpdateBounds& b,
                         bool as_relay) {
  if (as_relay) {
    const int64_t most = static_cast<int64_t>(u.contributors) * b.device_cap;
    if (u.num_examples <= 0 || u.num_examples > most) {
      return Refuse(msg, "relay_weight",
                    "weight " + std::to_string(u.num_examples) + " is not in 1.." +
                        std::to_string(most) + " (" + std::to_string(u.contributors) +
                        " device(s) x --max-examples " + std::to_string(b.device_cap) + ")");
    }
  } else if (u.num_examples <= 0 || u.num_examples > b.registered) {
    return Refuse(msg, "bad_weight",
                  "num_examples " + std::to_string(u.num_examples) + " is not in 1.." +
                      std::to_string(b.registered) + " (what it registered with when selected)");
  }
  if (!std::isfinite(u.train_loss) || !std::isfinite(u.train_seconds)) {
    return Refuse(msg, "bad_payload", "train loss or time is not finite");
  }
  return std::nullopt;
}

// The delta's values into `*delta`: a relay's exact sum as its mean (what it
// moves the model by per example, by the aggregation's own arithmetic,
// FixedMean, so that what passes here is what a robust rule or clipping is
// later given), or a device's in the format the TASK asked for (decoded
// values are finite: every codec's decoder bounds its scales). Values at the
// kept positions only: the mask is shared state.
MaybeRefusal DecodeDelta(const VerifiedMessage& msg, const wire::Update& u, const UpdateBounds& b,
                         std::vector<float>* delta) {
  if (u.codec == wire::kCodecExactSum) {
    FixedSum sum;
    if (Status st = DecodeFixedSum(u.data, b.kept_count, &sum); !st.ok()) {
      return Refuse(msg, "bad_delta", st.message());
    }
    if (sum.weight != u.num_examples) {
      return Refuse(msg, "relay_weight",
                    "the partial sum is of weight " + std::to_string(sum.weight) +
                        " and its UPDATE claims " + std::to_string(u.num_examples));
    }
    delta->resize(b.kept_count);
    for (size_t i = 0; i < b.kept_count; ++i) {
      (*delta)[i] = static_cast<float>(FixedMean(sum.values[i], sum.weight));
    }
    return std::nullopt;
  }
  const Codec* codec = FindCodec(b.train->codec);
  CodecParams sent;
  uint64_t count = 0;
  if (Status st = codec->Peek(u.data, &sent, &count); !st.ok()) {
    return Refuse(msg, "bad_delta", st.message());
  }
  const CodecParams asked = wire::CodecParamsOf(*b.train);
  if (!codec->SameFormat(sent, asked)) {
    return Refuse(msg, "wrong_codec",
                  "delta is " + codec->Describe(sent) + "; the round asked for " +
                      codec->Describe(asked));
  }
  if (Status st = codec->Decode(u.data, b.kept_count, delta); !st.ok()) {
    return Refuse(msg, "bad_delta", st.message());
  }
  return std::nullopt;
}

// The delta's norm against the round's bound (a private partial is clipped
// to the privacy clip instead: refusing it would drop all its devices for one
// device's delta), its values against the aggregation's fixed-point range,
// and, for strategies whose step is a convex combination, the model's range
// after it. `*norm` gets the delta's L2 norm.
MaybeRefusal CheckValues(const VerifiedMessage& msg, const UpdateBounds& b,
                         const std::vector<float>& delta, bool private_partial, double* norm) {
  float max_abs = 0;
  *norm = NormAndMaxAbs(delta, &max_abs);
  if (b.norm_bound > 0 && !(*norm <= b.norm_bound) && !private_partial) {
    return Refuse(msg, "norm_too_large",
                  "delta L2 norm " + std::to_string(*norm) + " exceeds the round's bound " +
                      std::to_string(b.norm_bound) + " (" + b.norm_bound_source + ")");
  }
  if (!(max_abs < static_cast<float>(kFixedMaxAbs))) {
    return Refuse(msg, "out_of_range",
                  "a delta value of magnitude " + std::to_string(max_abs) +
                      " is beyond the aggregation's fixed-point range (+-2^23 = 8388608)");
  }
  // |g + s (o + d)| <= max|g| + s (max|o| + max|d|): only an update that
  // could reach the limit is checked value by value.
  if (b.step_scale > 0 &&
      !(b.global_max_abs + b.step_scale * (b.offset_max_abs + max_abs) <= b.value_limit)) {
    if (Status range = CheckUpdateRange(*b.global, delta, b.step_scale, b.value_limit, b.offset,
                                        b.offset_factor);
        !range.ok()) {
      return Refuse(msg, "out_of_range", range.message());
    }
  }
  return std::nullopt;
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
  // The codec the TASK asked for, and nothing else (a relay's exact sum apart).
  const Codec* codec = FindCodec(b.train->codec);
  if (u.codec != wire::kCodecExactSum && (!codec || u.codec != codec->name())) {
    return Refuse(msg, "bad_codec",
                  "codec '" + Printable(u.codec) + "' is not the round's ('" +
                      (codec ? codec->name() : "?") + "')");
  }
  bool as_relay = false;
  double norm = 0;
  MaybeRefusal refusal = CheckPartial(msg, u, b, &as_relay);
  if (!refusal) refusal = CheckWeight(msg, u, b, as_relay);
  if (!refusal) refusal = DecodeDelta(msg, u, b, delta);
  if (!refusal) refusal = CheckValues(msg, b, *delta, u.within_clip >= 0, &norm);
  if (refusal) return std::move(*refusal);
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
