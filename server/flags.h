// The command-line flags of ServerOptions (fl-server), by section: each
// flag's name is also its key in a --config file (common/cli_config.h), and
// the sections are the groups --help lists them in. FinishServerFlags turns
// what was parsed into ServerOptions.
#ifndef FEDGE_SERVER_FLAGS_H_
#define FEDGE_SERVER_FLAGS_H_

#include <string>

#include "common/status.h"
#include "server/server.h"

namespace CLI {
class App;
class Option;
}  // namespace CLI

namespace fl {

// What the flags set besides ServerOptions' own fields.
struct ServerFlags {
  ServerOptions o;
  double max_frame_mb{64};
  double transfer_window_mb{16};
  std::string downlink{"fp32"};
  bool no_error_feedback{false};
  bool nearest_rounding{false};
  bool no_eval{false};
  std::string crash_at;
  CLI::Option* uplink_bits{nullptr};
};

// Adds every ServerOptions flag to `app`, bound to `*f` (which must outlive
// the parse).
void AddServerFlags(CLI::App* app, ServerFlags* f);

// After the parse: the options the flags make (--codec sign's 1 bit, the
// downlink format, sizes in bytes, --model FILE.flm, --no-eval).
// InvalidArgument naming the flag that is wrong.
Status FinishServerFlags(ServerFlags* f);

}  // namespace fl

#endif  // FEDGE_SERVER_FLAGS_H_
