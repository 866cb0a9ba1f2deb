#include "experiments/sim/sim_config.h"

#include <toml++/toml.h>

#include <algorithm>
#include <cmath>
#include <set>
#include <sstream>

#include "common/codec.h"
#include "common/partition.h"
#include "common/random.h"
#include "experiments/sim/adversary.h"

namespace fl {
namespace {

// Reads typed keys out of one TOML table and remembers which keys it knew.
class TableReader {
 public:
  TableReader(const toml::table* table, std::string prefix)
      : table_(table), prefix_(std::move(prefix)) {}

  template <typename T>
  void Get(const char* key, T* out) {
    known_.insert(key);
    if (!status_.ok() || table_ == nullptr) return;
    const toml::node* node = table_->get(key);
    if (node == nullptr) return;
    if constexpr (std::is_same_v<T, bool>) {
      if (auto v = node->value<bool>()) {
        *out = *v;
        return;
      }
      Fail(key, "true or false");
    } else if constexpr (std::is_same_v<T, std::string>) {
      if (auto v = node->value<std::string>()) {
        *out = *v;
        return;
      }
      Fail(key, "a string");
    } else if constexpr (std::is_floating_point_v<T>) {
      if (auto v = node->value<double>()) {  // accepts integers too
        *out = static_cast<T>(*v);
        return;
      }
      Fail(key, "a number");
    } else {
      if (node->is_integer()) {
        const int64_t v = *node->value<int64_t>();
        if (std::is_unsigned_v<T> && v < 0) return Fail(key, "a non-negative integer");
        *out = static_cast<T>(v);
        return;
      }
      Fail(key, "an integer");
    }
  }

  void GetList(const char* key, std::vector<double>* out) {
    known_.insert(key);
    if (!status_.ok() || table_ == nullptr) return;
    const toml::node* node = table_->get(key);
    if (node == nullptr) return;
    const toml::array* arr = node->as_array();
    if (!arr) return Fail(key, "an array of numbers");
    out->clear();
    for (const auto& el : *arr) {
      auto v = el.value<double>();
      if (!v) return Fail(key, "an array of numbers");
      out->push_back(*v);
    }
  }

  // Marks a sub-table name as known (checked by its own reader).
  void Table(const char* key) { known_.insert(key); }

  // Errors on keys nobody asked for.
  Status Finish() {
    if (!status_.ok() || table_ == nullptr) return status_;
    for (const auto& [k, v] : *table_) {
      if (!known_.count(std::string(k.str()))) {
        return Status::InvalidArgument("unknown config key '" + prefix_ + std::string(k.str()) +
                                       "'");
      }
    }
    return status_;
  }

 private:
  void Fail(const char* key, const char* want) {
    status_ = Status::InvalidArgument("config key '" + prefix_ + key + "' must be " + want);
  }

  const toml::table* table_;
  std::string prefix_;
  std::set<std::string> known_;
  Status status_;
};

}  // namespace

Status LoadSimConfig(const std::string& path, SimConfig* c) {
  toml::table root;
  try {
    root = toml::parse_file(path);
  } catch (const toml::parse_error& e) {
    std::ostringstream os;
    os << e.description() << " at line " << e.source().begin.line << ", column "
       << e.source().begin.column;
    return Status::InvalidArgument(path, os.str());
  }
  TableReader top(&root, "");
  top.Get("seed", &c->seed);
  top.Get("rounds", &c->rounds);
  top.GetList("targets", &c->targets);
  top.Get("stop_at_target", &c->stop_at_target);
  for (const char* t : {"data", "model", "federation", "strategy", "privacy", "adversary", "client",
                        "compression", "sim", "security", "devices", "topology"}) {
    top.Table(t);
  }

  TableReader data(root["data"].as_table(), "data.");
  data.Get("dir", &c->data_dir);
  data.Get("partition", &c->partition);
  data.Get("test_dir", &c->test_dir);
  data.Get("alpha", &c->alpha);
  data.Get("shards_per_client", &c->shards_per_client);
  data.Get("test_fraction", &c->test_fraction);
  data.Get("label_column", &c->label_column);
  data.Get("group_column", &c->group_column);
  data.Get("normalize", &c->normalize);

  TableReader model(root["model"].as_table(), "model.");
  model.Get("name", &c->model);
  model.Get("trainable", &c->trainable);
  model.Get("file", &c->model_file);

  TableReader fed(root["federation"].as_table(), "federation.");
  fed.Get("clients", &c->clients);
  fed.Get("fraction", &c->fraction);
  fed.Get("min_clients", &c->min_clients);
  fed.Get("round_deadline", &c->round_deadline);
  fed.Get("server_lr", &c->strategy.server_lr);  // its place before [strategy]
  fed.Get("eval_every", &c->eval_every);
  fed.Get("over_selection", &c->over_selection);
  fed.Get("mode", &c->mode);
  fed.Get("concurrency", &c->concurrency);
  fed.Get("buffer", &c->buffer);
  fed.Get("staleness_exponent", &c->staleness_exponent);
  fed.Get("max_staleness", &c->max_staleness);

  TableReader strat(root["strategy"].as_table(), "strategy.");
  strat.Get("name", &c->strategy.name);
  strat.Get("server_lr", &c->strategy.server_lr);
  strat.Get("momentum", &c->strategy.momentum);
  strat.Get("beta1", &c->strategy.beta1);
  strat.Get("beta2", &c->strategy.beta2);
  strat.Get("tau", &c->strategy.tau);
  strat.Get("mu", &c->strategy.mu);
  strat.Get("trim_fraction", &c->strategy.trim_fraction);
  strat.Get("krum_f", &c->strategy.krum_f);
  strat.Get("krum_m", &c->strategy.krum_m);
  strat.Get("clip", &c->strategy.clip);

  TableReader priv(root["privacy"].as_table(), "privacy.");
  priv.Get("noise_multiplier", &c->privacy.noise_multiplier);
  priv.Get("clip", &c->privacy.clip);
  priv.Get("adaptive_clip", &c->privacy.adaptive_clip);
  priv.Get("target_quantile", &c->privacy.target_quantile);
  priv.Get("delta", &c->privacy.delta);

  TableReader devices(root["devices"].as_table(), "devices.");
  devices.Get("slowdown_sigma", &c->slowdown_sigma);
  devices.Get("straggler_fraction", &c->straggler_fraction);
  devices.Get("straggler_slowdown", &c->straggler_slowdown);
  devices.Get("dropout", &c->dropout);
  TableReader adv(root["adversary"].as_table(), "adversary.");
  adv.Get("fraction", &c->adversary_fraction);
  adv.Get("kind", &c->adversary_kind);
  adv.Get("scale", &c->adversary_scale);

  TableReader client(root["client"].as_table(), "client.");
  client.Get("epochs", &c->epochs);
  client.Get("batch", &c->batch);
  client.Get("lr", &c->lr);
  client.Get("lr_decay", &c->lr_decay);
  client.Get("lr_min", &c->lr_min);
  client.Get("momentum", &c->momentum);
  client.Get("weight_decay", &c->weight_decay);

  TableReader comp(root["compression"].as_table(), "compression.");
  comp.Get("sparsity", &c->sparsity);
  comp.Get("global_pruning", &c->global_pruning);
  comp.Get("erk", &c->erk);
  comp.Get("prune_to", &c->prune_to);
  comp.Get("prune_rounds", &c->prune_rounds);
  comp.Get("codec", &c->codec);
  if (c->codec == "sign") c->uplink_bits = 1;
  comp.Get("uplink_bits", &c->uplink_bits);
  comp.Get("block", &c->block);
  comp.Get("stochastic_rounding", &c->stochastic_rounding);
  comp.Get("error_feedback", &c->error_feedback);
  comp.Get("downlink", &c->downlink);

  TableReader sim(root["sim"].as_table(), "sim.");
  sim.Get("workers", &c->workers);
  sim.Get("ingest_threads", &c->ingest_threads);
  sim.Get("out", &c->out);
  sim.Get("heartbeat", &c->heartbeat);
  sim.Get("reproducible", &c->reproducible);

  TableReader security(root["security"].as_table(), "security.");
  security.Get("secure", &c->secure);

  TableReader topology(root["topology"].as_table(), "topology.");
  topology.Get("relays", &c->relays);
  topology.Get("relay_strategy", &c->relay_strategy);

  for (TableReader* r : {&top, &data, &model, &fed, &strat, &priv, &devices, &adv, &client, &comp,
                         &sim, &security, &topology}) {
    Status st = r->Finish();
    if (!st.ok()) return st.WithContext(path);
  }
  return Status::OK();
}

namespace {

Status Bad(const std::string& key, const std::string& why) {
  return Status::InvalidArgument("config key '" + key + "' " + why);
}

// [compression]: the codec and its parameters, pruning, the downlink.
Status ValidateCompression(const SimConfig& c) {
  const auto& bad = Bad;
  if (!(c.sparsity >= 0 && c.sparsity < 1)) return bad("compression.sparsity", "must be in [0, 1)");
  const Codec* codec = FindCodec(c.codec);
  if (!codec) {
    std::string names;
    for (const auto& n : CodecNames()) names += (names.empty() ? "" : ", ") + n;
    return bad("compression.codec", "must be one of " + names);
  }
  CodecParams p;
  p.bits = c.uplink_bits;
  p.block = static_cast<uint32_t>(std::max(c.block, 1));
  if (Status st = codec->Check(p); !st.ok()) return bad("compression.uplink_bits", st.message());
  if (c.block < 1) return bad("compression.block", "must be >= 1");
  if (!(c.prune_to >= 0 && c.prune_to < 1)) return bad("compression.prune_to", "must be in [0, 1)");
  if (c.prune_to > 0 && c.prune_rounds < 1) {
    return bad("compression.prune_rounds", "must be >= 1 with compression.prune_to");
  }
  if (c.downlink != "fp32" && c.downlink != "fp16") {
    return bad("compression.downlink", "must be \"fp32\" or \"fp16\"");
  }
  return Status::OK();
}

// [devices] and [adversary]: the simulated fleet's faults and attackers.
Status ValidateFleet(const SimConfig& c) {
  const auto& bad = Bad;
  if (!(c.slowdown_sigma >= 0 && c.slowdown_sigma <= 3)) {
    return bad("devices.slowdown_sigma", "must be in [0, 3]");
  }
  if (!(c.straggler_fraction >= 0 && c.straggler_fraction <= 1)) {
    return bad("devices.straggler_fraction", "must be in [0, 1]");
  }
  if (!(c.straggler_slowdown >= 1 && c.straggler_slowdown <= 100)) {
    return bad("devices.straggler_slowdown", "must be in [1, 100]");
  }
  if (!(c.dropout >= 0 && c.dropout < 1)) return bad("devices.dropout", "must be in [0, 1)");
  if (!(c.adversary_fraction >= 0 && c.adversary_fraction < 1)) {
    return bad("adversary.fraction", "must be in [0, 1)");
  }
  if (Status st = ParseAdversaryKind(c.adversary_kind).status(); !st.ok()) {
    return bad("adversary.kind", st.message());
  }
  if (!(std::isfinite(c.adversary_scale) && c.adversary_scale >= 0)) {
    return bad("adversary.scale", "must be a finite number >= 0");
  }
  return Status::OK();
}

}  // namespace

Status ValidateSimConfig(const SimConfig& c) {
  const auto& bad = Bad;
  if (c.rounds < 1) return bad("rounds", "must be >= 1");
  if (c.partition != "folders" && c.partition != "column" &&
      !ParsePartitionScheme(c.partition).ok()) {
    return bad("data.partition",
               "must be iid, shards, dirichlet, folders or column, not '" + c.partition + "'");
  }
  if (c.clients < 1) return bad("federation.clients", "must be >= 1");
  if (!(c.fraction > 0 && c.fraction <= 1)) return bad("federation.fraction", "must be in (0, 1]");
  if (c.min_clients < 0 || c.min_clients > c.clients) {
    return bad("federation.min_clients", "must be between 0 and federation.clients");
  }
  if (!(c.round_deadline > 0)) return bad("federation.round_deadline", "must be > 0");
  if (Status st = CheckStrategyOptions(c.strategy); !st.ok()) {
    // The message names the fl-server flag; the config key is strategy.<same>.
    return Status::InvalidArgument("[strategy]: " + st.message());
  }
  if (Status st = CheckPrivacyOptions(c.privacy); !st.ok()) {
    return Status::InvalidArgument("[privacy]: " + st.message());
  }
  if (!(c.over_selection >= 1 && c.over_selection <= 10)) {
    return bad("federation.over_selection", "must be in [1, 10]");
  }
  if (c.mode != "sync" && c.mode != "async") {
    return bad("federation.mode", "must be \"sync\" or \"async\"");
  }
  if (c.mode == "async" && !(c.concurrency >= 1 && c.concurrency <= c.clients)) {
    return bad("federation.concurrency", "must be in [1, clients]");
  }
  if (c.mode == "async" && !(c.buffer >= 1 && c.buffer <= c.concurrency)) {
    return bad("federation.buffer", "must be in [1, concurrency]");
  }
  if (Status st = ValidateFleet(c); !st.ok()) return st;
  if (c.epochs < 1) return bad("client.epochs", "must be >= 1");
  if (!(c.lr > 0)) return bad("client.lr", "must be > 0");
  if (!(c.lr_decay > 0 && c.lr_decay <= 1)) return bad("client.lr_decay", "must be in (0, 1]");
  if (!(c.lr_min >= 0 && c.lr_min <= c.lr)) return bad("client.lr_min", "must be in [0, lr]");
  if (Status st = ValidateCompression(c); !st.ok()) return st;
  if (c.workers < 0) return bad("sim.workers", "must be >= 0");
  if (c.ingest_threads < 0 || c.ingest_threads > 64) {
    return bad("sim.ingest_threads", "must be in 0..64");
  }
  if (!(c.heartbeat > 0)) return bad("sim.heartbeat", "must be > 0");
  if (c.relays < 0 || c.relays > c.clients) {
    return bad("topology.relays", "must be in 0..clients");
  }
  if (c.relay_strategy != "fedavg" && c.relay_strategy != "median" &&
      c.relay_strategy != "trimmed_mean" && c.relay_strategy != "krum" &&
      c.relay_strategy != "multikrum") {
    return bad("topology.relay_strategy",
               "must be \"fedavg\", \"median\", \"trimmed_mean\", \"krum\" or \"multikrum\"");
  }
  if (c.relays > 0 && (c.mode != "sync" || c.prune_to > 0 || c.over_selection > 1)) {
    return bad("topology.relays",
               "relays take the server's rounds as they come: not with federation.mode async, "
               "compression.prune_to or federation.over_selection");
  }
  for (double t : c.targets) {
    if (!(t > 0 && t <= 1)) return bad("targets", "values must be accuracies in (0, 1]");
  }
  return Status::OK();
}

std::string SimConfigToToml(const SimConfig& c) {
  toml::array targets;
  for (double t : c.targets) targets.push_back(t);
  toml::table root{
      {"seed", static_cast<int64_t>(c.seed)},
      {"rounds", c.rounds},
      {"targets", targets},
      {"stop_at_target", c.stop_at_target},
      {"data", toml::table{{"dir", c.data_dir},
                           {"partition", c.partition},
                           {"test_dir", c.test_dir},
                           {"alpha", c.alpha},
                           {"shards_per_client", c.shards_per_client},
                           {"test_fraction", c.test_fraction},
                           {"label_column", c.label_column},
                           {"group_column", c.group_column},
                           {"normalize", c.normalize}}},
      {"model", toml::table{{"name", c.model}, {"file", c.model_file}, {"trainable", c.trainable}}},
      {"federation", toml::table{{"clients", c.clients},
                                 {"fraction", c.fraction},
                                 {"min_clients", c.min_clients},
                                 {"round_deadline", c.round_deadline},
                                 {"eval_every", c.eval_every},
                                 {"over_selection", c.over_selection},
                                 {"mode", c.mode},
                                 {"concurrency", c.concurrency},
                                 {"buffer", c.buffer},
                                 {"staleness_exponent", c.staleness_exponent},
                                 {"max_staleness", c.max_staleness}}},
      {"strategy", toml::table{{"name", c.strategy.name},
                               {"server_lr", c.strategy.server_lr},
                               {"momentum", c.strategy.momentum},
                               {"beta1", c.strategy.beta1},
                               {"beta2", c.strategy.beta2},
                               {"tau", c.strategy.tau},
                               {"mu", c.strategy.mu},
                               {"trim_fraction", c.strategy.trim_fraction},
                               {"krum_f", c.strategy.krum_f},
                               {"krum_m", c.strategy.krum_m},
                               {"clip", c.strategy.clip}}},
      {"privacy", toml::table{{"noise_multiplier", c.privacy.noise_multiplier},
                              {"clip", c.privacy.clip},
                              {"adaptive_clip", c.privacy.adaptive_clip},
                              {"target_quantile", c.privacy.target_quantile},
                              {"delta", c.privacy.delta}}},
      {"devices", toml::table{{"slowdown_sigma", c.slowdown_sigma},
                              {"straggler_fraction", c.straggler_fraction},
                              {"straggler_slowdown", c.straggler_slowdown},
                              {"dropout", c.dropout}}},
      {"adversary", toml::table{{"fraction", c.adversary_fraction},
                                {"kind", c.adversary_kind},
                                {"scale", c.adversary_scale}}},
      {"client", toml::table{{"epochs", c.epochs},
                             {"batch", c.batch},
                             {"lr", c.lr},
                             {"lr_decay", c.lr_decay},
                             {"lr_min", c.lr_min},
                             {"momentum", c.momentum},
                             {"weight_decay", c.weight_decay}}},
      {"compression", toml::table{{"sparsity", c.sparsity},
                                  {"global_pruning", c.global_pruning},
                                  {"erk", c.erk},
                                  {"prune_to", c.prune_to},
                                  {"prune_rounds", c.prune_rounds},
                                  {"codec", c.codec},
                                  {"uplink_bits", c.uplink_bits},
                                  {"block", c.block},
                                  {"stochastic_rounding", c.stochastic_rounding},
                                  {"error_feedback", c.error_feedback},
                                  {"downlink", c.downlink}}},
      {"sim", toml::table{{"workers", c.workers},
                          {"ingest_threads", c.ingest_threads},
                          {"out", c.out},
                          {"heartbeat", c.heartbeat},
                          {"reproducible", c.reproducible}}},
      {"security", toml::table{{"secure", c.secure}}},
      {"topology", toml::table{{"relays", c.relays}, {"relay_strategy", c.relay_strategy}}},
  };
  std::ostringstream os;
  os << root << "\n";
  return os.str();
}

std::vector<double> DeviceSlowdowns(const SimConfig& c) {
  const int n = std::max(0, c.clients);
  std::vector<double> out(static_cast<size_t>(n), 1.0);
  Random r(c.seed * 0x2545F4914F6CDD1DULL + 17);
  for (double& s : out) s = std::max(1.0, std::exp(c.slowdown_sigma * r.Normal()));
  std::vector<int64_t> order(static_cast<size_t>(n));
  for (int k = 0; k < n; ++k) order[static_cast<size_t>(k)] = k;
  r.Shuffle(&order);
  const auto stragglers = static_cast<size_t>(std::llround(c.straggler_fraction * n));
  for (size_t i = 0; i < stragglers && i < order.size(); ++i) {
    out[static_cast<size_t>(order[i])] *= c.straggler_slowdown;
  }
  for (double& s : out) s = std::min(s, kMaxDeviceSlowdown);  // what a session takes
  return out;
}

}  // namespace fl
