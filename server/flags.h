// The options schema of the server: every ServerOptions setting as a
// command-line flag, bound by AddServerFlags. fl-server and fl-sim both bind
// through it, so a setting has one name everywhere: the flag's long name,
// which is also its key in a --config file (common/cli_config.h; a [dp] table
// prefixes its keys: noise-multiplier is --dp-noise-multiplier). The groups
// are the sections --help lists the flags in. FinishServerFlags turns what was
// parsed into ServerOptions.
//
// The schema also says which settings make a run what it is (the flags
// declared with Setting() in flags.cc): RunSettingsText writes them, with
// their values for given options, into every checkpoint, and --resume
// refuses a run in which any of them changed.
#ifndef FEDGE_SERVER_FLAGS_H_
#define FEDGE_SERVER_FLAGS_H_

#include <functional>
#include <string>
#include <vector>

#include "common/status.h"
#include "server/server.h"

namespace CLI {
class App;
class Option;
}  // namespace CLI

namespace fl {

// A flag of the run settings: its value as a checkpoint records it, and
// whether it matters under the given options (--beta1 only for the adaptive
// strategies, --concurrency only in async mode, ...).
struct RunSetting {
  std::string flag;  // "--lr"
  std::function<std::string()> value;
  std::function<bool(const ServerOptions&)> applies;
};

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
  // The run settings among the flags bound (AddServerFlags fills it).
  std::vector<RunSetting> settings;
};

// Which flags a tool takes: fl-server all of them; fl-sim the ones of a
// federation on one machine (it makes the endpoint, the identities and the
// relays itself, and never gives up on its virtual clients: no --bind,
// --key, --clients, --insecure, --relays, --relay-devices, --client-timeout
// or test hooks).
enum class ServerFlagSet { kServer, kSimulation };

// Adds the ServerOptions flags to `app`, bound to `*f` (which must outlive
// the parse). The values in `f` when called are the defaults --help shows.
void AddServerFlags(CLI::App* app, ServerFlags* f, ServerFlagSet set = ServerFlagSet::kServer);

// After the parse: the options the flags make (--codec sign's 1 bit, the
// downlink format, sizes in bytes, --model FILE.flm, --no-eval).
// InvalidArgument naming the flag that is wrong.
Status FinishServerFlags(ServerFlags* f);

// The run settings of `o`, one "--flag=value" line each, in the schema's
// order: the flags declared as run settings that apply to `o`.
// `o.data.normalize` and `o.class_names` are written as they are, so the
// caller passes the effective ones (what devices normalise with, the
// federation's class list), and `o.strategy.server_lr` resolved.
std::string RunSettingsText(const ServerOptions& o);

}  // namespace fl

#endif  // FEDGE_SERVER_FLAGS_H_
