// Buffered asynchronous FL (FedBuff) as a scheduler (server/scheduler.h).
// Internal to the server library.
#ifndef FEDGE_SERVER_BUFFERED_ASYNC_H_
#define FEDGE_SERVER_BUFFERED_ASYNC_H_

#include <memory>
#include <optional>

#include "server/scheduler.h"

namespace fl {

std::unique_ptr<Scheduler> MakeBufferedAsync(const ServerOptions& o, SchedulerHost* host,
                                             RoundPlan base, std::optional<WalContents> resumed);

}  // namespace fl

#endif  // FEDGE_SERVER_BUFFERED_ASYNC_H_
