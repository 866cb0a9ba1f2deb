// A relay's scheduler (server/scheduler.h): rounds driven by its parent
// through ServerOptions::parent. Internal to the server library.
#ifndef FEDGE_SERVER_PARENT_ROUNDS_H_
#define FEDGE_SERVER_PARENT_ROUNDS_H_

#include <memory>

#include "server/scheduler.h"

namespace fl {

std::unique_ptr<Scheduler> MakeParentRounds(const ServerOptions& o, SchedulerHost* host,
                                            RoundPlan base);

}  // namespace fl

#endif  // FEDGE_SERVER_PARENT_ROUNDS_H_
