// Binary serialization of the wire payloads (cereal binary archives).
//
// Decode functions take bytes that have already passed the envelope checks
// (size bound, digest, and signature once signing is on). They still never
// trust a length: the input archive refuses any container length larger than
// the bytes left, so a hostile length cannot make them allocate, and trailing
// bytes after a message are an error unless they form a well-formed extension
// block (messages.h, "Optional fields"). cereal exceptions are caught here.
#ifndef FEDGE_COMMON_WIRE_SERIALIZE_H_
#define FEDGE_COMMON_WIRE_SERIALIZE_H_

#include <functional>
#include <string>

#include "common/status.h"
#include "common/wire/messages.h"

namespace fl {
namespace wire {

std::string Encode(const Hello& m);
std::string Encode(const Task& m);
std::string Encode(const Update& m);
std::string Encode(const Ready& m);
std::string Encode(const Reply& m);
std::string Encode(const Done& m);
std::string Encode(const ModelState& m);
std::string Encode(const CompactModel& m);
// The bytes Encode(m) returns, handed to `write` piece by piece as they are
// produced (hashing a model's encoding without holding it).
void EncodeTo(const CompactModel& m, const std::function<void(const char*, size_t)>& write);

// Each returns Corruption naming the message type when `bytes` is not exactly
// one well-formed message of that type.
Status Decode(const std::string& bytes, Hello* out);
Status Decode(const std::string& bytes, Task* out);
Status Decode(const std::string& bytes, Update* out);
Status Decode(const std::string& bytes, Ready* out);
Status Decode(const std::string& bytes, Reply* out);
Status Decode(const std::string& bytes, Done* out);
Status Decode(const std::string& bytes, ModelState* out);

}  // namespace wire
}  // namespace fl

#endif  // FEDGE_COMMON_WIRE_SERIALIZE_H_
