// Text from peers, made safe to log.
#ifndef FEDGE_COMMON_TEXT_H_
#define FEDGE_COMMON_TEXT_H_

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace fl {

// `s` with every byte outside printable ASCII (and the backslash) written as
// \xNN, cut after `max_bytes` input bytes with "...(N bytes)" appended. For
// strings a peer chose (architecture names, codec names, reasons in a REJECT,
// tensor names in a model) before they reach a log line or an error message:
// no forged log lines, terminal escapes or megabyte lines.
std::string Printable(std::string_view s, size_t max_bytes = 64);

// `s` as a JSON string literal: quotes and backslashes escaped, control
// bytes dropped.
std::string JsonString(std::string_view s);

// The fields of `text` between `sep`s ("a,b,,c" -> a, b, "", c; "" -> none).
std::vector<std::string> SplitList(std::string_view text, char sep);

}  // namespace fl

#endif  // FEDGE_COMMON_TEXT_H_
