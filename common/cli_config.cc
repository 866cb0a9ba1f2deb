#include "common/cli_config.h"

#include <toml++/toml.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <sstream>
#include <vector>

#include "common/file_util.h"

namespace fl {
namespace {

// Edit distance, for "did you mean".
size_t Distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

std::string Scalar(const toml::node& v) {
  if (auto s = v.as_string()) return s->get();
  if (auto i = v.as_integer()) return std::to_string(i->get());
  if (auto f = v.as_floating_point()) {
    // The shortest text that reads back as the same double (0.1, not
    // 0.10000000000000001).
    char buf[40];
    for (int digits = 15; digits <= 17; ++digits) {
      std::snprintf(buf, sizeof buf, "%.*g", digits, f->get());
      if (std::strtod(buf, nullptr) == f->get()) break;
    }
    return buf;
  }
  if (auto b = v.as_boolean()) return b->get() ? "true" : "false";
  return {};
}

// Reads a TOML file into CLI11's items: a key is a long flag name ('_' may
// stand for '-'), a table's name prefixes its keys.
class TomlConfig final : public CLI::Config {
 public:
  TomlConfig(const CLI::App* app, const CLI::Option* config, RenamedKeys renamed)
      : app_(app), config_(config), renamed_(std::move(renamed)) {}

  std::string to_config(const CLI::App* app, bool default_also, bool write_description,
                        std::string prefix) const override {
    return CLI::ConfigTOML().to_config(app, default_also, write_description, std::move(prefix));
  }

  std::vector<CLI::ConfigItem> from_config(std::istream& in) const override {
    std::string path = "(config)";
    if (config_->count() > 0) path = config_->results().front();
    const std::string text{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
    toml::table table;
    try {
      table = toml::parse(text, path);
    } catch (const toml::parse_error& e) {
      throw CLI::ConfigError("config file " + path + ", line " +
                             std::to_string(e.source().begin.line) + ": " +
                             std::string(e.description()));
    }
    std::vector<CLI::ConfigItem> out;
    Flatten(table, "", "", path, &out);
    return out;
  }

 private:
  // `prefix`: the tables' names as a flag's ("dp-"); `dotted`: as TOML
  // writes them ("dp.").
  void Flatten(const toml::table& table, const std::string& prefix, const std::string& dotted,
               const std::string& path, std::vector<CLI::ConfigItem>* out) const {
    for (const auto& [k, node] : table) {
      const std::string key = dotted + std::string(k.str());
      std::string name = prefix + std::string(k.str());
      std::replace(name.begin(), name.end(), '_', '-');
      const std::string where =
          "config file " + path + ", line " + std::to_string(node.source().begin.line);
      if (const toml::table* sub = node.as_table()) {
        Flatten(*sub, name + "-", key + ".", path, out);
        continue;
      }
      const CLI::Option* op = app_->get_option_no_throw("--" + name);
      if (const auto renamed = renamed_.find(key); renamed != renamed_.end() && !op) {
        throw CLI::ConfigError(where + ": '" + key + "' is now " + renamed->second +
                               " (a key is a flag's long name: run with --help)");
      }
      if (!op || op == config_ || name == "help") {
        throw CLI::ConfigError(where + ": unknown key '" + name + "'" + Nearest(name) +
                               " (a key is a flag's long name: run with --help)");
      }
      if (op->get_group().empty()) {
        throw CLI::ConfigError(where + ": '" + name +
                               "' is a test hook; it is not taken from a config file");
      }
      // (min_clients and min-clients are one key: given twice, which would win?)
      for (const auto& earlier : *out) {
        if (earlier.name == name) {
          throw CLI::ConfigError(where + ": '" + name + "' is set twice in the file");
        }
      }
      CLI::ConfigItem item;
      item.name = name;
      if (const toml::array* list = node.as_array()) {
        for (const auto& element : *list) {
          const std::string v = Scalar(element);
          if (v.empty() && !element.is_string()) {
            throw CLI::ConfigError(where + ": '" + name +
                                   "' holds a value that is not a number, "
                                   "string or boolean");
          }
          item.inputs.push_back(v);
        }
        if (op->get_items_expected_max() <= 1 && item.inputs.size() > 1) {
          // A flag of one value that takes a list as "a,b,c".
          std::string joined;
          for (const auto& v : item.inputs) joined += (joined.empty() ? "" : ",") + v;
          item.inputs = {joined};
        }
      } else {
        const std::string v = Scalar(node);
        if (v.empty() && !node.is_string()) {
          throw CLI::ConfigError(where + ": '" + name +
                                 "' is not a number, string, boolean or array of them");
        }
        item.inputs.push_back(v);
      }
      out->push_back(std::move(item));
    }
  }

  // "; did you mean 'x'?" for the closest long flag name, when close.
  std::string Nearest(const std::string& name) const {
    std::string best;
    size_t best_distance = 4;
    for (const CLI::Option* op : app_->get_options()) {
      for (const auto& l : op->get_lnames()) {
        const size_t d = Distance(name, l);
        if (d < best_distance) {
          best_distance = d;
          best = l;
        }
      }
    }
    return best.empty() ? "" : "; did you mean '" + best + "'?";
  }

  const CLI::App* app_;
  const CLI::Option* config_;
  const RenamedKeys renamed_;
};

}  // namespace

void AddConfigFile(CLI::App* app, const std::string& default_path, RenamedKeys renamed) {
  CLI::Option* opt = app->set_config(
      "--config", default_path,
      "TOML file of settings: each key a flag's long name (min-clients = 10; a [dp] table "
      "prefixes its keys: noise-multiplier = 1.1 is --dp-noise-multiplier); flags given here "
      "override it");
  app->allow_config_extras(CLI::config_extras_mode::error);
  app->config_formatter(std::make_shared<TomlConfig>(app, opt, std::move(renamed)));
}

namespace {

// A value as TOML: true/false and numbers as they are, anything else a basic
// string with its quotes, backslashes and control characters escaped.
std::string TomlValue(const std::string& v) {
  if (v == "true" || v == "false") return v;
  if (!v.empty()) {
    char* end = nullptr;
    const double d = std::strtod(v.c_str(), &end);
    const bool plain = v.find_first_not_of("0123456789+-.eE") == std::string::npos;
    if (end == v.c_str() + v.size() && plain) {
      // A number, in one spelling whatever the command line's ("1.0", ".05",
      // "007"), and one TOML reads: an integer as its digits (a 64-bit seed
      // stays exact), any other as the shortest text of the same double.
      const size_t digits = v[0] == '-' || v[0] == '+' ? 1 : 0;
      if (v.size() > digits && v.find_first_not_of("0123456789", digits) == std::string::npos) {
        const size_t first = std::min(v.find_first_not_of('0', digits), v.size() - 1);
        return (v[0] == '-' ? "-" : "") + v.substr(first);
      }
      char b[32];
      for (int precision = 6; precision <= 17; ++precision) {
        std::snprintf(b, sizeof(b), "%.*g", precision, d);
        if (std::strtod(b, nullptr) == d) break;
      }
      return b;
    }
  }
  std::string out = "\"";
  for (unsigned char c : v) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20 || c == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

}  // namespace

std::string EffectiveConfig(const CLI::App& app) {
  // Every setting with a value (given, or a default the program recorded);
  // one without is left out, so that reading the file back leaves it as
  // the program would. Test hooks (options without a group) and --config
  // itself are not settings of the run.
  std::string out;
  for (const CLI::Option* op : app.get_options()) {
    if (op->get_lnames().empty() || op->get_group().empty()) continue;
    const std::string& name = op->get_lnames().front();
    if (name == "config" || name == "help") continue;
    std::vector<std::string> values = op->results();
    const bool flag = op->get_expected_min() == 0;
    if (flag) {
      // A flag: set or not (a false default is recorded as nothing).
      const std::string v = op->count() > 0 ? op->as<std::string>() : op->get_default_str();
      out += name + " = " +
             (v == "true" || v == "1" || (op->count() > 0 && v.empty()) ? std::string("true")
                                                                        : std::string("false")) +
             "\n";
      continue;
    }
    if (values.empty()) {
      const std::string d = op->get_default_str();
      if (d.empty()) continue;
      values = {d};
    }
    if (op->get_items_expected_max() > 1 && values.size() > 1) {
      std::string list;
      for (const auto& v : values) list += (list.empty() ? "" : ", ") + TomlValue(v);
      out += name + " = [" + list + "]\n";
    } else {
      out += name + " = " + TomlValue(values.front()) + "\n";
    }
  }
  return out;
}

Status WriteEffectiveConfig(const CLI::App& app, const std::string& tool, const std::string& dir) {
  FL_RETURN_IF_ERROR(CreateDirectories(dir));
  const std::string path = dir + "/" + tool + ".toml";
  return WriteFileAtomic(path, "# the effective configuration of this " + tool +
                                   " run (read back with " + tool + " --config " + path + ")\n" +
                                   EffectiveConfig(app));
}

}  // namespace fl
