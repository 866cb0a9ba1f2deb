// Process-wide memory settings for fedge's long-running programs.
#ifndef FEDGE_COMMON_MEMORY_H_
#define FEDGE_COMMON_MEMORY_H_

namespace fl {

// Makes every thread allocate from one malloc arena. fl-server's threads
// (receive, evaluation, ZeroMQ I/O) and fl-client's (training, ZeroMQ I/O)
// hand model-sized buffers to each other; with glibc's default of an arena per
// thread, each arena keeps its own high-water mark, so the process holds the
// sum of the per-thread peaks rather than the peak of the sum. One arena cost
// nothing measurable in round time and saved 8-20 MiB of peak RSS a process
// (experiments/BENCHMARKS.md, 2026-11-28). Call first thing in main(), before
// any thread starts. Not for fl-sim, whose worker threads all train at once.
void UseOneMallocArena();

}  // namespace fl

#endif  // FEDGE_COMMON_MEMORY_H_
