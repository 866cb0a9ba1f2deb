// Durable file writes and whole-file reads.
#ifndef FEDGE_COMMON_FILE_UTIL_H_
#define FEDGE_COMMON_FILE_UTIL_H_

#include <string>

#include "common/status.h"

namespace fl {

// Writes `contents` to `path` durably: a temp file next to it, fsync, rename
// over `path`, fsync of the directory. A crash leaves the old file or the new
// one, never a torn one. The file is created with permission bits `mode`
// (0600 for secrets: the temp file never exists with wider permissions).
// With `replace` false the final rename refuses to replace anything already at
// `path` (a file or a symbolic link): AlreadyExists-style InvalidArgument, and
// the existing file untouched.
Status WriteFileAtomic(const std::string& path, const std::string& contents, unsigned mode = 0644,
                       bool replace = true);

// Creates `path` and its missing parents (mkdir -p). IOError naming the part
// that could not be created.
Status CreateDirectories(const std::string& path);

// Reads a whole file. NotFound when it cannot be opened.
Result<std::string> ReadFile(const std::string& path);

}  // namespace fl

#endif  // FEDGE_COMMON_FILE_UTIL_H_
