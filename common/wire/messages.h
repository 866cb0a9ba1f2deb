// The payloads of fedge's messages, as plain value structs (TensorPipe
// core/message.h style). Their serialization lives apart, in serialize.h.
//
// Round numbers, the model version and the sender id travel in the envelope
// (envelope.h), where they are covered by the payload digest and signature; the
// payloads hold only what the envelope does not.
#ifndef FEDGE_COMMON_WIRE_MESSAGES_H_
#define FEDGE_COMMON_WIRE_MESSAGES_H_

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "common/model_state.h"
#include "common/wire/compact.h"

namespace fl {
namespace wire {

// Optional fields (docs/protocol.md, "Optional fields"). Any payload may end,
// after its fixed fields, with an extension block: u16 count (1..kMaxExtensions),
// then `count` records of u16 tag | u64 length | value bytes, tags unique.
// A receiver skips a record whose tag it does not know, unless the tag has
// kCriticalExtension set: then it refuses the message. Tags are per message
// type. Peers older than extensions refuse trailing bytes, so a sender
// attaches records only to a peer whose messages carry kFlagReadsExtensions
// (envelope.h). Adding an optional field is adding a tag: no version bump, no
// fleet-wide upgrade.
constexpr size_t kMaxExtensions = 32;
constexpr uint16_t kCriticalExtension = 0x8000;
// TASK: the client must ask (READY) before it uploads. Value: empty.
constexpr uint16_t kTaskAskBeforeUpload = 1;
// TASK: TrainConfig::proximal_mu (FedProx). Value: f64, 8 bytes little-endian.
constexpr uint16_t kTaskProximalMu = 2;
// TASK: TrainConfig::normalize_mean/std, the federation's input normalisation.
// Value: per channel, f32 mean then f32 std, little-endian (8 bytes each).
constexpr uint16_t kTaskNormalization = 3;
// TASK: TrainConfig::trainable (on-device transfer learning). Value: tensor
// count u32 little-endian, then a bitmap of that many bits (PackMask).
constexpr uint16_t kTaskTrainable = 4;
// TASK: the TorchScript model file, for a device that asked for it
// (Hello::takes_model_code). Value: the Ed25519 signature (64 bytes,
// crypto/model_code.h) then the file.
constexpr uint16_t kTaskModelCode = 5;
// TASK: TrainConfig::class_names, the federation's classes by index. Value:
// count u32 little-endian, then per name its length u16 little-endian and
// its bytes. Critical: a device that could not renumber its classes by them
// must refuse the TASK, not train with its own numbering.
constexpr uint16_t kTaskClassNames = kCriticalExtension | 6;
// UPDATE: Update::contributors, for a partial aggregate of a relay. Value:
// u32 little-endian, > 1. Critical: a parent that does not know relays must
// refuse the update rather than weigh many devices' average as one device.
constexpr uint16_t kUpdateContributors = kCriticalExtension | 1;
// TASK: a relay aggregator's proof that the model is the root's. Value: the
// root's own TASK envelope (kEnvelopeBytes, signed by the root), whose round
// and model version are this TASK's. A device that pins the root's key
// (fl-client --root-key) checks it (docs/relays.md).
constexpr uint16_t kTaskRootEndorsement = 7;
// HELLO: the device has no model of its own and takes the server's
// TorchScript file, signed, in its TASK. Value: empty.
constexpr uint16_t kHelloTakesModelCode = 1;
// HELLO: Hello::devices, from a relay aggregator. Value: u32 little-endian.
constexpr uint16_t kHelloDevices = 2;
// TASK: TrainConfig::dp_sampling_rate and dp_clip, to a relay aggregator
// under the root's central differential privacy. Value: f64 rate, f64 clip,
// little-endian. Not critical: a device has nothing to do with it, and a
// relay that does not know it sends a partial the root refuses (it lacks
// kUpdateWithinClip).
constexpr uint16_t kTaskPrivacy = 8;
// UPDATE: Update::within_clip, which makes the update a private partial
// aggregate (the mean of its contributors' deltas, each clipped and weighing
// one). Value: u32 little-endian, at most the contributors. Critical: a parent
// that does not know it would weigh the mean by examples.
constexpr uint16_t kUpdateWithinClip = kCriticalExtension | 2;

// TASK: TrainConfig::codec, the round's uplink codec when it is not the
// default "q". Value: its name (1..kMaxCodecNameBytes bytes). Critical: a
// device that cannot encode with it must refuse the TASK, not send "q".
constexpr uint16_t kTaskCodec = kCriticalExtension | 9;
constexpr size_t kMaxCodecNameBytes = 23;

// Name of the default delta codec: block-quantized values at the kept
// positions in canonical order (common/quant_codec.h); 32 bits is the
// unquantized baseline. The others: common/codec.h.
constexpr char kCodecQuant[] = "q";
// Name of a relay's partial aggregate: the exact sum of its devices' weighted
// deltas in fixed point, with their total weight (common/fixed_point.h), so
// its parent adds integers and a relayed round ends where a flat one does.
constexpr char kCodecExactSum[] = "x";

// Client -> server: registration, repeated as a heartbeat while idle.
struct Hello {
  // Training examples the client holds (its FedAvg weight).
  int64_t num_examples{0};
  // Architecture the client can train, e.g. "mnist_cnn".
  std::string architecture;
  // Delta codecs the client can produce, best first.
  std::vector<std::string> codecs;
  // Heartbeat interval the client uses, so the server knows when it is late.
  double heartbeat_seconds{0};
  // Optional (extension kHelloTakesModelCode): see there.
  bool takes_model_code{false};
  // A relay aggregator: the live devices it serves, its own and those of the
  // relays below it (a private round's population); the field's presence
  // says the sender is a relay, even while it serves none. Optional
  // (extension kHelloDevices; -1 = absent: a device).
  int64_t devices{-1};
};

// Hyperparameters of one round of local training.
struct TrainConfig {
  int32_t epochs{1};
  int64_t batch_size{10};
  double lr{0.01};
  double momentum{0};
  double weight_decay{0};
  // Seed for this client's shuffle order this round.
  uint64_t seed{1};
  // Seconds the client has, from receipt, before the server stops waiting.
  double deadline_seconds{60};
  // How the client encodes its delta: bits per value (32, 8, 4, 2), values per
  // scale, stochastic rounding, and whether to carry the quantization residual
  // to the next round (error feedback).
  int32_t uplink_bits{32};
  uint32_t block{256};
  bool stochastic_rounding{true};
  bool error_feedback{true};
  // The codec (common/codec.h) the values go up in; "" = the default "q".
  // Optional (extension kTaskCodec).
  std::string codec;
  // FedProx (Li et al. 2020): the client adds (mu / 2) ||w - w_global||^2 to
  // its loss. Optional (extension kTaskProximalMu of the TASK; 0 = none).
  double proximal_mu{0};
  // The input normalisation the federation trains and evaluates with (one
  // pair, or one per channel). Optional (extension kTaskNormalization; empty:
  // the device keeps its own, from --normalize or computed from its data).
  std::vector<float> normalize_mean;
  std::vector<float> normalize_std;
  // Which tensors of the model train (one byte per tensor, 1 = trains); the
  // others are frozen, and the UPDATE's delta covers the kept values of the
  // trainable tensors only. Optional (extension kTaskTrainable; empty: all).
  std::vector<uint8_t> trainable;
  // The federation's class names by label index (class folders, CSV text
  // labels): a device numbers its own classes by them, so a device lacking a
  // class does not shift the others. Optional (extension kTaskClassNames;
  // empty: numeric labels, or each device numbers its classes itself).
  std::vector<std::string> class_names;
  // To a relay aggregator, under the root's central differential privacy
  // (server/privacy.h): the relay Poisson-samples its devices at this rate,
  // clips each device's delta to this L2 norm and hands up their mean, each
  // device weighing one; the root adds the noise. Optional (extension
  // kTaskPrivacy; 0 = no privacy). Not for devices.
  double dp_sampling_rate{0};
  double dp_clip{0};
};

// Server -> client: train from this global model. The envelope's model version
// is the SHA-256 of the encoded CompactModel, so the client checks what it got.
struct Task {
  TrainConfig config;
  CompactModel model;
  // Optional (extension kTaskAskBeforeUpload): the client sends READY when its
  // update is encoded and the UPDATE only once the server granted it, so the
  // server bounds the update bytes arriving at once (upload admission).
  bool ask_before_upload{false};
  // Optional (extension kTaskModelCode): the TorchScript file of
  // model.architecture and the server's signature over it; empty otherwise.
  std::string model_code;
  std::array<uint8_t, 64> model_code_signature{};
  // Optional (extension kTaskRootEndorsement): the root's signed TASK
  // envelope for this round and model, from a relay; empty otherwise.
  std::string root_endorsement;
};

// Client -> server, in a round whose TASK asked before upload: my UPDATE is
// ready and this large. The server answers ACK "granted" (send it now) or ACK
// "queued" (a second ACK "granted" follows when there is room).
struct Ready {
  uint64_t update_bytes{0};
};

// Client -> server: the result of local training for the envelope's round,
// as a delta from the envelope's base model version.
struct Update {
  int64_t num_examples{0};
  double train_loss{0};
  double train_seconds{0};
  std::string codec;
  // The encoded delta (see codec.h).
  std::string data;
  // Devices the delta averages: 1 for a device's own update; more for a
  // relay aggregator's partial aggregate (the weighted mean of that many
  // devices' deltas, with num_examples their total weight). Optional
  // (extension kUpdateContributors, sent only when > 1).
  uint32_t contributors{1};
  // A relay's private partial aggregate (the TASK carried dp_sampling_rate):
  // how many of its contributors' deltas were within the clipping norm before
  // clipping (adaptive clipping counts them), and the mark that the delta is
  // the plain mean of clipped deltas. Optional (extension kUpdateWithinClip;
  // -1 = not a private partial).
  int64_t within_clip{-1};
};

// Server -> client: ACK (accepted) or REJECT (refused). `reason` is a short
// machine-readable code (e.g. "stale_round"), `message` a sentence for people.
struct Reply {
  // Type of the message this answers (a MessageType value: HELLO or UPDATE).
  uint8_t in_reply_to{0};
  std::string reason;
  std::string message;
};

// Server -> client: the federation is over.
struct Done {
  uint64_t rounds_completed{0};
  double final_accuracy{0};
  std::string message;
};

}  // namespace wire
}  // namespace fl

#endif  // FEDGE_COMMON_WIRE_MESSAGES_H_
