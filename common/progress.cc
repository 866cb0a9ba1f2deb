#include "common/progress.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "common/clock.h"

namespace fl {

Progress::Progress(double interval_seconds)
    : start_(NowSeconds()), last_(start_), interval_(interval_seconds) {}

double Progress::elapsed() const { return NowSeconds() - start_; }

bool Progress::Due(double fraction, std::string* line) {
  const double now = NowSeconds();
  if (now - last_ < interval_ || !(fraction > 0)) return false;
  last_ = now;
  fraction = std::min(1.0, fraction);
  const double eta = (now - start_) * (1 - fraction) / fraction;
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.0f%%, ETA %.0f s", 100 * fraction, std::ceil(eta));
  *line = buf;
  return true;
}

}  // namespace fl
