#include "server/metrics_endpoint.h"

#include <httplib.h>
#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <thread>

namespace fl {

struct MetricsEndpoint::Impl {
  httplib::Server http;
  std::thread thread;
  std::atomic<bool> exited{false};
  int port{0};
};

MetricsEndpoint::MetricsEndpoint() : impl_(std::make_unique<Impl>()) {}

MetricsEndpoint::~MetricsEndpoint() {
  impl_->http.stop();
  if (impl_->thread.joinable()) impl_->thread.join();
}

int MetricsEndpoint::port() const { return impl_->port; }

Result<std::unique_ptr<MetricsEndpoint>> MetricsEndpoint::Start(const ServerMetrics* metrics,
                                                                const std::string& bind, int port) {
  if (port < 0 || port > 65535) {
    return Status::InvalidArgument("--metrics-port " + std::to_string(port) +
                                   " is not in 0..65535");
  }
  std::unique_ptr<MetricsEndpoint> e(new MetricsEndpoint());
  Impl& s = *e->impl_;
  // SO_REUSEADDR only: cpp-httplib's default adds SO_REUSEPORT, with which a
  // second server would share the port and take half the scrapes.
  s.http.set_socket_options([](socket_t sock) {
    int yes = 1;
    ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
  });
  s.http.Get("/metrics", [metrics](const httplib::Request&, httplib::Response& res) {
    res.set_content(metrics->Render(), "text/plain; version=0.0.4; charset=utf-8");
  });
  s.http.Get("/", [](const httplib::Request&, httplib::Response& res) {
    res.set_content("fl-server metrics: /metrics\n", "text/plain");
  });
  if (port == 0) {
    s.port = s.http.bind_to_any_port(bind);
    if (s.port <= 0) return Status::IOError("metrics: cannot listen on " + bind);
  } else {
    if (!s.http.bind_to_port(bind, port)) {
      return Status::IOError("metrics: cannot listen on " + bind + ":" + std::to_string(port) +
                             " (in use, or not an address of this machine)");
    }
    s.port = port;
  }
  s.thread = std::thread([&s] {
    s.http.listen_after_bind();
    s.exited = true;
  });
  // (Listening before returning: a stop() that came first would not stop it.)
  for (int i = 0; i < 5000 && !s.http.is_running() && !s.exited; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  if (!s.http.is_running()) return Status::IOError("metrics: the HTTP server did not start");
  return e;
}

}  // namespace fl
