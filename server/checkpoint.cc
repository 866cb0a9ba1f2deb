#include "server/checkpoint.h"

#include <cstring>

#include "common/wire/reader.h"
#include "common/wire/serialize.h"
#include "crypto/sha256.h"

namespace fl {
namespace {

constexpr char kCheckpointMagic[4] = {'F', 'L', 'C', 'K'};
constexpr uint32_t kCheckpointFormat = 1;

}  // namespace

Status WriteCheckpoint(const std::string& path, const Checkpoint& c) {
  const std::string model = wire::Encode(c.model);
  wire::Writer w;
  w.PutBytes(kCheckpointMagic, 4);
  w.PutU32(kCheckpointFormat);
  w.PutU64(c.round);
  w.PutU64(c.seed);
  w.PutU64(model.size());
  w.PutBytes(model.data(), model.size());
  std::string body = w.Release();
  const Sha256Digest digest = Sha256(body);
  body.append(reinterpret_cast<const char*>(digest.data()), digest.size());
  return WriteFileAtomic(path, body);
}

Result<Checkpoint> ReadCheckpoint(const std::string& path) {
  auto read = ReadFile(path);
  if (!read.ok()) return read.status();
  const std::string& bytes = *read;
  const size_t header = 4 + 4 + 8 + 8 + 8;
  if (bytes.size() < header + kSha256DigestBytes) {
    return Status::Corruption(path,
                              "truncated checkpoint (" + std::to_string(bytes.size()) + " bytes)");
  }
  if (std::memcmp(bytes.data(), kCheckpointMagic, 4) != 0) {
    return Status::Corruption(path, "not a fedge checkpoint (bad magic)");
  }
  const size_t body_len = bytes.size() - kSha256DigestBytes;
  const Sha256Digest digest = Sha256(bytes.data(), body_len);
  if (std::memcmp(digest.data(), bytes.data() + body_len, kSha256DigestBytes) != 0) {
    return Status::Corruption(path, "checksum mismatch (truncated or altered)");
  }
  wire::Reader r(bytes.data() + 4, body_len - 4);
  uint32_t format = 0;
  uint64_t model_len = 0;
  Checkpoint c;
  if (!r.GetU32(&format) || !r.GetU64(&c.round) || !r.GetU64(&c.seed) || !r.GetU64(&model_len)) {
    return Status::Corruption(path, "truncated header");
  }
  if (format != kCheckpointFormat) {
    return Status::Corruption(path,
                              "checkpoint format " + std::to_string(format) + " not supported");
  }
  if (model_len != r.remaining()) {
    return Status::Corruption(
        path, "model length " + std::to_string(model_len) + " does not match the file");
  }
  Status st = wire::Decode(bytes.substr(header, model_len), &c.model);
  if (!st.ok()) return st.WithContext(path);
  return c;
}

}  // namespace fl
