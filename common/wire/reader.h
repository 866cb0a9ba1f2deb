// Bounds-checked little-endian cursor over untrusted bytes, after BoringSSL's
// CBS, and its writing counterpart.
//
// Each Get function returns true on success and false when fewer bytes remain
// than requested, in which case nothing is consumed.
#ifndef FEDGE_COMMON_WIRE_READER_H_
#define FEDGE_COMMON_WIRE_READER_H_

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

namespace fl {
namespace wire {

class Reader {
 public:
  Reader(const void* data, size_t size) : p_(static_cast<const uint8_t*>(data)), left_(size) {}

  size_t remaining() const { return left_; }

  bool GetBytes(void* out, size_t n) {
    if (n > left_) return false;
    std::memcpy(out, p_, n);
    p_ += n;
    left_ -= n;
    return true;
  }
  bool GetU8(uint8_t* out) { return GetBytes(out, 1); }
  bool GetU16(uint16_t* out) { return GetLe(out, 2); }
  bool GetU32(uint32_t* out) { return GetLe(out, 4); }
  bool GetU64(uint64_t* out) { return GetLe(out, 8); }
  // Points `out` at the next n bytes without copying.
  bool Skip(size_t n, const uint8_t** out = nullptr) {
    if (n > left_) return false;
    if (out) *out = p_;
    p_ += n;
    left_ -= n;
    return true;
  }

 private:
  template <typename T>
  bool GetLe(T* out, size_t n) {
    if (n > left_) return false;
    T v = 0;
    for (size_t i = 0; i < n; ++i) v |= static_cast<T>(static_cast<T>(p_[i]) << (8 * i));
    *out = v;
    p_ += n;
    left_ -= n;
    return true;
  }

  const uint8_t* p_;
  size_t left_;
};

class Writer {
 public:
  void PutBytes(const void* data, size_t n) { buf_.append(static_cast<const char*>(data), n); }
  void PutU8(uint8_t v) { buf_.push_back(static_cast<char>(v)); }
  void PutU16(uint16_t v) { PutLe(v, 2); }
  void PutU32(uint32_t v) { PutLe(v, 4); }
  void PutU64(uint64_t v) { PutLe(v, 8); }
  std::string Release() { return std::move(buf_); }
  size_t size() const { return buf_.size(); }

 private:
  void PutLe(uint64_t v, size_t n) {
    for (size_t i = 0; i < n; ++i) buf_.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  }
  std::string buf_;
};

}  // namespace wire
}  // namespace fl

#endif  // FEDGE_COMMON_WIRE_READER_H_
