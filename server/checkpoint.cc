#include "server/checkpoint.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "common/wire/reader.h"
#include "common/wire/serialize.h"
#include "crypto/sha256.h"

namespace fl {
namespace {

constexpr char kCheckpointMagic[4] = {'F', 'L', 'C', 'K'};
constexpr uint32_t kCheckpointFormat = 1;

Status Errno(const std::string& what) { return Status::IOError(what, std::strerror(errno)); }

std::string DirName(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

}  // namespace

Status WriteFileAtomic(const std::string& path, const std::string& contents) {
  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return Errno("open " + tmp);
  size_t off = 0;
  while (off < contents.size()) {
    const ssize_t n = ::write(fd, contents.data() + off, contents.size() - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      Status st = Errno("write " + tmp);
      ::close(fd);
      return st;
    }
    off += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) {
    Status st = Errno("fsync " + tmp);
    ::close(fd);
    return st;
  }
  if (::close(fd) != 0) return Errno("close " + tmp);
  if (::rename(tmp.c_str(), path.c_str()) != 0) return Errno("rename " + tmp + " to " + path);
  const int dfd = ::open(DirName(path).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
  return Status::OK();
}

Status CreateDirectories(const std::string& path) {
  for (size_t pos = 1; pos != std::string::npos;) {
    pos = path.find('/', pos + 1);
    const std::string part = path.substr(0, pos);
    if (::mkdir(part.c_str(), 0755) != 0 && errno != EEXIST) return Errno("mkdir " + part);
  }
  struct stat st;
  if (::stat(path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return Status::IOError(path, "not a directory");
  }
  return Status::OK();
}

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
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::NotFound(path, std::strerror(errno));
  std::ostringstream buf;
  buf << in.rdbuf();
  const std::string bytes = buf.str();
  const size_t header = 4 + 4 + 8 + 8 + 8;
  if (bytes.size() < header + kSha256DigestBytes) {
    return Status::Corruption(path, "truncated checkpoint (" + std::to_string(bytes.size()) +
                                        " bytes)");
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
    return Status::Corruption(path, "checkpoint format " + std::to_string(format) +
                                        " not supported");
  }
  if (model_len != r.remaining()) {
    return Status::Corruption(path, "model length " + std::to_string(model_len) +
                                        " does not match the file");
  }
  Status st = wire::Decode(bytes.substr(header, model_len), &c.model);
  if (!st.ok()) return st.WithContext(path);
  return c;
}

}  // namespace fl
