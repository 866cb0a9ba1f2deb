#include "common/reproducible.h"

#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>

namespace fl {
namespace {

std::string CpuModelName() {
  std::ifstream in("/proc/cpuinfo");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("model name", 0) == 0) {
      const size_t colon = line.find(':');
      if (colon != std::string::npos && colon + 2 <= line.size()) return line.substr(colon + 2);
    }
  }
  return "unknown CPU";
}

}  // namespace

const char kReproducibleHelp[] =
    "The same seed gives the same model, bit for bit, on any x86-64 machine with AVX2 and FMA: "
    "pins ATen's kernels to AVX2 and OpenBLAS's to Haswell, switches oneDNN off, one thread "
    "per op, deterministic algorithms (the process runs itself again with that environment). "
    "Costs speed: on an AMD EPYC a 3-round fl-sim CNN run took 63-72 s instead of 44 s "
    "(evaluation without oneDNN, training 10-30% slower); the MLP trains no slower "
    "(docs/simulations.md, \"Exact aggregation and reproducible runs\")";

const std::vector<std::pair<std::string, std::string>>& ReproducibleEnvironment() {
  // (FEDGE_REPRODUCIBLE marks a process that was run again with these: the
  // loop ends there even if a library rewrote a variable.)
  static const std::vector<std::pair<std::string, std::string>> env = {
      {"ATEN_CPU_CAPABILITY", "avx2"},   {"OPENBLAS_CORETYPE", "Haswell"},
      {"ONEDNN_MAX_CPU_ISA", "AVX2"},    {"DNNL_MAX_CPU_ISA", "AVX2"},
      {"OMP_NUM_THREADS", "1"},          {"OPENBLAS_NUM_THREADS", "1"},
      {"FEDGE_REPRODUCIBLE", "1"},
  };
  return env;
}

bool ReproducibleEnvironmentSet() {
  for (const auto& [name, value] : ReproducibleEnvironment()) {
    const char* have = std::getenv(name.c_str());
    if (!have || value != have) return false;
  }
  return true;
}

std::string DescribeReproducibleSettings() {
  std::string s = "kernels pinned: ATen avx2, OpenBLAS Haswell, oneDNN off, 1 thread; "
                  "deterministic algorithms; on ";
  return s + CpuModelName();
}

Status PinReproducibleEnvironment(char** argv) {
#if defined(__x86_64__)
  __builtin_cpu_init();
  if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) {
    return Status::FailedPrecondition(
        "--reproducible pins the AVX2 kernels, so that every x86-64 machine computes alike, and "
        "this CPU (" +
        CpuModelName() + ") has no AVX2 or FMA; run without --reproducible");
  }
#else
  return Status::FailedPrecondition(
      "--reproducible pins x86-64 kernels (AVX2); on this architecture run without it");
#endif
  if (ReproducibleEnvironmentSet()) return Status::OK();
  const char* marker = std::getenv("FEDGE_REPRODUCIBLE");
  if (marker && std::string(marker) == "1") {
    // Run again once already, and still not pinned: something rewrote it.
    return Status::Internal("--reproducible: the pinned environment did not hold after a restart");
  }
  for (const auto& [name, value] : ReproducibleEnvironment()) {
    ::setenv(name.c_str(), value.c_str(), 1);
  }
  ::execv("/proc/self/exe", argv);
  return Status::Internal(std::string("--reproducible: could not run the program again with "
                                      "the pinned environment (execv /proc/self/exe: ") +
                          std::strerror(errno) + ")");
}

}  // namespace fl
