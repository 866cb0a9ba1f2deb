// A small, seeded, portable pseudo-random generator.
//
// Every random source in fedge takes an explicit seed (LevelDB util/random.h style:
// `explicit Random(uint64_t seed)`), so the same config and seed give the same
// partition, client selection and shuffling on every platform. The standard
// library's distributions are implementation-defined, so the few we need
// (uniform integers, uniform reals, normal, gamma, shuffle) are implemented here.
#ifndef FEDGE_COMMON_RANDOM_H_
#define FEDGE_COMMON_RANDOM_H_

#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

namespace fl {

// xoshiro256** seeded through splitmix64. Not for cryptographic use.
class Random final {
 public:
  explicit Random(uint64_t seed);

  // Returns 64 uniformly distributed bits.
  uint64_t Next();
  // Returns a uniform integer in [0, n). Requires n > 0. Unbiased (rejection).
  uint64_t Uniform(uint64_t n);
  // Returns a uniform double in [0, 1).
  double UniformDouble();
  // Returns a standard normal variate (Box-Muller).
  double Normal();
  // Returns a Gamma(shape, 1) variate; shape > 0 (Marsaglia & Tsang 2000).
  double Gamma(double shape);
  // Returns a draw from Dirichlet(alpha_1..alpha_k); every alpha_i > 0.
  std::vector<double> Dirichlet(const std::vector<double>& alpha);

  // Fisher-Yates shuffle of `v` in place.
  template <typename T>
  void Shuffle(std::vector<T>* v) {
    for (size_t i = v->size(); i > 1; --i) {
      size_t j = static_cast<size_t>(Uniform(i));
      std::swap((*v)[i - 1], (*v)[j]);
    }
  }

 private:
  uint64_t s_[4];
};

}  // namespace fl

#endif  // FEDGE_COMMON_RANDOM_H_
