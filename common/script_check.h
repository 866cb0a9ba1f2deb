// What a TorchScript model may run on a device: tensor operations only.
//
// A model's code comes from whoever holds the server's key (or a relay's),
// and TorchScript can do more than compute: open and write files
// (torch.save, torch.from_file), print, fork tasks, call RPCs, reseed the
// random generators, loop without end, and write into its own weights from
// forward (so that a delta carries the device's data). CheckScriptCode walks
// the code of every method of the module and its submodules, with the
// functions and methods they call inlined, and refuses what is not on an
// allowlist of tensor and control-flow operations; writes through
// `self` (an in-place op on a parameter, a buffer or a view of one, or an
// assignment to an attribute); and loops whose trip count is not bounded by
// sizes of the data and small constants. The refusal names the operation and
// the line of the script.
//
// CheckScriptArchive runs first, on the file's bytes, before torch::jit::load
// runs anything of it: a __setstate__ (which loading would run as it
// unpickles) is refused there.
//
// What this cannot close: writes that alias analysis does not see are caught
// when forward runs (common/model_zoo.cc: a parameter or running statistic
// whose version moved refuses the step before any delta is made);
// torch.batch_norm moves running statistics towards the batch it is given,
// and gradients carry information about the data, as in any federation:
// secure aggregation and differential privacy are the answers to those.
#ifndef FEDGE_COMMON_SCRIPT_CHECK_H_
#define FEDGE_COMMON_SCRIPT_CHECK_H_

#include <string>

#include "common/status.h"

namespace torch {
namespace jit {
struct Module;
}  // namespace jit
}  // namespace torch

namespace fl {

// OK, or InvalidArgument naming the first operation refused and where it is.
Status CheckScriptCode(const torch::jit::Module& module);

// The archive `bytes` of a TorchScript file, before it is loaded: OK, or
// InvalidArgument naming the code file that defines __setstate__.
Status CheckScriptArchive(const std::string& bytes);

}  // namespace fl

#endif  // FEDGE_COMMON_SCRIPT_CHECK_H_
