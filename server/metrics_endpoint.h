// Serves a ServerMetrics (server/metrics.h) on http://BIND:PORT/metrics from
// a thread of its own, with cpp-httplib (Debian's libcpp-httplib-dev). Kept
// apart from the server library so that only fl-server links the HTTP server.
#ifndef FEDGE_SERVER_METRICS_ENDPOINT_H_
#define FEDGE_SERVER_METRICS_ENDPOINT_H_

#include <memory>
#include <string>

#include "common/status.h"
#include "server/metrics.h"

namespace fl {

// Serves a ServerMetrics on http://BIND:PORT/metrics from a thread of its
// own (cpp-httplib). Stops with the object.
class MetricsEndpoint {
 public:
  // `port` 0 picks a free one (port() says which). InvalidArgument or
  // IOError naming the address when it cannot listen.
  static Result<std::unique_ptr<MetricsEndpoint>> Start(const ServerMetrics* metrics,
                                                        const std::string& bind, int port);
  ~MetricsEndpoint();
  int port() const;

 private:
  MetricsEndpoint();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace fl

#endif  // FEDGE_SERVER_METRICS_ENDPOINT_H_
