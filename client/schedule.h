// When a device trains (fl-client --schedule-hours): a daily window in local
// time, so that federated training stays out of the way of the device's own
// work (a shop's till by day, a phone while its owner uses it).
#ifndef FEDGE_CLIENT_SCHEDULE_H_
#define FEDGE_CLIENT_SCHEDULE_H_

#include <string>

#include "common/status.h"

namespace fl {

struct TrainingWindow {
  // Hours of the day, [start, end): 22-6 runs over midnight; start == end is
  // refused (say nothing for always).
  int start{0};
  int end{24};
  bool always() const { return start == 0 && end == 24; }
  // True at `hour` (0..23).
  bool Contains(int hour) const;
  // "22-6" (or "always").
  std::string ToString() const;
};

// Parses "H1-H2" (0 <= H1, H2 <= 24, H1 != H2; "" or "always": every hour).
// InvalidArgument saying what is wrong.
Result<TrainingWindow> ParseTrainingWindow(const std::string& text);

// The local hour now (0..23).
int LocalHour();

}  // namespace fl

#endif  // FEDGE_CLIENT_SCHEDULE_H_
