#include "client/device_state.h"

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

// A TOML basic string: quotes and backslashes escaped, control bytes dropped.
std::string Quoted(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    if (static_cast<unsigned char>(c) >= 0x20) out += c;
  }
  return out + "\"";
}

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
  std::ostringstream out;
  out << "# fl-client's state: written after every round, read at start (--state-dir)\n"
      << "server = " << Quoted(s.server) << "\n"
      << "rounds_trained = " << s.rounds_trained << "\n"
      << "updates_accepted = " << s.updates_accepted << "\n"
      << "last_round = " << s.last_round << "\n";
  return WriteFileAtomic(StatePath(dir), out.str(), 0600);
}

Result<DeviceState> LoadDeviceState(const std::string& dir) {
  auto text = ReadFile(StatePath(dir));
  if (!text.ok()) return text.status();
  DeviceState s;
  std::istringstream in(*text);
  std::string line;
  while (std::getline(in, line)) {
    const size_t eq = line.find(" = ");
    if (line.empty() || line[0] == '#' || eq == std::string::npos) continue;
    const std::string key = line.substr(0, eq), value = line.substr(eq + 3);
    if (key == "server" && value.size() >= 2) {
      const std::string quoted = value.substr(1, value.size() - 2);
      for (size_t i = 0; i < quoted.size(); ++i) {
        if (quoted[i] == '\\' && i + 1 < quoted.size()) ++i;  // (Quoted's escapes)
        s.server += quoted[i];
      }
    } else if (key == "rounds_trained") {
      s.rounds_trained = std::strtoll(value.c_str(), nullptr, 10);
    } else if (key == "updates_accepted") {
      s.updates_accepted = std::strtoll(value.c_str(), nullptr, 10);
    } else if (key == "last_round") {
      s.last_round = std::strtoull(value.c_str(), nullptr, 10);
    }
  }
  return s;
}

}  // namespace fl
