// The checks an UPDATE passes before the server logs it: a pure function of
// the verified message and the round's bounds (no socket, no registry, no
// round state), so every refusal is testable on its own.
//
// In order: the delta starts from the round's model; the payload decodes; the
// codec is the one the TASK asked for; the weight is within what the device
// registered with (and is capped by the round); training loss and time are
// finite; the delta decodes to exactly the model's kept values; its L2 norm is
// within the round's bound; and, when the strategy's step is a convex
// combination of the deltas, applying it alone keeps every value of the model
// within range (then the aggregate does too).
#ifndef FEDGE_SERVER_UPDATE_CHECK_H_
#define FEDGE_SERVER_UPDATE_CHECK_H_

#include <array>
#include <cstdint>
#include <string>
#include <variant>
#include <vector>

#include "common/model_state.h"
#include "common/wire/messages.h"
#include "crypto/ingress.h"

namespace fl {

// The round's bounds on an update.
struct UpdateBounds {
  // The version of the round's global model.
  std::array<uint8_t, 32> base{};
  // The global model (for the range check) and its kept values.
  const ModelState* global{nullptr};
  size_t kept_count{0};
  double global_max_abs{0};
  // What the TASK asked for: codec bits, block, rounding.
  const wire::TrainConfig* train{nullptr};
  // Examples the device registered with when selected, and the round's cap.
  int64_t registered{0};
  int64_t weight_cap{0};
  // > 0 when the sender is an enrolled relay aggregator: its partial
  // aggregate may average at most this many devices (--relay-devices), and
  // weighs at most its contributors x `device_cap` (--max-examples) examples.
  // A relay's weight is bounded by these, not by `registered` (its devices
  // come and go) or `weight_cap` (a cap for one device).
  int64_t relay_devices{0};
  int64_t device_cap{0};
  // The sender is a relay (enrolled with --relays, or known to send partials
  // under --relays any): each of its updates is judged as a partial, even one
  // of a single device. Otherwise only one that says it averages several is.
  bool relay{false};
  // The round is private (central DP, server/privacy.h): a relay's partial
  // must be a private one (wire::Update::within_clip, weight one per device);
  // without it, none may be.
  bool private_partials{false};
  // Bound on the delta's L2 norm (0 = none), and the flag that set it (for
  // the refusal's message).
  double norm_bound{0};
  const char* norm_bound_source{""};
  // The strategy's convex step scale (Aggregator::convex_step_scale; 0 = no
  // per-update range check), its fixed offset (Aggregator::StepOffset: the
  // step is scale * (offset_factor * offset + delta)) with the largest
  // |offset_factor * offset|, and the largest magnitude a value may take.
  double step_scale{0};
  const std::vector<float>* offset{nullptr};
  double offset_factor{0};
  double offset_max_abs{0};
  float value_limit{0};
};

// An update that passed: what the round log keeps, and its delta's norm.
struct AcceptedUpdate {
  int64_t weight{0};  // capped
  double train_loss{0};
  double train_seconds{0};
  double norm{0};
  std::string encoded_delta;
  // Devices the delta averages (1; more for a relay's partial aggregate).
  int64_t contributors{1};
  // A relay's private partial: its devices' deltas within the clip; -1
  // otherwise.
  int64_t within_clip{-1};
};

// Checks `msg` (an UPDATE) against `bounds`; decodes the delta into `*delta`
// (a reused buffer). A Refusal carries the REJECT reason: wrong_base,
// bad_payload, bad_codec, bad_weight, relay_weight, relay_empty, relay_private, bad_delta,
// wrong_codec, norm_too_large, out_of_range.
std::variant<AcceptedUpdate, Refusal> CheckUpdate(const VerifiedMessage& msg,
                                                  const UpdateBounds& bounds,
                                                  std::vector<float>* delta);

// OK when global + scale * (offset_factor * offset + delta) is within `limit`
// at every kept position (no offset when null); InvalidArgument naming the
// first value that is not.
Status CheckUpdateRange(const ModelState& global, const std::vector<float>& delta, double scale,
                        double limit, const std::vector<float>* offset = nullptr,
                        double offset_factor = 0);

}  // namespace fl

#endif  // FEDGE_SERVER_UPDATE_CHECK_H_
