// Status and Result<T>: the one error type at fedge's module boundaries.
//
// Modelled on LevelDB's leveldb/status.h (one factory per error kind, ok(),
// ToString()) and Abseil's absl::StatusOr (Result<T> holds a value or an error).
// Library exceptions (c10::Error, zmq::error_t, cereal::Exception) are caught at
// the edge of the module that calls the library and turned into a Status.
//
// Bad input is a Status whose message says what was wrong and where, so a person
// can act on it. A broken internal invariant is an assert, not a Status.
#ifndef FEDGE_COMMON_STATUS_H_
#define FEDGE_COMMON_STATUS_H_

#include <cassert>
#include <optional>
#include <string>
#include <utility>

namespace fl {

class [[nodiscard]] Status {
 public:
  // The kind of failure. Callers branch on the code; people read the message.
  enum class Code {
    kOk = 0,
    kInvalidArgument,     // the caller passed something unusable (flag, config, size)
    kNotFound,            // a file, model name or key does not exist
    kCorruption,          // bytes on disk or on the wire are malformed
    kIOError,             // the OS refused a read, write, fsync or rename
    kUnauthenticated,     // a signature, key or digest did not verify
    kFailedPrecondition,  // the operation is not valid in the current state
    kUnavailable,         // a peer is unreachable or timed out; retrying may help
    kInternal,            // a library reported an unexpected error
  };

  // Creates a success status.
  Status() = default;

  // Returns a success status.
  static Status OK() { return Status(); }

  // Return error statuses of the given kind. `msg2`, when given, is appended
  // after ": ", e.g. IOError(path, "permission denied").
  static Status InvalidArgument(const std::string& msg, const std::string& msg2 = "") {
    return Status(Code::kInvalidArgument, msg, msg2);
  }
  static Status NotFound(const std::string& msg, const std::string& msg2 = "") {
    return Status(Code::kNotFound, msg, msg2);
  }
  static Status Corruption(const std::string& msg, const std::string& msg2 = "") {
    return Status(Code::kCorruption, msg, msg2);
  }
  static Status IOError(const std::string& msg, const std::string& msg2 = "") {
    return Status(Code::kIOError, msg, msg2);
  }
  static Status Unauthenticated(const std::string& msg, const std::string& msg2 = "") {
    return Status(Code::kUnauthenticated, msg, msg2);
  }
  static Status FailedPrecondition(const std::string& msg, const std::string& msg2 = "") {
    return Status(Code::kFailedPrecondition, msg, msg2);
  }
  static Status Unavailable(const std::string& msg, const std::string& msg2 = "") {
    return Status(Code::kUnavailable, msg, msg2);
  }
  static Status Internal(const std::string& msg, const std::string& msg2 = "") {
    return Status(Code::kInternal, msg, msg2);
  }

  // Returns true iff the status indicates success.
  bool ok() const { return code_ == Code::kOk; }
  Code code() const { return code_; }
  // The message alone, without the kind prefix.
  const std::string& message() const { return message_; }

  bool IsInvalidArgument() const { return code_ == Code::kInvalidArgument; }
  bool IsNotFound() const { return code_ == Code::kNotFound; }
  bool IsCorruption() const { return code_ == Code::kCorruption; }
  bool IsIOError() const { return code_ == Code::kIOError; }
  bool IsUnauthenticated() const { return code_ == Code::kUnauthenticated; }

  // Returns "OK" for success, otherwise "<Kind>: <message>".
  std::string ToString() const;

  // Returns a copy with `context + ": "` prepended to the message; OK stays OK.
  // Used to say where an error happened as it travels up.
  Status WithContext(const std::string& context) const;

 private:
  Status(Code code, const std::string& msg, const std::string& msg2)
      : code_(code), message_(msg2.empty() ? msg : msg + ": " + msg2) {}

  Code code_ = Code::kOk;
  std::string message_;
};

// Returns the name of a code, e.g. "Corruption".
const char* CodeName(Status::Code code);

// Either a value of type T or a non-OK Status, as absl::StatusOr.
template <typename T>
class [[nodiscard]] Result {
 public:
  // Implicit from a value and from an error so functions can `return value;` or
  // `return Status::NotFound(...)`.
  Result(T value) : value_(std::move(value)) {}         // NOLINT(runtime/explicit)
  Result(Status status) : status_(std::move(status)) {  // NOLINT(runtime/explicit)
    assert(!status_.ok() && "Result constructed from an OK status without a value");
    if (status_.ok()) status_ = Status::Internal("Result constructed from OK status");
  }

  bool ok() const { return status_.ok(); }
  const Status& status() const { return status_; }

  // Access the value; only valid when ok().
  T& value() & {
    assert(ok());
    return *value_;
  }
  const T& value() const& {
    assert(ok());
    return *value_;
  }
  T&& value() && {
    assert(ok());
    return std::move(*value_);
  }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

 private:
  Status status_;
  std::optional<T> value_;
};

}  // namespace fl

// Returns early from the enclosing function if `expr` yields a non-OK Status.
#define FL_RETURN_IF_ERROR(expr)                     \
  do {                                               \
    ::fl::Status fl_status_tmp_ = (expr);            \
    if (!fl_status_tmp_.ok()) return fl_status_tmp_; \
  } while (0)

#endif  // FEDGE_COMMON_STATUS_H_
