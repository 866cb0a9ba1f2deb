// The training side of an edge client, without any transport.
//
// Vocabulary follows Flower's client API (get_parameters, fit, evaluate): the
// federation hands the client global parameters and hyperparameters (FitIns),
// the client trains on its own shard and returns its new parameters (FitRes).
// The networked runtime (fl-client) and the simulator wrap this class; it keeps
// LibTorch out of its header so they need not include torch.
#ifndef FEDGE_CLIENT_LOCAL_CLIENT_H_
#define FEDGE_CLIENT_LOCAL_CLIENT_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/dataset.h"
#include "common/model_state.h"
#include "common/status.h"

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
  // Seed for this round's shuffle order.
  uint64_t seed{1};
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
};

struct EvaluateRes {
  double accuracy{0};
  double loss{0};
  int64_t num_examples{0};
};

// Per-epoch progress: (epoch, mean loss, training accuracy, seconds).
using EpochCallback = std::function<void(int, double, double, double)>;

// A model instance that several clients driven by the same thread can share,
// so a simulation worker hosting hundreds of virtual clients holds one model,
// not hundreds. Opaque: keeps LibTorch out of this header.
class SharedModel;

// Creates a shareable model of `architecture`. NotFound for an unknown name.
Result<std::shared_ptr<SharedModel>> NewSharedModel(const std::string& architecture);

// One parameter tensor's name and shape.
struct TensorLayout {
  std::string name;
  std::vector<int64_t> shape;
};

class LocalClient final {
 public:
  // Creates a client holding a copy of the samples of `data` at `indices` and a
  // model of `architecture` (its own, or `shared` when given, which must be of
  // the same architecture and used from one thread at a time). An empty
  // `architecture` (own model only) follows the server: the model is built from
  // the architecture named by each Fit's parameters.
  // `threads` = intra-op threads for training.
  static Result<std::unique_ptr<LocalClient>> Create(const std::string& architecture,
                                                     const ImageDataset& data,
                                                     const std::vector<int64_t>& indices,
                                                     int threads = 1,
                                                     std::shared_ptr<SharedModel> shared = nullptr);

  // The architecture this client was asked to train ("" when it follows the
  // server).
  const std::string& architecture() const;
  ~LocalClient();
  LocalClient(const LocalClient&) = delete;
  LocalClient& operator=(const LocalClient&) = delete;

  // Number of local training examples.
  int64_t num_examples() const;

  // The model's current parameters.
  ModelState GetParameters() const;

  // The names and shapes of the parameters of `architecture`, in canonical
  // order, as this client's model has them (a client following the server
  // builds that architecture first). FailedPrecondition for an architecture
  // this build does not know; InvalidArgument for one other than the client
  // was asked to train. Lets a TASK's model be checked before it is expanded.
  Result<std::vector<TensorLayout>> Layout(const std::string& architecture);

  // The largest TASK payload this client can be sent: for the architecture it
  // was asked to train, or, following the server, the largest of the model
  // zoo's (wire::TaskPayloadLimit of its parameter and tensor counts).
  size_t TaskPayloadLimit() const;

  // Loads `ins.parameters`, trains, and returns the new parameters.
  Result<FitRes> Fit(const FitIns& ins, const EpochCallback& on_epoch = nullptr);

  // Evaluates `parameters` on the samples of `data` (all of them).
  Result<EvaluateRes> Evaluate(const ModelState& parameters, const ImageDataset& data);

 private:
  // Makes the model `architecture` (see Layout for the errors).
  Status Prepare(const std::string& architecture);

  struct Impl;
  explicit LocalClient(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace fl

#endif  // FEDGE_CLIENT_LOCAL_CLIENT_H_
