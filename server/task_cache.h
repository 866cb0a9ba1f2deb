// The open round's TASK, encoded and hashed once and shared by every send:
// one copy per kind of client (variant), built when first sent. An
// asynchronous task that carries a nonce of its own gets its own envelope
// (signed for it) around the shared payload.
#ifndef FEDGE_SERVER_TASK_CACHE_H_
#define FEDGE_SERVER_TASK_CACHE_H_

#include <array>
#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "common/wire/envelope.h"
#include "crypto/ed25519.h"
#include "server/global_model.h"
#include "server/registry.h"
#include "server/round_plan.h"
#include "transport/transport.h"

namespace fl {

class SigningKey;

// The task a device holds: the round (step) it was handed out in, its nonce,
// the model it carries and what the device had registered.
struct TaskRef {
  uint64_t step{0};
  std::array<uint8_t, wire::kNonceBytes> nonce{};
  std::array<uint8_t, 32> base{};
  int64_t registered{0};
};

class TaskCache {
 public:
  // `signer` (may be null) signs every TASK; `ask_before_upload`: devices
  // that read extensions ask (READY) before they upload (transfer windows).
  TaskCache(const SigningKey* signer, bool ask_before_upload)
      : signer_(signer), ask_before_upload_(ask_before_upload) {}

  // A TorchScript federation with a signing key: the model file, which TASKs
  // carry (signed) to devices that have none.
  void SetModelCode(std::string code, const Ed25519Signature& signature) {
    model_code_ = std::move(code);
    model_code_signature_ = signature;
  }
  const std::string& model_code() const { return model_code_; }

  // The TASK of round `round` (shared nonce `nonce`) as `c` can read it, for
  // `task`: the shared frames, or with a task's own nonce, its own envelope.
  std::vector<transport::SharedFrame> For(const ClientEntry& c, const TaskRef& task,
                                          uint64_t round,
                                          const std::array<uint8_t, wire::kNonceBytes>& nonce,
                                          const GlobalModel& model, const RoundPlan& plan);

  // True the first time it is asked about `id`: devices told already that
  // they are too old for an optional field.
  bool WarnOnce(const std::string& id) { return warned_.insert(id).second; }

  // The model or the plan changed: the next send builds anew (sends in
  // flight hold their own references).
  void Clear() {
    for (auto& frames : frames_) frames.clear();
  }

 private:
  std::vector<transport::SharedFrame> Build(int variant, uint64_t round,
                                            const std::array<uint8_t, wire::kNonceBytes>& nonce,
                                            const GlobalModel& model, const RoundPlan& plan,
                                            wire::Envelope* unsealed) const;

  const SigningKey* signer_;
  const bool ask_before_upload_;
  // Per variant: 0 plain (clients older than payload extensions: no optional
  // field), 1 with the optional fields, 2 and asking before upload; 3 and 4
  // are 1 and 2 with the model's file.
  std::vector<transport::SharedFrame> frames_[5];
  wire::Envelope envelopes_[5];
  std::string model_code_;
  Ed25519Signature model_code_signature_{};
  std::set<std::string> warned_;
};

}  // namespace fl

#endif  // FEDGE_SERVER_TASK_CACHE_H_
