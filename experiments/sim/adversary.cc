#include "experiments/sim/adversary.h"

#include <cmath>

#include "common/random.h"

namespace fl {
namespace {

const struct {
  const char* name;
  AdversaryKind kind;
} kKinds[] = {
    {"sign_flip", AdversaryKind::kSignFlip},   {"scale", AdversaryKind::kScale},
    {"noise", AdversaryKind::kNoise},          {"label_flip", AdversaryKind::kLabelFlip},
    {"same_value", AdversaryKind::kSameValue},
};

double Norm(const std::vector<float>& v) {
  double sq = 0;
  for (float x : v) sq += static_cast<double>(x) * x;
  return std::sqrt(sq);
}

}  // namespace

Result<AdversaryKind> ParseAdversaryKind(const std::string& name) {
  std::string all;
  for (const auto& k : kKinds) {
    if (name == k.name) return k.kind;
    all += (all.empty() ? "" : ", ") + std::string(k.name);
  }
  return Status::InvalidArgument("adversary kind '" + name + "' is not one of " + all);
}

const char* AdversaryKindName(AdversaryKind kind) {
  for (const auto& k : kKinds) {
    if (k.kind == kind) return k.name;
  }
  return "?";
}

void PoisonDelta(AdversaryKind kind, double scale, uint64_t seed, std::vector<float>* delta) {
  std::vector<float>& d = *delta;
  switch (kind) {
    case AdversaryKind::kSignFlip:
      for (float& x : d) x = static_cast<float>(-scale * x);
      return;
    case AdversaryKind::kScale:
      for (float& x : d) x = static_cast<float>(scale * x);
      return;
    case AdversaryKind::kNoise: {
      const double norm = Norm(d);
      Random rng(seed);
      for (float& x : d) x = static_cast<float>(rng.Normal());
      const double noise_norm = Norm(d);
      if (noise_norm > 0) {
        for (float& x : d) x = static_cast<float>(x * (norm / noise_norm));
      }
      return;
    }
    case AdversaryKind::kLabelFlip:
      return;  // the poison is in its training data
    case AdversaryKind::kSameValue: {
      const double v = d.empty() ? 0 : scale * Norm(d) / std::sqrt(static_cast<double>(d.size()));
      for (float& x : d) x = static_cast<float>(v);
      return;
    }
  }
}

std::vector<int> ChooseAdversaries(int clients, double fraction, uint64_t seed) {
  std::vector<int> all(static_cast<size_t>(std::max(0, clients)));
  for (int k = 0; k < clients; ++k) all[k] = k;
  Random rng(seed * 0x2545F4914F6CDD1DULL + 0xAD7E25A7ULL);
  rng.Shuffle(&all);
  const auto n = static_cast<size_t>(std::lround(fraction * clients));
  all.resize(std::min(all.size(), n));
  std::sort(all.begin(), all.end());
  return all;
}

Dataset FlipLabels(const Dataset& data) {
  Dataset out = data;
  for (uint8_t& y : out.labels) y = static_cast<uint8_t>(data.num_classes - 1 - y);
  return out;
}

AdversarialParticipant::AdversarialParticipant(std::unique_ptr<Participant> honest,
                                               AdversaryKind kind, double scale)
    : honest_(std::move(honest)), kind_(kind), scale_(scale) {}

Result<FitRes> AdversarialParticipant::Fit(const FitIns& ins, const EpochCallback& on_epoch) {
  auto res = honest_->Fit(ins, on_epoch);
  if (!res.ok() || kind_ == AdversaryKind::kLabelFlip) return res;
  auto delta = KeptDifference(res->parameters, ins.parameters);
  if (!delta.ok()) return delta.status();
  PoisonDelta(kind_, scale_, ins.seed, &*delta);
  // The poisoned parameters: the global model plus the poisoned delta, on the
  // kept positions (pruned ones stay 0, as the server expects).
  ModelState poisoned = ins.parameters;
  FL_RETURN_IF_ERROR(AddScaledKept(&poisoned, *delta, 1.0f));
  res->parameters = std::move(poisoned);
  return res;
}

}  // namespace fl
