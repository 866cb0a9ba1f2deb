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
  // IEEE 754 binary32 / binary64, little-endian (any value, NaN included:
  // the caller checks the range it needs).
  bool GetF32(float* out) {
    uint32_t bits;
    if (!GetU32(&bits)) return false;
    std::memcpy(out, &bits, 4);
    return true;
  }
  bool GetF64(double* out) {
    uint64_t bits;
    if (!GetU64(&bits)) return false;
    std::memcpy(out, &bits, 8);
    return true;
  }
  // A string of u16 length and its bytes, at most `max` bytes; false (and
  // nothing consumed) when longer or truncated.
  bool GetString16(std::string* out, size_t max) {
    uint16_t n;
    if (left_ < 2) return false;
    Reader peek = *this;
    peek.GetU16(&n);
    if (n > max || n > peek.left_) return false;
    out->assign(reinterpret_cast<const char*>(peek.p_), n);
    p_ = peek.p_ + n;
    left_ = peek.left_ - n;
    return true;
  }
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
  void PutF32(float v) {
    uint32_t bits;
    std::memcpy(&bits, &v, 4);
    PutU32(bits);
  }
  void PutF64(double v) {
    uint64_t bits;
    std::memcpy(&bits, &v, 8);
    PutU64(bits);
  }
  // u16 length and the bytes (at most 65535 of them: the caller bounds it).
  void PutString16(const std::string& s) {
    PutU16(static_cast<uint16_t>(s.size()));
    PutBytes(s.data(), s.size());
  }
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
