#include "common/file_util.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

namespace fl {
namespace {

Status Errno(const std::string& what) { return Status::IOError(what, std::strerror(errno)); }

std::string DirName(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

}  // namespace

Status WriteFileAtomic(const std::string& path, const std::string& contents, unsigned mode,
                       bool replace) {
  const std::string tmp = path + ".tmp";
  ::unlink(tmp.c_str());  // O_CREAT keeps an existing file's mode; start fresh
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  if (fd < 0) return Errno("open " + tmp);
  // The umask may have narrowed `mode`; never widen it, but make it exact.
  if (::fchmod(fd, mode) != 0) {
    Status st = Errno("chmod " + tmp);
    ::close(fd);
    return st;
  }
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
  if (!replace) {
    int rc = ::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, path.c_str(), RENAME_NOREPLACE);
    if (rc != 0 && errno == EINVAL) {
      // A filesystem without RENAME_NOREPLACE: link() refuses an existing
      // name just the same.
      rc = ::link(tmp.c_str(), path.c_str());
      if (rc == 0) ::unlink(tmp.c_str());
    }
    if (rc != 0) {
      const int err = errno;
      ::unlink(tmp.c_str());
      if (err == EEXIST) return Status::InvalidArgument(path, "exists; not replacing it");
      errno = err;
      return Errno("rename " + tmp + " to " + path);
    }
  } else if (::rename(tmp.c_str(), path.c_str()) != 0) {
    return Errno("rename " + tmp + " to " + path);
  }
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

Result<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    // Only a file that is not there is NotFound: one that cannot be opened
    // (permissions, too many open files) must not look absent to a caller
    // that would then start over.
    const int err = errno;
    if (err == ENOENT) return Status::NotFound(path, std::strerror(err));
    return Status::IOError(path, std::strerror(err));
  }
  std::ostringstream buf;
  buf << in.rdbuf();
  if (in.bad()) return Status::IOError(path, "read failed");
  return buf.str();
}

}  // namespace fl
