// How fedge's programs end.
#ifndef FEDGE_COMMON_PROCESS_EXIT_H_
#define FEDGE_COMMON_PROCESS_EXIT_H_

namespace fl {

// Flushes stdio (and with it the spdlog console sinks, which write through
// stdout and stderr) and ends the process with `code`, without running the
// destructors of objects of static storage duration. What main() owns must be
// gone by then: call it with main's result, after main's own objects (server,
// sockets, files, MPI) have been destroyed.
//
// Why: LibTorch's static teardown unregisters each of its ~2,000 operators
// from c10's dispatcher one by one, which costs a process that links
// LibTorch about 0.1 CPU-s at exit for nothing (an empty main linked to
// libtorch_cpu, 40 runs each way, AMD EPYC, 2026-12-07: median 0.753 CPU-s
// with exit(), 0.609 with this; experiments/BENCHMARKS.md, "The test suite's
// time"). fedge keeps no state in static objects that needs a destructor.
[[noreturn]] void ExitWithoutStaticTeardown(int code);

}  // namespace fl

#endif  // FEDGE_COMMON_PROCESS_EXIT_H_
