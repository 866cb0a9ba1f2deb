#include "server/async_tasks.h"

#include <openssl/crypto.h>

#include <cmath>

namespace fl {

double StalenessWeight(uint32_t tau, double exponent) {
  if (tau == 0 || exponent == 0) return 1.0;
  return 1.0 / std::pow(1.0 + static_cast<double>(tau), exponent);
}

const AsyncTasks::Task& AsyncTasks::Issue(const std::string& id, uint64_t step, const Nonce& nonce,
                                          const Version& base, int64_t registered, double now) {
  Task& t = tasks_[id];
  t.step = step;
  t.nonce = nonce;
  t.base = base;
  t.registered = registered;
  t.issued_at = now;
  t.serial = ++serial_;
  return t;
}

AsyncTasks::Match AsyncTasks::Check(const std::string& id, uint64_t round, const Nonce& nonce,
                                    uint64_t step, uint32_t* staleness) const {
  const Task* t = Find(id);
  if (!t) return Match::kNoTask;
  if (round != t->step || CRYPTO_memcmp(nonce.data(), t->nonce.data(), nonce.size()) != 0) {
    return Match::kWrongTask;
  }
  const uint64_t tau = step >= t->step ? step - t->step : 0;
  if (tau > static_cast<uint64_t>(o_.max_staleness)) return Match::kTooStale;
  *staleness = static_cast<uint32_t>(tau);
  return Match::kOk;
}

std::vector<AsyncTasks::Expired> AsyncTasks::Expire(double now, double deadline, uint64_t step) {
  std::vector<Expired> gone;
  for (auto it = tasks_.begin(); it != tasks_.end();) {
    const bool too_stale = step > it->second.step + static_cast<uint64_t>(o_.max_staleness);
    if (too_stale || now - it->second.issued_at > deadline) {
      gone.push_back({it->first, it->second, too_stale});
      it = tasks_.erase(it);
    } else {
      ++it;
    }
  }
  return gone;
}

std::vector<std::string> AsyncTasks::Ids() const {
  std::vector<std::string> ids;
  ids.reserve(tasks_.size());
  for (const auto& [id, t] : tasks_) ids.push_back(id);
  return ids;
}

}  // namespace fl
