// What answers a TASK for a ClientSession (client/session.h): the seam
// between the networked runtime and whatever produces new parameters from the
// global model. LocalClient trains with LibTorch; the simulator's adversaries
// wrap one and poison what it returns; a relay aggregator, a server to its own
// devices, can stand here too.
//
// Vocabulary follows Flower's client API (get_parameters, fit, evaluate): the
// federation hands the participant global parameters and hyperparameters
// (FitIns), it returns new parameters (FitRes). Free of LibTorch.
#ifndef FEDGE_CLIENT_PARTICIPANT_H_
#define FEDGE_CLIENT_PARTICIPANT_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "common/dataset.h"
#include "common/model_state.h"
#include "common/status.h"
#include "common/wire/compact.h"
#include "common/wire/messages.h"

namespace fl {

// Instructions for one round of local training.
struct FitIns {
  // Global parameters to start from.
  ModelState parameters;
  // Local epochs E.
  int epochs{1};
  // Local batch size B (<= 0: whole shard).
  int64_t batch_size{10};
  // SGD learning rate, momentum and weight decay.
  double lr{0.01};
  double momentum{0.0};
  double weight_decay{0.0};
  // FedProx proximal term mu (0 = plain local SGD).
  double proximal_mu{0.0};
  // Called as training goes with the fraction of the round's work done (for
  // progress lines); may be empty.
  std::function<void(double)> on_progress;
  // Seed for this round's shuffle order.
  uint64_t seed{1};
  // The federation's input normalisation (empty: keep the device's own).
  Normalization normalization;
  // Which tensors of `parameters` train (one byte per tensor); the others are
  // frozen. Empty: all.
  std::vector<uint8_t> trainable;
  // The federation's class names by label index (empty: the device keeps its
  // own numbering).
  std::vector<std::string> class_names;
  // What a relay aggregator hands on to its own devices unchanged: the
  // parent's round, the TASK's whole configuration as sent (its seed before
  // this participant's id is mixed into `seed`, its codec, its deadline), the
  // root's signed TASK envelope for this round and model (the TASK's own when
  // it came from the root), which lets its devices check the model is the
  // root's, and the format the model came in.
  uint64_t round{0};
  wire::TrainConfig config;
  std::string root_endorsement;
  wire::ValueFormat model_format{wire::ValueFormat::kFp32};
};

// Result of one round of local training.
struct FitRes {
  // Parameters after local training.
  ModelState parameters;
  // Examples in the client's shard (the FedAvg weight n_k).
  int64_t num_examples{0};
  // Mean training loss of the first and last local epoch.
  double first_epoch_loss{0};
  double last_epoch_loss{0};
  // Wall time of local training.
  double seconds{0};
  // Devices whose updates `parameters` averages: 1 for a device, more for a
  // relay aggregator's partial aggregate (its UPDATE then says how many, and
  // the parent bounds its weight by that).
  int64_t contributors{1};
  // A relay's private partial (its TASK carried dp_sampling_rate): how many
  // contributors' deltas were within the clipping norm; -1 otherwise.
  int64_t within_clip{-1};
  // A relay aggregator's partial aggregate: the exact sum of its devices'
  // weighted deltas and their total weight, encoded (common/fixed_point.h,
  // codec "x"), sent as it is instead of `parameters` minus the task's
  // model, and neither quantized nor carried in error feedback. Empty for a
  // device.
  std::string exact_sum;
};

// Per-epoch progress: (epoch, mean loss, training accuracy, seconds).
using EpochCallback = std::function<void(int, double, double, double)>;

// One parameter tensor's name and shape.
struct TensorLayout {
  std::string name;
  std::vector<int64_t> shape;
};

class Participant {
 public:
  virtual ~Participant() = default;

  // The architecture it trains ("" when it follows the server's TASK).
  virtual const std::string& architecture() const = 0;

  // Examples it answers for (its HELLO's weight claim).
  virtual int64_t num_examples() const = 0;

  // A relay aggregator: the live devices it serves (its HELLO's claim, a
  // private round's population at the parent). -1 for a device.
  virtual int64_t devices() const { return -1; }

  // The names and shapes of the parameters of `architecture` in canonical
  // order. FailedPrecondition for an architecture it cannot handle at all;
  // InvalidArgument for one other than it was asked to train.
  virtual Result<std::vector<TensorLayout>> Layout(const std::string& architecture) = 0;

  // The largest TASK payload it can be sent.
  virtual size_t TaskPayloadLimit() const = 0;

  // Trains the TorchScript model in `path` (a file the session checked
  // against the server's signature) from now on; it must be `architecture`.
  virtual Status AdoptModelFile(const std::string& path, const std::string& architecture) {
    (void)path;
    return Status::FailedPrecondition("this participant cannot load " + architecture);
  }

  // New parameters from `ins.parameters` (same layout and masks).
  // FailedPrecondition: it can never answer (the session ends).
  virtual Result<FitRes> Fit(const FitIns& ins, const EpochCallback& on_epoch = nullptr) = 0;
};

}  // namespace fl

#endif  // FEDGE_CLIENT_PARTICIPANT_H_
