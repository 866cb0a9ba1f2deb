#include "common/wire/serialize.h"

#include <algorithm>
#include <cereal/archives/binary.hpp>
#include <cereal/types/string.hpp>
#include <cereal/types/vector.hpp>
#include <cmath>
#include <cstring>
#include <functional>
#include <initializer_list>
#include <sstream>

#include "common/model_state.h"
#include "common/wire/envelope.h"
#include "common/wire/limits.h"

// cereal's binary archive writes integers and floats in host byte order; the
// wire format is little-endian (docs/protocol.md), so a big-endian host would
// speak another protocol. Refuse to build there rather than mis-speak.
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "fedge's wire format is little-endian; this host is not");

namespace fl {
namespace wire {
// One record of a payload's extension block (messages.h, "Optional fields").
struct ExtensionRecord {
  uint16_t tag{0};
  std::string value;
};
}  // namespace wire
}  // namespace fl

namespace cereal {

// A binary input archive over a memory span that refuses, before any
// allocation, a container size larger than the bytes that remain (every element
// takes at least one byte). Wire-compatible with cereal::BinaryOutputArchive.
class BoundedInputArchive : public InputArchive<BoundedInputArchive, AllowEmptyClassElision> {
 public:
  BoundedInputArchive(const char* data, size_t size)
      : InputArchive<BoundedInputArchive, AllowEmptyClassElision>(this), p_(data), left_(size) {}

  void loadBinary(void* const data, std::streamsize size) {
    if (size < 0 || static_cast<size_t>(size) > left_) {
      throw Exception("payload truncated: need " + std::to_string(size) + " bytes, " +
                      std::to_string(left_) + " left");
    }
    std::memcpy(data, p_, static_cast<size_t>(size));
    p_ += size;
    left_ -= static_cast<size_t>(size);
  }
  size_t remaining() const { return left_; }

 private:
  const char* p_;
  size_t left_;
};

template <class T>
inline typename std::enable_if<std::is_arithmetic<T>::value, void>::type CEREAL_LOAD_FUNCTION_NAME(
    BoundedInputArchive& ar, T& t) {
  ar.loadBinary(std::addressof(t), sizeof(t));
}

template <class T>
inline void CEREAL_SERIALIZE_FUNCTION_NAME(BoundedInputArchive& ar, NameValuePair<T>& t) {
  ar(t.value);
}

// The bound: a length may not exceed the bytes left.
template <class T>
inline void CEREAL_SERIALIZE_FUNCTION_NAME(BoundedInputArchive& ar, SizeTag<T>& t) {
  ar(t.size);
  if (static_cast<uint64_t>(t.size) > ar.remaining()) {
    throw Exception("length " + std::to_string(static_cast<uint64_t>(t.size)) + " exceeds the " +
                    std::to_string(ar.remaining()) + " bytes left");
  }
}

template <class T>
inline void CEREAL_LOAD_FUNCTION_NAME(BoundedInputArchive& ar, BinaryData<T>& bd) {
  ar.loadBinary(bd.data, static_cast<std::streamsize>(bd.size));
}

// The least bytes one element of a vector takes on the wire: an arithmetic
// value its size; a string or vector its 8-byte length; a tensor its four
// lengths. Specialised below for fedge's structs.
template <class T, class Enable = void>
struct MinWireBytes {
  static constexpr size_t value = 8;
};
template <class T>
struct MinWireBytes<T, typename std::enable_if<std::is_arithmetic<T>::value>::type> {
  static constexpr size_t value = sizeof(T);
};

// Vectors: the element count times the least bytes an element takes may not
// exceed the bytes left, so a decoder never allocates more than
// sizeof(element) / MinWireBytes (at most 4) times the bytes it received.
template <class T, class A>
inline void CEREAL_LOAD_FUNCTION_NAME(BoundedInputArchive& ar, std::vector<T, A>& vec) {
  size_type size;
  ar(make_size_tag(size));
  if (static_cast<uint64_t>(size) > ar.remaining() / MinWireBytes<T>::value) {
    throw Exception(std::to_string(static_cast<uint64_t>(size)) + " elements of at least " +
                    std::to_string(MinWireBytes<T>::value) + " bytes exceed the " +
                    std::to_string(ar.remaining()) + " bytes left");
  }
  vec.resize(static_cast<size_t>(size));
  if constexpr (std::is_arithmetic<T>::value) {
    ar.loadBinary(vec.data(), static_cast<std::streamsize>(vec.size() * sizeof(T)));
  } else {
    for (auto& v : vec) ar(v);
  }
}

// An extension record: its tag and its value's length.
template <>
struct MinWireBytes<fl::wire::ExtensionRecord> {
  static constexpr size_t value = 10;
};

// name, shape, mask and values: four lengths.
template <>
struct MinWireBytes<fl::TensorState> {
  static constexpr size_t value = 32;
};
template <>
struct MinWireBytes<fl::wire::CompactTensor> {
  static constexpr size_t value = 32;
};

}  // namespace cereal

CEREAL_REGISTER_ARCHIVE(cereal::BoundedInputArchive)
// Only the input -> output direction: BinaryOutputArchive already pairs with
// cereal's own BinaryInputArchive.
namespace cereal {
namespace traits {
namespace detail {
template <>
struct get_output_from_input<cereal::BoundedInputArchive> {
  using type = cereal::BinaryOutputArchive;
};
}  // namespace detail
}  // namespace traits
}  // namespace cereal

namespace fl {

template <class Archive>
void serialize(Archive& ar, TensorState& t) {
  ar(t.name, t.shape, t.values, t.mask);
}
template <class Archive>
void serialize(Archive& ar, ModelState& m) {
  ar(m.architecture, m.tensors);
}

namespace wire {

template <class Archive>
void serialize(Archive& ar, ExtensionRecord& e) {
  ar(e.tag, e.value);
}

// The extension block after a payload's fixed fields. Saving writes `records`
// (nothing at all when there are none, so a payload without optional fields is
// byte for byte what peers before extensions send). Loading reads the block
// when bytes remain, refuses a malformed one, duplicate tags and unknown
// critical tags, and keeps only the records whose tag is in `known`.
template <class Archive>
void Extensions(Archive& ar, std::vector<ExtensionRecord>& records,
                std::initializer_list<uint16_t> known) {
  if constexpr (Archive::is_saving::value) {
    if (records.empty()) return;
    const uint16_t count = static_cast<uint16_t>(records.size());
    ar(count);
    for (auto& r : records) ar(r);
  } else {
    records.clear();
    if (ar.remaining() == 0) return;
    uint16_t count = 0;
    ar(count);
    if (count == 0 || count > kMaxExtensions) {
      throw cereal::Exception("extension block of " + std::to_string(count) + " records (1.." +
                              std::to_string(kMaxExtensions) + ")");
    }
    std::vector<uint16_t> seen;
    for (uint16_t i = 0; i < count; ++i) {
      ExtensionRecord r;
      ar(r);
      if (std::find(seen.begin(), seen.end(), r.tag) != seen.end()) {
        throw cereal::Exception("extension " + std::to_string(r.tag) + " appears twice");
      }
      seen.push_back(r.tag);
      const bool is_known = std::find(known.begin(), known.end(), r.tag) != known.end();
      if (is_known) {
        records.push_back(std::move(r));
      } else if (r.tag & kCriticalExtension) {
        throw cereal::Exception("unknown critical extension " + std::to_string(r.tag) +
                                " (the sender needs a newer receiver)");
      }
    }
  }
}

// For payloads with no optional field of their own yet: the block is written
// empty and, when a newer peer sends one, read and checked (unknown records
// skipped).
template <class Archive>
void NoExtensions(Archive& ar) {
  std::vector<ExtensionRecord> none;
  Extensions(ar, none, {});
}

// Little-endian fixed-size values of extension records.
static std::string LeU32(uint32_t v) {
  std::string out;
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>(v >> (8 * i)));
  return out;
}
static std::string LeF64(double v) {
  uint64_t bits;
  std::memcpy(&bits, &v, 8);
  std::string out;
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>(bits >> (8 * i)));
  return out;
}
static uint32_t GetLeU32(const std::string& s, size_t at) {
  uint32_t n = 0;
  for (int i = 0; i < 4; ++i) n |= uint32_t{static_cast<uint8_t>(s[at + i])} << (8 * i);
  return n;
}
static double GetLeF64(const std::string& s, size_t at) {
  uint64_t bits = 0;
  for (int i = 0; i < 8; ++i) bits |= uint64_t{static_cast<uint8_t>(s[at + i])} << (8 * i);
  double v;
  std::memcpy(&v, &bits, 8);
  return v;
}

template <class Archive>
void serialize(Archive& ar, Hello& m) {
  ar(m.num_examples, m.architecture, m.codecs, m.heartbeat_seconds);
  std::vector<ExtensionRecord> ext;
  if (m.takes_model_code) ext.push_back({kHelloTakesModelCode, ""});
  if (m.devices >= 0) {
    ext.push_back(
        {kHelloDevices, LeU32(static_cast<uint32_t>(std::min<int64_t>(m.devices, UINT32_MAX)))});
  }
  Extensions(ar, ext, {kHelloTakesModelCode, kHelloDevices});
  if constexpr (Archive::is_loading::value) {
    m.devices = -1;
    for (const auto& e : ext) {
      if (e.tag == kHelloDevices) {
        if (e.value.size() != 4) throw cereal::Exception("devices extension is not 4 bytes");
        m.devices = GetLeU32(e.value, 0);
        continue;
      }
      if (e.tag != kHelloTakesModelCode) continue;
      if (!e.value.empty()) throw cereal::Exception("takes-model-code extension has a value");
      m.takes_model_code = true;
    }
  }
}
template <class Archive>
void serialize(Archive& ar, TrainConfig& m) {
  // Booleans travel as bytes (0 or 1), so a hostile byte cannot become an
  // invalid bool.
  uint8_t sr = m.stochastic_rounding ? 1 : 0, ef = m.error_feedback ? 1 : 0;
  ar(m.epochs, m.batch_size, m.lr, m.momentum, m.weight_decay, m.seed, m.deadline_seconds,
     m.uplink_bits, m.block, sr, ef);
  m.stochastic_rounding = sr != 0;
  m.error_feedback = ef != 0;
}
template <class Archive>
void serialize(Archive& ar, CompactTensor& t) {
  ar(t.name, t.shape, t.mask_bits, t.values);
}
template <class Archive>
void serialize(Archive& ar, CompactModel& m) {
  ar(m.architecture, m.format, m.tensors);
}
template <class Archive>
void serialize(Archive& ar, Task& m) {
  ar(m.config, m.model);
  std::vector<ExtensionRecord> ext;
  if (m.ask_before_upload) ext.push_back({kTaskAskBeforeUpload, ""});
  if (m.config.proximal_mu != 0) {
    uint64_t bits;
    std::memcpy(&bits, &m.config.proximal_mu, 8);
    std::string value(8, '\0');
    for (int i = 0; i < 8; ++i) value[i] = static_cast<char>(bits >> (8 * i));
    ext.push_back({kTaskProximalMu, std::move(value)});
  }
  if (!m.config.normalize_mean.empty()) {
    std::string value;
    auto put = [&](float f) {
      uint32_t bits;
      std::memcpy(&bits, &f, 4);
      for (int i = 0; i < 4; ++i) value.push_back(static_cast<char>(bits >> (8 * i)));
    };
    for (size_t c = 0; c < m.config.normalize_mean.size(); ++c) {
      put(m.config.normalize_mean[c]);
      put(c < m.config.normalize_std.size() ? m.config.normalize_std[c] : 0.0f);
    }
    ext.push_back({kTaskNormalization, std::move(value)});
  }
  if (!m.config.trainable.empty()) {
    const auto n = static_cast<uint32_t>(m.config.trainable.size());
    std::string value;
    for (int i = 0; i < 4; ++i) value.push_back(static_cast<char>(n >> (8 * i)));
    value += PackMask(m.config.trainable);
    ext.push_back({kTaskTrainable, std::move(value)});
  }
  if (!m.config.class_names.empty()) {
    const auto n = static_cast<uint32_t>(m.config.class_names.size());
    std::string value;
    for (int i = 0; i < 4; ++i) value.push_back(static_cast<char>(n >> (8 * i)));
    for (const auto& name : m.config.class_names) {
      const auto len = static_cast<uint16_t>(name.size());
      value.push_back(static_cast<char>(len & 0xff));
      value.push_back(static_cast<char>(len >> 8));
      value += name;
    }
    ext.push_back({kTaskClassNames, std::move(value)});
  }
  if (!m.model_code.empty()) {
    std::string value(m.model_code_signature.begin(), m.model_code_signature.end());
    value += m.model_code;
    ext.push_back({kTaskModelCode, std::move(value)});
  }
  if (!m.root_endorsement.empty()) ext.push_back({kTaskRootEndorsement, m.root_endorsement});
  if (m.config.dp_sampling_rate > 0) {
    ext.push_back({kTaskPrivacy, LeF64(m.config.dp_sampling_rate) + LeF64(m.config.dp_clip)});
  }
  if (!m.config.codec.empty() && m.config.codec != kCodecQuant) {
    ext.push_back({kTaskCodec, m.config.codec});
  }
  Extensions(ar, ext,
             {kTaskAskBeforeUpload, kTaskProximalMu, kTaskNormalization, kTaskTrainable,
              kTaskModelCode, kTaskClassNames, kTaskRootEndorsement, kTaskPrivacy, kTaskCodec});
  if constexpr (Archive::is_loading::value) {
    for (const auto& e : ext) {
      if (e.tag == kTaskCodec) {
        if (e.value.empty() || e.value.size() > kMaxCodecNameBytes) {
          throw cereal::Exception("codec extension's name is empty or too long");
        }
        m.config.codec = e.value;
      } else if (e.tag == kTaskPrivacy) {
        if (e.value.size() != 16) throw cereal::Exception("privacy extension is not 16 bytes");
        const double rate = GetLeF64(e.value, 0), clip = GetLeF64(e.value, 8);
        if (!(rate > 0 && rate <= 1) || !(clip > 0 && std::isfinite(clip))) {
          throw cereal::Exception("privacy extension's sampling rate or clip is out of range");
        }
        m.config.dp_sampling_rate = rate;
        m.config.dp_clip = clip;
      } else if (e.tag == kTaskAskBeforeUpload) {
        if (!e.value.empty()) throw cereal::Exception("ask-before-upload extension has a value");
        m.ask_before_upload = true;
      } else if (e.tag == kTaskProximalMu) {
        if (e.value.size() != 8) throw cereal::Exception("proximal mu extension is not 8 bytes");
        uint64_t bits = 0;
        for (int i = 0; i < 8; ++i) bits |= uint64_t{static_cast<uint8_t>(e.value[i])} << (8 * i);
        std::memcpy(&m.config.proximal_mu, &bits, 8);
      } else if (e.tag == kTaskNormalization) {
        if (e.value.empty() || e.value.size() % 8 != 0) {
          throw cereal::Exception("normalization extension is not a whole number of pairs");
        }
        auto get = [&](size_t at) {
          uint32_t bits = 0;
          for (int i = 0; i < 4; ++i) {
            bits |= uint32_t{static_cast<uint8_t>(e.value[at + i])} << (8 * i);
          }
          float f;
          std::memcpy(&f, &bits, 4);
          return f;
        };
        for (size_t at = 0; at < e.value.size(); at += 8) {
          m.config.normalize_mean.push_back(get(at));
          m.config.normalize_std.push_back(get(at + 4));
        }
      } else if (e.tag == kTaskRootEndorsement) {
        if (e.value.size() != kEnvelopeBytes) {
          throw cereal::Exception("root endorsement is not one envelope");
        }
        m.root_endorsement = e.value;
      } else if (e.tag == kTaskModelCode) {
        if (e.value.size() <= m.model_code_signature.size()) {
          throw cereal::Exception("model code extension holds no file");
        }
        std::copy(e.value.begin(), e.value.begin() + 64, m.model_code_signature.begin());
        m.model_code = e.value.substr(64);
      } else if (e.tag == kTaskTrainable) {
        if (e.value.size() < 4) throw cereal::Exception("trainable extension is too short");
        uint32_t n = 0;
        for (int i = 0; i < 4; ++i) n |= uint32_t{static_cast<uint8_t>(e.value[i])} << (8 * i);
        if (n == 0 || n > kMaxTrainableTensors) {
          throw cereal::Exception("trainable tensor count out of range");
        }
        auto kept = UnpackMask(e.value.data() + 4, e.value.size() - 4, n, &m.config.trainable);
        if (!kept.ok() || *kept == 0) {
          throw cereal::Exception("trainable bitmap is malformed or names no tensor");
        }
      } else if (e.tag == kTaskClassNames) {
        const std::string& v = e.value;
        if (v.size() < 4) throw cereal::Exception("class names extension is too short");
        uint32_t n = 0;
        for (int i = 0; i < 4; ++i) n |= uint32_t{static_cast<uint8_t>(v[i])} << (8 * i);
        if (n == 0 || n > kMaxClassNames) throw cereal::Exception("class count out of range");
        size_t at = 4;
        for (uint32_t k = 0; k < n; ++k) {
          if (v.size() - at < 2) throw cereal::Exception("class names extension is truncated");
          const size_t len =
              static_cast<uint8_t>(v[at]) | (size_t{static_cast<uint8_t>(v[at + 1])} << 8);
          at += 2;
          if (len == 0 || len > kMaxClassNameBytes || v.size() - at < len) {
            throw cereal::Exception("class name length out of range");
          }
          m.config.class_names.push_back(v.substr(at, len));
          at += len;
        }
        if (at != v.size()) throw cereal::Exception("class names extension has trailing bytes");
      }
    }
  }
}
template <class Archive>
void serialize(Archive& ar, Ready& m) {
  ar(m.update_bytes);
  NoExtensions(ar);
}
template <class Archive>
void serialize(Archive& ar, Update& m) {
  ar(m.num_examples, m.train_loss, m.train_seconds, m.codec, m.data);
  std::vector<ExtensionRecord> ext;
  if (m.contributors > 1) ext.push_back({kUpdateContributors, LeU32(m.contributors)});
  if (m.within_clip >= 0) {
    ext.push_back({kUpdateWithinClip,
                   LeU32(static_cast<uint32_t>(std::min<int64_t>(m.within_clip, UINT32_MAX)))});
  }
  Extensions(ar, ext, {kUpdateContributors, kUpdateWithinClip});
  if constexpr (Archive::is_loading::value) {
    m.contributors = 1;
    m.within_clip = -1;
    for (const auto& e : ext) {
      if (e.value.size() != 4) throw cereal::Exception("update extension is not 4 bytes");
      const uint32_t n = GetLeU32(e.value, 0);
      if (e.tag == kUpdateWithinClip) {
        m.within_clip = n;
        continue;
      }
      if (n < 2) throw cereal::Exception("contributors extension below 2");
      m.contributors = n;
    }
    if (m.within_clip > static_cast<int64_t>(m.contributors)) {
      throw cereal::Exception("within-clip count above the contributors");
    }
  }
}
template <class Archive>
void serialize(Archive& ar, Reply& m) {
  ar(m.in_reply_to, m.reason, m.message);
  NoExtensions(ar);
}
template <class Archive>
void serialize(Archive& ar, Done& m) {
  ar(m.rounds_completed, m.final_accuracy, m.message);
  NoExtensions(ar);
}

namespace {

// Counts the bytes an archive writes, storing none.
class CountingBuf final : public std::streambuf {
 public:
  size_t count() const { return n_; }

 protected:
  std::streamsize xsputn(const char*, std::streamsize n) override {
    n_ += static_cast<size_t>(n);
    return n;
  }
  int_type overflow(int_type c) override {
    if (!traits_type::eq_int_type(c, traits_type::eof())) ++n_;
    return traits_type::not_eof(c);
  }

 private:
  size_t n_{0};
};

// Hands every write to a function, storing nothing.
class SinkBuf final : public std::streambuf {
 public:
  explicit SinkBuf(const std::function<void(const char*, size_t)>& write) : write_(write) {}

 protected:
  std::streamsize xsputn(const char* p, std::streamsize n) override {
    write_(p, static_cast<size_t>(n));
    return n;
  }
  int_type overflow(int_type c) override {
    if (!traits_type::eq_int_type(c, traits_type::eof())) {
      const char ch = traits_type::to_char_type(c);
      write_(&ch, 1);
    }
    return traits_type::not_eof(c);
  }

 private:
  const std::function<void(const char*, size_t)>& write_;
};

// Writes into a fixed buffer; a write past its end fails (cereal throws).
class FixedBuf final : public std::streambuf {
 public:
  FixedBuf(char* p, size_t n) { setp(p, p + n); }
};

// Serializes twice, once to count and once into a string of exactly that
// size: a payload as large as the model is allocated once, not grown by
// doubling and then copied out of a stringstream (3x its size at the peak).
template <typename T>
std::string EncodeAny(const T& m) {
  CountingBuf counter;
  {
    std::ostream os(&counter);
    cereal::BinaryOutputArchive ar(os);
    ar(m);
  }
  std::string out(counter.count(), '\0');
  FixedBuf buf(out.data(), out.size());
  {
    std::ostream os(&buf);
    cereal::BinaryOutputArchive ar(os);
    ar(m);
  }
  return out;
}

template <typename T>
Status DecodeAny(const std::string& bytes, T* out, const char* what) {
  try {
    cereal::BoundedInputArchive ar(bytes.data(), bytes.size());
    T m;
    ar(m);
    if (ar.remaining() != 0) {
      return Status::Corruption(std::string(what) + " payload has " +
                                std::to_string(ar.remaining()) + " trailing bytes");
    }
    *out = std::move(m);
    return Status::OK();
  } catch (const cereal::Exception& e) {
    return Status::Corruption(std::string(what) + " payload malformed", e.what());
  } catch (const std::bad_alloc&) {
    return Status::Corruption(std::string(what) + " payload malformed", "allocation refused");
  } catch (const std::length_error& e) {
    return Status::Corruption(std::string(what) + " payload malformed", e.what());
  }
}

}  // namespace

std::string Encode(const Hello& m) { return EncodeAny(m); }
std::string Encode(const Task& m) { return EncodeAny(m); }
std::string Encode(const Update& m) { return EncodeAny(m); }
std::string Encode(const Ready& m) { return EncodeAny(m); }
std::string Encode(const Reply& m) { return EncodeAny(m); }
std::string Encode(const Done& m) { return EncodeAny(m); }
std::string Encode(const ModelState& m) { return EncodeAny(m); }
std::string Encode(const CompactModel& m) { return EncodeAny(m); }

void EncodeTo(const CompactModel& m, const std::function<void(const char*, size_t)>& write) {
  SinkBuf buf(write);
  std::ostream os(&buf);
  cereal::BinaryOutputArchive ar(os);
  ar(m);
}

Status Decode(const std::string& b, Hello* out) { return DecodeAny(b, out, "HELLO"); }
Status Decode(const std::string& b, Task* out) { return DecodeAny(b, out, "TASK"); }
Status Decode(const std::string& b, Update* out) { return DecodeAny(b, out, "UPDATE"); }
Status Decode(const std::string& b, Ready* out) { return DecodeAny(b, out, "READY"); }
Status Decode(const std::string& b, Reply* out) { return DecodeAny(b, out, "REPLY"); }
Status Decode(const std::string& b, Done* out) { return DecodeAny(b, out, "DONE"); }
Status Decode(const std::string& b, ModelState* out) {
  FL_RETURN_IF_ERROR(DecodeAny(b, out, "model"));
  return CheckModelState(*out);
}

}  // namespace wire
}  // namespace fl
