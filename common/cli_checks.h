// Checks of flag values for the command-line tools, whose messages say what
// the value must be ("--lr: must be > 0, not -1"), where CLI11's own
// PositiveNumber and NonNegativeNumber print the whole range of a double.
// Header-only: CLI11 is a header library, and only the tools' flag binders
// include this.
#ifndef FEDGE_COMMON_CLI_CHECKS_H_
#define FEDGE_COMMON_CLI_CHECKS_H_

#include <CLI/CLI.hpp>
#include <cstdlib>
#include <string>

namespace fl {
namespace cli {

// A number above `floor` (or at least `floor`, with `or_equal`).
inline CLI::Validator Above(double floor, bool or_equal, const std::string& name) {
  return CLI::Validator(
      [floor, or_equal](std::string& text) -> std::string {
        char* end = nullptr;
        const double v = std::strtod(text.c_str(), &end);
        const bool number = !text.empty() && end == text.c_str() + text.size();
        if (number && (or_equal ? v >= floor : v > floor)) return "";
        char bound[32];
        std::snprintf(bound, sizeof(bound), "%g", floor);
        return std::string("must be ") + (or_equal ? ">= " : "> ") + bound + ", not '" + text + "'";
      },
      name);
}

inline CLI::Validator Positive() { return Above(0, false, "POSITIVE"); }
inline CLI::Validator NonNegative() { return Above(0, true, "NONNEGATIVE"); }

}  // namespace cli
}  // namespace fl

#endif  // FEDGE_COMMON_CLI_CHECKS_H_
