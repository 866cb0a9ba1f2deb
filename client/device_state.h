// What a device keeps between runs (fl-client --state-dir DIR), so that a
// restart (a reboot, a service restart, a training window that closed) loses
// nothing the federation needs:
//   DIR/residual.bin  the error-feedback residual: what quantization dropped
//                     from the device's deltas so far, added to its next one
//                     (without it, a restart drops that part of its updates)
//   DIR/state.toml    the device's counters and the last round it trained,
//                     for people and for the start-up log
//   DIR/fl-client.toml  the effective configuration of the last start
// Every file is written atomically (common/file_util.h: temp file, fsync,
// rename), so a power cut leaves the old file or the new one. A residual is
// kept for one server (its endpoint): another federation's is not used.
//
// residual.bin, little-endian: "FLRS" | version u32 (1) | round u64 | server
// length u32 | server | count u64 | count x f32 | SHA-256 of all before it.
#ifndef FEDGE_CLIENT_DEVICE_STATE_H_
#define FEDGE_CLIENT_DEVICE_STATE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"

namespace fl {

struct DeviceState {
  // The server it last trained for.
  std::string server;
  // Totals over every run of this device.
  int64_t rounds_trained{0};
  int64_t updates_accepted{0};
  // The last round it trained (of the server it last trained for).
  uint64_t last_round{0};
};

// Writes DIR/residual.bin (an empty `residual`: none).
Status SaveResidual(const std::string& dir, const std::string& server, uint64_t round,
                    const std::vector<float>& residual);

// Reads DIR/residual.bin. NotFound when there is none; FailedPrecondition
// when it is another server's; Corruption when it is damaged (its digest).
Result<std::vector<float>> LoadResidual(const std::string& dir, const std::string& server,
                                        uint64_t* round);

// DIR/state.toml, written and read back (NotFound when there is none).
Status SaveDeviceState(const std::string& dir, const DeviceState& state);
Result<DeviceState> LoadDeviceState(const std::string& dir);

}  // namespace fl

#endif  // FEDGE_CLIENT_DEVICE_STATE_H_
