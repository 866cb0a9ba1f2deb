// `--config FILE.toml` for the command-line tools (fl-server, fl-client): a
// TOML file whose keys are the tool's long flag names, so every flag has a
// config key and nothing has two names.
//
//   # /etc/fedge/server.toml
//   bind = "tcp://*:5555"
//   rounds = 100
//   min-clients = 10            # or min_clients
//   insecure = false
//   [dp]                        # a table prefixes its keys: --dp-noise-multiplier
//   noise-multiplier = 1.1
//
// Flags given on the command line override the file. A key that names no flag
// is an error naming the key, its line, the file and the nearest flag; so is a
// value of the wrong type for its flag (CLI11 checks it as it checks flags).
// Arrays are accepted where a flag takes a list (joined with commas for the
// flags that take "a,b,c").
//
// EffectiveConfig gives back every flag's value after parsing, as TOML, for
// the start-up log and the run's output folder; read back with --config, it
// gives the same run.
#ifndef FEDGE_COMMON_CLI_CONFIG_H_
#define FEDGE_COMMON_CLI_CONFIG_H_

#include <map>
#include <string>

#include "common/status.h"

namespace CLI {
class App;
}

namespace fl {

// Keys a tool's config files once had, by their TOML path ("federation.
// round_deadline"), and what to write now ("'deadline'", quoted as the
// message shows it): a file that still has one is refused with that in the
// message.
using RenamedKeys = std::map<std::string, std::string>;

// Adds `--config FILE` to `app` (call after its other options; parse as
// usual, e.g. CLI11_PARSE). `default_path`, when given, is read if it exists
// and no --config was given.
void AddConfigFile(CLI::App* app, const std::string& default_path = "", RenamedKeys renamed = {});

// The effective configuration of a parsed `app`: every option with a long
// name (other than --config and --help), one `key = value` line each, in
// TOML, flags at their defaults included.
std::string EffectiveConfig(const CLI::App& app);

// Writes EffectiveConfig(app) to DIR/TOOL.toml (atomically; DIR made when
// missing), with a header comment naming the tool ("fl-server").
Status WriteEffectiveConfig(const CLI::App& app, const std::string& tool, const std::string& dir);

}  // namespace fl

#endif  // FEDGE_COMMON_CLI_CONFIG_H_
