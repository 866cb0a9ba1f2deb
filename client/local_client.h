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

#include "client/participant.h"
#include "common/dataset.h"
#include "common/model_state.h"
#include "common/status.h"

namespace fl {

struct EvaluateRes {
  double accuracy{0};
  double loss{0};
  int64_t num_examples{0};
};

// A model instance that several clients driven by the same thread can share,
// so a simulation worker hosting hundreds of virtual clients holds one model,
// not hundreds. Opaque: keeps LibTorch out of this header.
class SharedModel;

// Creates a shareable model of `architecture`. NotFound for an unknown name.
Result<std::shared_ptr<SharedModel>> NewSharedModel(const std::string& architecture);

// Checks that the model `architecture` (a zoo name or a TorchScript file)
// takes `data`'s samples and has an output per class (CheckModelFitsData in
// common/trainer.h); the error names both.
Status CheckModelFitsData(const std::string& architecture, const Dataset& data,
                          const std::string& data_name);

class LocalClient final : public Participant {
 public:
  // Creates a client holding a copy of the samples of `data` at `indices` and a
  // model of `architecture` (its own, or `shared` when given, which must be of
  // the same architecture and used from one thread at a time). An empty
  // `architecture` (own model only) follows the server: the model is built from
  // the architecture named by each Fit's parameters.
  // `threads` = intra-op threads for training.
  static Result<std::unique_ptr<LocalClient>> Create(const std::string& architecture,
                                                     const Dataset& data,
                                                     const std::vector<int64_t>& indices,
                                                     int threads = 1,
                                                     std::shared_ptr<SharedModel> shared = nullptr);

  // The architecture this client was asked to train ("" when it follows the
  // server).
  const std::string& architecture() const override;
  ~LocalClient();
  LocalClient(const LocalClient&) = delete;
  LocalClient& operator=(const LocalClient&) = delete;

  // Number of local training examples.
  int64_t num_examples() const override;

  // The model's current parameters.
  ModelState GetParameters() const;

  // The names and shapes of the parameters of `architecture`, in canonical
  // order, as this client's model has them (a client following the server
  // builds that architecture first). FailedPrecondition for an architecture
  // this build does not know; InvalidArgument for one other than the client
  // was asked to train. Lets a TASK's model be checked before it is expanded.
  Result<std::vector<TensorLayout>> Layout(const std::string& architecture) override;

  // The largest TASK payload this client can be sent: for the architecture it
  // was asked to train, or, following the server, the largest of the model
  // zoo's (wire::TaskPayloadLimit of its parameter and tensor counts).
  size_t TaskPayloadLimit() const override;

  // Loads `ins.parameters`, trains, and returns the new parameters.
  Status AdoptModelFile(const std::string& path, const std::string& architecture) override;
  Result<FitRes> Fit(const FitIns& ins, const EpochCallback& on_epoch = nullptr) override;

  // Evaluates `parameters` on the samples of `data` (all of them).
  Result<EvaluateRes> Evaluate(const ModelState& parameters, const Dataset& data);

 private:
  // Makes the model `architecture` (see Layout for the errors).
  Status Prepare(const std::string& architecture);
  // What a TASK changed, adopted before training: the architecture, the
  // federation's normalisation and its class numbering.
  Status Adopt(const FitIns& ins);
  Status AdoptNormalization(const Normalization& want);
  Status AdoptClassNames(const std::vector<std::string>& names);

  struct Impl;
  explicit LocalClient(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace fl

#endif  // FEDGE_CLIENT_LOCAL_CLIENT_H_
