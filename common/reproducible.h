// --reproducible (or a config file's reproducible = true): the same seed
// gives the same model on any x86-64 machine with AVX2 and FMA (Intel since
// Haswell, 2013; every AMD Zen).
//
// Aggregation is exact everywhere (common/fixed_point.h); what still differs
// from one CPU to the next is which kernels the libraries under LibTorch pick
// when they load or first run, and those sum in other orders:
//   ATen's vectorized ops      ATEN_CPU_CAPABILITY  (default | avx2 | avx512)
//   OpenBLAS's GEMM            OPENBLAS_CORETYPE    (Haswell | Zen | SkylakeX ...)
//   oneDNN's convolutions      ONEDNN_MAX_CPU_ISA, and its blocking follows the
//                              cache sizes, so it is switched off altogether:
//                              convolutions run as im2col + OpenBLAS GEMM
//   threads                    OMP_NUM_THREADS=1, one intra-op thread
// Pinned, each machine runs the same AVX2 code: the same instructions on the
// same numbers give the same bits (IEEE 754). OpenBLAS reads its variable as
// it loads, before main, so a process that lacks the pinned environment runs
// itself again with it (execv of /proc/self/exe, the same arguments).
//
// The cost, measured by experiments/bench/reproducible_cost.sh, is in the
// docs/simulations.md ("Exact aggregation and reproducible runs") and in the tools' --help.
//
// Free of LibTorch (UseDeterministicKernels is defined with the trainer).
#ifndef FEDGE_COMMON_REPRODUCIBLE_H_
#define FEDGE_COMMON_REPRODUCIBLE_H_

#include <string>
#include <utility>
#include <vector>

#include "common/status.h"

namespace fl {

// The environment --reproducible pins, name and value, in order.
const std::vector<std::pair<std::string, std::string>>& ReproducibleEnvironment();

// True when every variable of ReproducibleEnvironment() has its value.
bool ReproducibleEnvironmentSet();

// The --reproducible flag's help (fl-sim, fl-client, fl-server), with what
// it costs as measured.
extern const char kReproducibleHelp[];

// One line naming the pinned kernels and this CPU (for logs and summary.json).
std::string DescribeReproducibleSettings();

// Makes this process one that computes alike on every machine: when the
// environment is already pinned, returns OK; otherwise sets it and runs this
// program again with `argv` (does not return on success). FailedPrecondition
// on an x86-64 CPU without AVX2 and FMA (the pinned kernels need them);
// Internal when the program cannot be run again. FailedPrecondition on other
// architectures: the pinned kernels are x86-64's.
Status PinReproducibleEnvironment(char** argv);

// The torch side: deterministic algorithms only (an op without one fails,
// naming itself), and no oneDNN, so that convolutions run as im2col + GEMM,
// whose kernels OPENBLAS_CORETYPE pins. Process-wide; call before any model
// is made. Defined in fl_torch (common/trainer.cc), so that this header stays
// free of LibTorch: a program that calls it links fl_torch.
void UseDeterministicKernels();

// --reproducible in one call: PinReproducibleEnvironment (which runs the
// program again when the environment is not pinned yet, and returns only on
// failure), then UseDeterministicKernels. Defined with it, in fl_torch.
Status BecomeReproducible(char** argv);

}  // namespace fl

#endif  // FEDGE_COMMON_REPRODUCIBLE_H_
