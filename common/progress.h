// Progress lines for long work (a device's training round, fl-compress's
// pruning steps): from the fraction done, "42%, ETA 13 s", at most one line
// every few seconds so that a log stays readable.
#ifndef FEDGE_COMMON_PROGRESS_H_
#define FEDGE_COMMON_PROGRESS_H_

#include <string>

namespace fl {

class Progress {
 public:
  // Starts the clock. A line is due at most once every `interval_seconds`.
  explicit Progress(double interval_seconds = 5.0);

  // True, with `*line` ("42%, ETA 13 s"), when a line is due at `fraction`
  // (in [0, 1]) of the work; the estimate assumes the rest goes at the pace
  // so far.
  bool Due(double fraction, std::string* line);

  // Seconds since the start.
  double elapsed() const;

 private:
  double start_;
  double last_;
  double interval_;
};

}  // namespace fl

#endif  // FEDGE_COMMON_PROGRESS_H_
