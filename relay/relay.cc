#include "relay/relay.h"

#include <spdlog/spdlog.h>

#include "common/clock.h"
#include "common/fixed_point.h"
#include "common/wire/limits.h"
#include "crypto/ed25519.h"
#include "crypto/identity.h"

namespace fl {

RelayParticipant::RelayParticipant(RelayLink* link, double weight_factor, bool tamper)
    : link_(link),
      weight_factor_(weight_factor),
      tamper_(tamper),
      architecture_(link->architecture()) {
  for (auto& [name, shape] : link->layout()) layout_.push_back({name, shape});
}

Result<std::vector<TensorLayout>> RelayParticipant::Layout(const std::string& architecture) {
  if (architecture != architecture_) {
    return Status::InvalidArgument("this relay aggregates '" + architecture_ + "', the task is '" +
                                   architecture + "' (start the relay with --model " +
                                   architecture + ")");
  }
  return layout_;
}

size_t RelayParticipant::TaskPayloadLimit() const {
  size_t values = 0;
  for (const auto& t : layout_) {
    size_t n = 1;
    for (int64_t d : t.shape) n *= static_cast<size_t>(d);
    values += n;
  }
  return wire::TaskPayloadLimit(values, layout_.size());
}

Result<FitRes> RelayParticipant::Fit(const FitIns& ins, const EpochCallback& /*on_epoch*/) {
  RelayTask task;
  task.round = ins.round;
  task.parameters = ins.parameters;
  task.root_endorsement = ins.root_endorsement;
  task.format = ins.model_format;
  task.config = ins.config;
  if (tamper_ && !task.parameters.tensors.empty() && !task.parameters.tensors[0].values.empty()) {
    task.parameters.tensors[0].values[0] += 0.01f;
    task.debug_endorse_anyway = true;
  }
  const double t0 = link_->clock()->Now();
  auto res = link_->Run(std::move(task), ins.config.deadline_seconds);
  if (!res.ok()) return res.status();
  FitRes out;
  if (res->contributors == 0) {
    spdlog::warn("relay: round {}: none of its devices answered; telling the parent", ins.round);
  }
  FixedSum& sum = res->sum;
  if (weight_factor_ != 1 && sum.weight > 0) {
    // The lie told consistently: the same mean at factor times the weight.
    sum.weight = static_cast<int64_t>(static_cast<double>(sum.weight) * weight_factor_);
    for (FixedInt& x : sum.values) x = RoundFixed(static_cast<double>(x) * weight_factor_);
  }
  out.num_examples = sum.weight;
  out.first_epoch_loss = out.last_epoch_loss = res->train_loss;
  out.seconds = link_->clock()->Now() - t0;
  out.contributors = res->contributors;
  out.within_clip = res->within_clip;
  out.exact_sum = EncodeFixedSum(sum);
  return out;
}

Result<std::unique_ptr<RelayUplink>> RelayUplink::Start(const RelayUplinkOptions& o,
                                                        std::shared_ptr<transport::Context> ctx,
                                                        RelayLink* link) {
  FL_RETURN_IF_ERROR(transport::CheckConnectEndpoint(o.parent).WithContext("--parent"));
  std::unique_ptr<RelayUplink> up(new RelayUplink());
  ClientOptions co;
  co.server = o.parent;
  co.id = o.id;
  co.verbose = o.verbose;
  co.clock = link->clock();
  if (!o.insecure && (o.key_path.empty() || o.parent_key_path.empty())) {
    return Status::InvalidArgument(
        "a relay's connection to its parent is encrypted and authenticated: give the relay's "
        "identity (--key) and the parent's public key (--server-key PARENT.pub), or --insecure");
  }
  if (!o.key_path.empty()) {
    auto id = o.insecure ? LoadIdentity(o.key_path) : LoadIdentityWithCurve(o.key_path);
    if (!id.ok()) return Status::InvalidArgument("--key", id.status().ToString());
    up->key_ = std::make_unique<SigningKey>(std::move(id->signing));
    co.key = up->key_.get();
    co.id = NodeId(up->key_->public_key());
    if (!o.insecure) {
      co.curve.secret_key = KeyBytes(id->curve->secret_key);
      co.curve.public_key = KeyBytes(id->curve->public_key);
    }
  }
  if (!o.parent_key_path.empty()) {
    auto pub = o.insecure ? LoadPublicIdentity(o.parent_key_path)
                          : LoadPublicIdentityWithCurve(o.parent_key_path);
    if (!pub.ok()) return Status::InvalidArgument("--server-key", pub.status().ToString());
    co.server_key = pub->signing;
    if (!o.insecure) co.curve.server_key = KeyBytes(*pub->curve);
  }
  if (co.id.empty()) return Status::InvalidArgument("a relay without --key needs an id");
  up->link_ = link;
  up->participant_ =
      std::make_unique<RelayParticipant>(link, o.debug_weight_factor, o.debug_tamper_model);
  up->session_ = std::make_unique<ClientSession>(co, ctx, up->participant_.get());
  Status st = up->session_->Start();
  if (!st.ok()) return st;
  RelayUplink* self = up.get();
  link->clock()->BeginWork();  // the session's thread takes part in the clock's time
  up->thread_ = std::thread([self, ctx, link, verbose = o.verbose] {
    Status run = RunClient(self->session_.get(), ctx, &self->stop_);
    if (!run.ok()) {
      spdlog::error("relay: the session to the parent ended: {}", run.ToString());
      link->Finish("the session to the parent ended: " + run.ToString());
    } else if (self->session_->done()) {
      if (verbose) spdlog::info("relay: the parent says: {}", self->session_->done_message());
      link->Finish(self->session_->done_message(), /*parent_done=*/true);
    } else {
      link->Finish("stopped");
    }
    link->clock()->EndWork();
  });
  return up;
}

Result<std::unique_ptr<Relay>> Relay::Create(ServerOptions options,
                                             std::shared_ptr<transport::Context> context,
                                             const ModelRuntime& runtime) {
  std::unique_ptr<Relay> relay(new Relay());
  relay->link_ = std::make_unique<RelayLink>(options.clock ? options.clock : SystemClock());
  options.parent = relay->link_.get();
  auto server = Server::Create(std::move(options), std::move(context), runtime);
  if (!server.ok()) return server.status();
  relay->server_ = std::move(server).value();
  return relay;
}

Status Relay::Connect(const RelayUplinkOptions& uplink,
                      std::shared_ptr<transport::Context> context) {
  // (After the server: it told the link the model the uplink announces.)
  auto up = RelayUplink::Start(uplink, std::move(context), link_.get());
  if (!up.ok()) return up.status();
  uplink_ = std::move(up).value();
  return Status::OK();
}

Relay::~Relay() {
  uplink_.reset();  // finishes the link: a Run still going returns
  if (thread_.joinable()) thread_.join();
}

Result<ServerSummary> Relay::Run(const std::atomic<bool>* stop, const RoundCallback& on_round) {
  return server_->Run(stop, on_round);
}

void Relay::Start(const std::atomic<bool>* stop, RoundCallback on_round,
                  std::atomic<bool>* failed) {
  link_->clock()->BeginWork();  // the server's thread takes part in the clock's time
  thread_ = std::thread([this, stop, on_round = std::move(on_round), failed] {
    auto sum = server_->Run(stop, on_round);
    status_ = sum.ok() ? Status::OK() : sum.status();
    if (!sum.ok() && failed) failed->store(true);
    link_->clock()->EndWork();
  });
}

Status Relay::Join() {
  if (thread_.joinable()) thread_.join();
  return status_;
}

RelayUplink::~RelayUplink() {
  stop_.store(true);
  link_->Finish("stopping");  // wakes a Fit that waits for the relay's round
  if (thread_.joinable()) thread_.join();
}

}  // namespace fl
