// Malicious virtual clients for robustness experiments (fl-sim [adversary]).
//
// An adversary is enrolled and signs correctly: what it sends passes every
// check a compromised device's update would pass. The point is what the
// server's aggregation does with validly signed poison. It trains honestly
// (except label_flip, which trains on flipped labels) and then replaces its
// delta d (kept values, as every update carries them):
//   sign_flip   -s * d
//   scale        s * d
//   noise        Gaussian noise with the norm of d
//   label_flip   d from training on labels y -> (classes - 1 - y)
//   same_value   every coordinate s * ||d|| / sqrt(n): all adversaries send
//                nearly the same vector, the collusion Krum is weak against
#ifndef FEDGE_EXPERIMENTS_SIM_ADVERSARY_H_
#define FEDGE_EXPERIMENTS_SIM_ADVERSARY_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "client/participant.h"
#include "common/dataset.h"
#include "common/status.h"

namespace fl {

enum class AdversaryKind { kSignFlip, kScale, kNoise, kLabelFlip, kSameValue };

// "sign_flip", "scale", "noise", "label_flip", "same_value".
Result<AdversaryKind> ParseAdversaryKind(const std::string& name);
const char* AdversaryKindName(AdversaryKind kind);

// Replaces an honest delta by the adversary's (see above); `seed` drives the
// noise.
void PoisonDelta(AdversaryKind kind, double scale, uint64_t seed, std::vector<float>* delta);

// The virtual clients (of `clients`) that are adversaries: round(fraction *
// clients) of them, chosen by a seeded shuffle; sorted.
std::vector<int> ChooseAdversaries(int clients, double fraction, uint64_t seed);

// `data` with every label y replaced by (num_classes - 1 - y).
Dataset FlipLabels(const Dataset& data);

// Wraps an honest participant and poisons each delta it returns.
class AdversarialParticipant final : public Participant {
 public:
  AdversarialParticipant(std::unique_ptr<Participant> honest, AdversaryKind kind, double scale);

  const std::string& architecture() const override { return honest_->architecture(); }
  int64_t num_examples() const override { return honest_->num_examples(); }
  Result<std::vector<TensorLayout>> Layout(const std::string& architecture) override {
    return honest_->Layout(architecture);
  }
  size_t TaskPayloadLimit() const override { return honest_->TaskPayloadLimit(); }
  Result<FitRes> Fit(const FitIns& ins, const EpochCallback& on_epoch = nullptr) override;

 private:
  std::unique_ptr<Participant> honest_;
  const AdversaryKind kind_;
  const double scale_;
};

}  // namespace fl

#endif  // FEDGE_EXPERIMENTS_SIM_ADVERSARY_H_
