// Helpers shared by the bench programs.
#ifndef FEDGE_EXPERIMENTS_BENCH_BENCH_UTIL_H_
#define FEDGE_EXPERIMENTS_BENCH_BENCH_UTIL_H_

#include <fstream>
#include <string>

namespace fl {
namespace bench {

// The CPU's model name from /proc/cpuinfo: results are only comparable on
// the same CPU, and the machine may change from one run to the next.
inline std::string CpuModel() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  }
  return "unknown";
}

}  // namespace bench
}  // namespace fl

#endif  // FEDGE_EXPERIMENTS_BENCH_BENCH_UTIL_H_
