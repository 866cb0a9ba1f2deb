#include "client/device_state.h"

#include <toml++/toml.h>

#include <algorithm>
#include <cstring>
#include <sstream>

#include "common/file_util.h"
#include "common/wire/reader.h"
#include "crypto/sha256.h"

namespace fl {
namespace {

constexpr char kResidualMagic[4] = {'F', 'L', 'R', 'S'};
constexpr uint32_t kResidualVersion = 1;
// A model of at most 2^28 values (1 GiB of residual): more is a damaged file.
constexpr uint64_t kMaxResidualValues = uint64_t{1} << 28;

std::string ResidualPath(const std::string& dir) { return dir + "/residual.bin"; }
std::string StatePath(const std::string& dir) { return dir + "/state.toml"; }

}  // namespace

Status SaveResidual(const std::string& dir, const std::string& server, uint64_t round,
                    const std::vector<float>& residual) {
  wire::Writer w;
  w.PutBytes(kResidualMagic, 4);
  w.PutU32(kResidualVersion);
  w.PutU64(round);
  w.PutU32(static_cast<uint32_t>(server.size()));
  w.PutBytes(server.data(), server.size());
  w.PutU64(residual.size());
  for (float f : residual) {
    uint32_t bits;
    std::memcpy(&bits, &f, 4);
    w.PutU32(bits);
  }
  std::string bytes = w.Release();
  const Sha256Digest digest = Sha256(bytes);
  bytes.append(reinterpret_cast<const char*>(digest.data()), digest.size());
  return WriteFileAtomic(ResidualPath(dir), bytes, 0600);
}

Result<std::vector<float>> LoadResidual(const std::string& dir, const std::string& server,
                                        uint64_t* round) {
  const std::string path = ResidualPath(dir);
  auto bytes = ReadFile(path);
  if (!bytes.ok()) return bytes.status();
  const std::string& b = *bytes;
  if (b.size() < 4 + 4 + 8 + 4 + 8 + 32 || std::memcmp(b.data(), kResidualMagic, 4) != 0) {
    return Status::Corruption(path, "not a residual file");
  }
  const size_t body = b.size() - 32;
  const Sha256Digest digest = Sha256(b.data(), body);
  if (std::memcmp(digest.data(), b.data() + body, 32) != 0) {
    return Status::Corruption(path, "its digest does not match (a damaged file)");
  }
  wire::Reader r(b.data() + 4, body - 4);
  uint32_t version = 0, server_len = 0;
  uint64_t at_round = 0, count = 0;
  const uint8_t* name = nullptr;
  if (!r.GetU32(&version) || version != kResidualVersion || !r.GetU64(&at_round) ||
      !r.GetU32(&server_len) || !r.Skip(server_len, &name) || !r.GetU64(&count) ||
      count > kMaxResidualValues || r.remaining() != count * 4) {
    return Status::Corruption(path, "malformed");
  }
  const std::string of(reinterpret_cast<const char*>(name), server_len);
  if (of != server) {
    return Status::FailedPrecondition(path + " is the residual for " + of + ", not " + server);
  }
  std::vector<float> residual(count);
  for (float& f : residual) {
    uint32_t bits = 0;
    r.GetU32(&bits);
    std::memcpy(&f, &bits, 4);
  }
  *round = at_round;
  return residual;
}

Status SaveDeviceState(const std::string& dir, const DeviceState& s) {
  const toml::table state{{"server", s.server},
                          {"rounds_trained", s.rounds_trained},
                          {"updates_accepted", s.updates_accepted},
                          {"last_round", static_cast<int64_t>(s.last_round)}};
  std::ostringstream out;
  out << "# fl-client's state: written after every round, read at start (--state-dir)\n"
      << state << "\n";
  return WriteFileAtomic(StatePath(dir), out.str(), 0600);
}

Result<DeviceState> LoadDeviceState(const std::string& dir) {
  const std::string path = StatePath(dir);
  auto text = ReadFile(path);
  if (!text.ok()) return text.status();
  toml::table t;
  try {
    t = toml::parse(*text, path);
  } catch (const toml::parse_error& e) {
    return Status::Corruption(path, std::string(e.description()));
  }
  DeviceState s;
  s.server = t["server"].value_or(std::string());
  s.rounds_trained = t["rounds_trained"].value_or(int64_t{0});
  s.updates_accepted = t["updates_accepted"].value_or(int64_t{0});
  s.last_round = static_cast<uint64_t>(std::max<int64_t>(0, t["last_round"].value_or(int64_t{0})));
  return s;
}

}  // namespace fl
