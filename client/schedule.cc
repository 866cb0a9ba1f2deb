#include "client/schedule.h"

#include <ctime>

#include "common/text.h"

namespace fl {

bool TrainingWindow::Contains(int hour) const {
  if (always()) return true;
  return start < end ? (hour >= start && hour < end) : (hour >= start || hour < end);
}

std::string TrainingWindow::ToString() const {
  return always() ? "always" : std::to_string(start) + "-" + std::to_string(end);
}

Result<TrainingWindow> ParseTrainingWindow(const std::string& text) {
  if (text.empty() || text == "always") return TrainingWindow{};
  const auto parts = SplitList(text, '-');
  auto hour = [](const std::string& s, int* out) {
    if (s.empty() || s.size() > 2 || s.find_first_not_of("0123456789") != std::string::npos) {
      return false;
    }
    *out = std::stoi(s);
    return *out <= 24;
  };
  TrainingWindow w;
  if (parts.size() != 2 || !hour(parts[0], &w.start) || !hour(parts[1], &w.end)) {
    return Status::InvalidArgument("--schedule-hours '" + text +
                                   "': expected START-END in hours of the day, e.g. 22-6");
  }
  if (w.start == 24) w.start = 0;
  if (w.start == w.end) {
    return Status::InvalidArgument("--schedule-hours '" + text +
                                   "': an empty window (for every hour, leave it out)");
  }
  return w;
}

int LocalHour() {
  const std::time_t now = std::time(nullptr);
  std::tm local{};
  localtime_r(&now, &local);
  return local.tm_hour;
}

}  // namespace fl
