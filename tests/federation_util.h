// Helpers for tests that run fl-server and fl-client as separate processes.
#ifndef FEDGE_TESTS_FEDERATION_UTIL_H_
#define FEDGE_TESTS_FEDERATION_UTIL_H_

#include <cctype>
#include <string>
#include <vector>

#include "tests/process_util.h"
#include "tests/test_util.h"

namespace fl {
namespace test {

// The programs under test (FL_TEST_BIN_DIR is set by tests/CMakeLists.txt).
inline std::string BinPath(const char* name) { return std::string(FL_TEST_BIN_DIR) + "/" + name; }

// fl-client flags for client `index` on one IID shard of MNIST (of
// `partitions`), plaintext, with fast heartbeats and a short server timeout so
// that any silence of the server shows at once. No --model: the client takes
// the architecture from the server's TASK. Element 3 is the client id.
inline std::vector<std::string> ClientArgs(const std::string& endpoint, int index, int partitions) {
  return {"--server",
          endpoint,
          "--id",
          "c" + std::to_string(index),
          "--data",
          MnistDir(),
          "--partition",
          "iid",
          "--num-partitions",
          std::to_string(partitions),
          "--partition-index",
          std::to_string(index),
          "--heartbeat",
          "0.3",
          "--server-timeout",
          "2",
          "--backoff-max",
          "1",
          "--insecure"};
}

// The endpoint an fl-server started with --bind tcp://127.0.0.1:* logged
// ("" if it did not come up within 60 s): the kernel picks the port, so no two
// tests collide on one.
// A relay logs "relaying " where a root logs "serving ".
inline std::string StartedEndpoint(const Process& server, const std::string& what = "serving ") {
  if (!server.WaitForLog(what, 60)) return "";
  const std::string log = server.Log();
  const std::string marker = " on tcp://127.0.0.1:";
  const size_t at = log.find(marker, log.find(what));
  if (at == std::string::npos) return "";
  size_t end = at + marker.size();
  while (end < log.size() && std::isdigit(static_cast<unsigned char>(log[end]))) ++end;
  return "tcp://127.0.0.1:" + log.substr(at + marker.size(), end - at - marker.size());
}

// Occurrences of `what` in `text` (log lines of a kind).
inline int CountOf(const std::string& text, const std::string& what) {
  int n = 0;
  for (size_t p = text.find(what); p != std::string::npos; p = text.find(what, p + 1)) ++n;
  return n;
}

}  // namespace test
}  // namespace fl

#endif  // FEDGE_TESTS_FEDERATION_UTIL_H_
