#include "server/privacy.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace fl {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

double LogAdd(double a, double b) {
  const double lo = std::min(a, b), hi = std::max(a, b);
  if (lo == -kInf) return hi;
  return std::log1p(std::exp(lo - hi)) + hi;
}

double LogComb(double n, double k) {
  return std::lgamma(n + 1) - std::lgamma(k + 1) - std::lgamma(n - k + 1);
}

// log(erfc(x)), accurate where erfc underflows (x > ~26): the asymptotic
// series erfc(x) ~ exp(-x^2) / (x sqrt(pi)) (1 - 1/(2x^2) + 3/(4x^4) - 15/(8x^6)).
double LogErfc(double x) {
  if (x < 20) return std::log(std::erfc(x));
  const double x2 = x * x;
  const double series = 1 - 1 / (2 * x2) + 3 / (4 * x2 * x2) - 15 / (8 * x2 * x2 * x2);
  return -x2 - std::log(x) - 0.5 * std::log(M_PI) + std::log(series);
}

// log(A_alpha) for integer alpha (Mironov et al. 2019, Section 3.3).
double LogAInt(double q, double sigma, int alpha) {
  double log_a = -kInf;
  const double log1mq = std::log1p(-q), logq = std::log(q);
  for (int i = 0; i <= alpha; ++i) {
    const double log_coef = LogComb(alpha, i) + i * logq + (alpha - i) * log1mq;
    log_a = LogAdd(log_a, log_coef + (static_cast<double>(i) * i - i) / (2 * sigma * sigma));
  }
  return log_a;
}

// log(A_alpha) for fractional alpha: the two halves of the integral, split at
// z0, as series that converge; +inf when they do not within 1000 terms.
double LogAFrac(double q, double sigma, double alpha) {
  double log_a0 = -kInf, log_a1 = -kInf;
  const double z0 = sigma * sigma * std::log(1 / q - 1) + 0.5;
  const double log1mq = std::log1p(-q), logq = std::log(q);
  double last_s0 = -kInf, last_s1 = -kInf;
  for (int i = 0; i < 1000; ++i) {
    const double log_coef = LogComb(alpha, i);
    const double j = alpha - i;
    const double log_t0 = log_coef + i * logq + j * log1mq;
    const double log_t1 = log_coef + j * logq + i * log1mq;
    const double log_e0 = std::log(0.5) + LogErfc((i - z0) / (std::sqrt(2.0) * sigma));
    const double log_e1 = std::log(0.5) + LogErfc((z0 - j) / (std::sqrt(2.0) * sigma));
    const double log_s0 = log_t0 + (static_cast<double>(i) * i - i) / (2 * sigma * sigma) + log_e0;
    const double log_s1 = log_t1 + (j * j - j) / (2 * sigma * sigma) + log_e1;
    log_a0 = LogAdd(log_a0, log_s0);
    log_a1 = LogAdd(log_a1, log_s1);
    const double total = LogAdd(log_a0, log_a1);
    if (log_s0 < last_s0 && log_s1 < last_s1 && std::max(log_s0, log_s1) < total - 30) {
      return total;
    }
    last_s0 = log_s0;
    last_s1 = log_s1;
  }
  return kInf;
}

}  // namespace

Status CheckPrivacyOptions(const PrivacyOptions& o) {
  auto finite = [](double v) { return std::isfinite(v); };
  if (!(finite(o.noise_multiplier) && o.noise_multiplier >= 0)) {
    return Status::InvalidArgument("--dp-noise-multiplier must be a finite number >= 0");
  }
  if (!o.clips()) return Status::OK();
  if (!(finite(o.clip) && o.clip > 0)) {
    return Status::InvalidArgument("--dp-clip must be a finite number > 0");
  }
  if (!(o.target_quantile > 0 && o.target_quantile < 1)) {
    return Status::InvalidArgument("--dp-target-quantile must be in (0, 1)");
  }
  if (!(finite(o.clip_learning_rate) && o.clip_learning_rate > 0)) {
    return Status::InvalidArgument("the adaptive clipping learning rate must be > 0");
  }
  if (!(o.delta > 0 && o.delta < 1)) return Status::InvalidArgument("--dp-delta must be in (0, 1)");
  return Status::OK();
}

Result<double> UpdateNoiseMultiplier(double z, double expected) {
  const double sigma_b = expected / 20;
  const double rest = 1 / (z * z) - 1 / (4 * sigma_b * sigma_b);
  if (!(rest > 0)) {
    return Status::InvalidArgument(
        "adaptive clipping with " + std::to_string(expected) +
        " expected participants per round needs --dp-noise-multiplier below " +
        std::to_string(expected / 10) + " (the clipped-count release takes noise of its own); " +
        "use more devices per round, less noise, or a fixed --dp-clip");
  }
  return 1 / std::sqrt(rest);
}

const std::vector<double>& RdpOrders() {
  static const std::vector<double> orders = [] {
    std::vector<double> o = {1.25, 1.5, 1.75, 2., 2.25, 2.5, 3., 3.5, 4., 4.5};
    for (int a = 5; a < 64; ++a) o.push_back(a);
    for (double a : {128., 256., 512.}) o.push_back(a);
    return o;
  }();
  return orders;
}

double RdpSampledGaussian(double q, double sigma, double order) {
  if (q <= 0) return 0;
  if (!(sigma > 0) || std::isinf(order)) return kInf;
  if (q >= 1) return order / (2 * sigma * sigma);
  const double log_a = order == std::floor(order) ? LogAInt(q, sigma, static_cast<int>(order))
                                                  : LogAFrac(q, sigma, order);
  return log_a / (order - 1);
}

double EpsilonFromRdp(const std::vector<double>& orders, const std::vector<double>& rdp,
                      double delta, double* order) {
  double best = kInf, best_order = 0;
  for (size_t i = 0; i < orders.size() && i < rdp.size(); ++i) {
    const double a = orders[i], r = rdp[i];
    double eps;
    if (!(r >= 0)) {
      eps = kInf;  // not a valid RDP value: no guarantee from this order
    } else if (delta * delta + std::expm1(-r) > 0) {
      eps = 0;
    } else if (a > 1.01) {
      eps = r + std::log1p(-1 / a) - std::log(delta * a) / (a - 1);
    } else {
      eps = kInf;
    }
    if (eps < best) {
      best = eps;
      best_order = a;
    }
  }
  if (order) *order = best_order;
  return std::max(0.0, best);
}

RdpAccountant::RdpAccountant() : rdp_(RdpOrders().size(), 0.0) {}

void RdpAccountant::Compose(double q, double sigma, uint64_t count) {
  const auto& orders = RdpOrders();
  for (size_t i = 0; i < orders.size(); ++i) {
    rdp_[i] += static_cast<double>(count) * RdpSampledGaussian(q, sigma, orders[i]);
  }
  steps_ += count;
}

double RdpAccountant::Epsilon(double delta, double* order) const {
  return EpsilonFromRdp(RdpOrders(), rdp_, delta, order);
}

Status RdpAccountant::Restore(uint64_t steps, std::vector<double> rdp) {
  if (rdp.size() != RdpOrders().size()) {
    return Status::InvalidArgument("privacy accountant state has " + std::to_string(rdp.size()) +
                                   " orders, expected " + std::to_string(RdpOrders().size()));
  }
  for (double r : rdp) {
    if (std::isnan(r) || r < 0) return Status::InvalidArgument("privacy accountant state is bad");
  }
  rdp_ = std::move(rdp);
  steps_ = steps;
  return Status::OK();
}

}  // namespace fl
