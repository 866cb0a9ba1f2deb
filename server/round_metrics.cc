#include "server/round_metrics.h"

namespace fl {

const char kRoundsCsvHeader[] =
    "round,participants,test_accuracy,test_loss,upload_bytes,download_bytes,round_seconds,"
    "eval_seconds,max_delta_norm";

std::string RoundsCsvHeader(bool privacy, bool async) {
  return std::string(kRoundsCsvHeader) + (privacy ? ",epsilon" : "") +
         (async ? ",tasks,mean_staleness,max_staleness,expired" : "");
}

}  // namespace fl
