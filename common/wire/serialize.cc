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
#include "common/wire/reader.h"

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
  Writer w;
  w.PutU32(v);
  return w.Release();
}
static uint32_t GetLeU32(const std::string& s) {
  uint32_t v = 0;
  Reader(s.data(), s.size()).GetU32(&v);
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
        m.devices = GetLeU32(e.value);
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
// The trainable bitmap: tensor count u32, then that many bits (PackMask).
static void ReadTrainable(const std::string& v, TrainConfig* c) {
  Reader r(v.data(), v.size());
  uint32_t n = 0;
  if (!r.GetU32(&n)) throw cereal::Exception("trainable extension is too short");
  if (n == 0 || n > kMaxTrainableTensors) {
    throw cereal::Exception("trainable tensor count out of range");
  }
  auto kept = UnpackMask(v.data() + 4, v.size() - 4, n, &c->trainable);
  if (!kept.ok() || *kept == 0) {
    throw cereal::Exception("trainable bitmap is malformed or names no tensor");
  }
}

// The class names: count u32, then per name its length u16 and its bytes.
static void ReadClassNames(const std::string& v, TrainConfig* c) {
  Reader r(v.data(), v.size());
  uint32_t n = 0;
  if (!r.GetU32(&n)) throw cereal::Exception("class names extension is too short");
  if (n == 0 || n > kMaxClassNames) throw cereal::Exception("class count out of range");
  for (uint32_t k = 0; k < n; ++k) {
    std::string name;
    if (!r.GetString16(&name, kMaxClassNameBytes) || name.empty()) {
      throw cereal::Exception("class name length out of range");
    }
    c->class_names.push_back(std::move(name));
  }
  if (r.remaining() != 0) throw cereal::Exception("class names extension has trailing bytes");
}

// A TASK's optional fields (messages.h), those it has.
static std::vector<ExtensionRecord> TaskExtensions(const Task& m) {
  std::vector<ExtensionRecord> ext;
  const TrainConfig& c = m.config;
  auto record = [&ext](uint16_t tag, const std::function<void(Writer*)>& put) {
    Writer w;
    put(&w);
    ext.push_back({tag, w.Release()});
  };
  if (m.ask_before_upload) ext.push_back({kTaskAskBeforeUpload, ""});
  if (c.proximal_mu != 0) record(kTaskProximalMu, [&](Writer* w) { w->PutF64(c.proximal_mu); });
  if (!c.normalize_mean.empty()) {
    record(kTaskNormalization, [&](Writer* w) {
      for (size_t i = 0; i < c.normalize_mean.size(); ++i) {
        w->PutF32(c.normalize_mean[i]);
        w->PutF32(i < c.normalize_std.size() ? c.normalize_std[i] : 0.0f);
      }
    });
  }
  if (!c.trainable.empty()) {
    record(kTaskTrainable, [&](Writer* w) {
      w->PutU32(static_cast<uint32_t>(c.trainable.size()));
      const std::string bits = PackMask(c.trainable);
      w->PutBytes(bits.data(), bits.size());
    });
  }
  if (!c.class_names.empty()) {
    record(kTaskClassNames, [&](Writer* w) {
      w->PutU32(static_cast<uint32_t>(c.class_names.size()));
      for (const auto& name : c.class_names) w->PutString16(name);
    });
  }
  if (!m.model_code.empty()) {
    std::string value(m.model_code_signature.begin(), m.model_code_signature.end());
    ext.push_back({kTaskModelCode, value + m.model_code});
  }
  if (!m.root_endorsement.empty()) ext.push_back({kTaskRootEndorsement, m.root_endorsement});
  if (c.dp_sampling_rate > 0) {
    record(kTaskPrivacy, [&](Writer* w) {
      w->PutF64(c.dp_sampling_rate);
      w->PutF64(c.dp_clip);
    });
  }
  if (!c.codec.empty() && c.codec != kCodecQuant) ext.push_back({kTaskCodec, c.codec});
  return ext;
}

// Reads a TASK's optional field; throws (cereal::Exception) on a malformed one.
static void ReadTaskExtension(const ExtensionRecord& e, Task* m) {
  TrainConfig& c = m->config;
  Reader r(e.value.data(), e.value.size());
  auto fail = [](const char* what) { throw cereal::Exception(what); };
  switch (e.tag) {
    case kTaskCodec:
      if (e.value.empty() || e.value.size() > kMaxCodecNameBytes) {
        fail("codec extension's name is empty or too long");
      }
      c.codec = e.value;
      return;
    case kTaskPrivacy: {
      double rate = 0, clip = 0;
      if (!r.GetF64(&rate) || !r.GetF64(&clip) || r.remaining() != 0) {
        fail("privacy extension is not 16 bytes");
      }
      if (!(rate > 0 && rate <= 1) || !(clip > 0 && std::isfinite(clip))) {
        fail("privacy extension's sampling rate or clip is out of range");
      }
      c.dp_sampling_rate = rate;
      c.dp_clip = clip;
      return;
    }
    case kTaskAskBeforeUpload:
      if (!e.value.empty()) fail("ask-before-upload extension has a value");
      m->ask_before_upload = true;
      return;
    case kTaskProximalMu:
      if (!r.GetF64(&c.proximal_mu) || r.remaining() != 0) {
        fail("proximal mu extension is not 8 bytes");
      }
      return;
    case kTaskNormalization:
      if (e.value.empty() || e.value.size() % 8 != 0) {
        fail("normalization extension is not a whole number of pairs");
      }
      while (r.remaining() > 0) {
        float mean = 0, sd = 0;
        r.GetF32(&mean);
        r.GetF32(&sd);
        c.normalize_mean.push_back(mean);
        c.normalize_std.push_back(sd);
      }
      return;
    case kTaskRootEndorsement:
      if (e.value.size() != kEnvelopeBytes) fail("root endorsement is not one envelope");
      m->root_endorsement = e.value;
      return;
    case kTaskModelCode:
      if (e.value.size() <= m->model_code_signature.size()) {
        fail("model code extension holds no file");
      }
      std::copy(e.value.begin(), e.value.begin() + 64, m->model_code_signature.begin());
      m->model_code = e.value.substr(64);
      return;
    case kTaskTrainable:
      ReadTrainable(e.value, &c);
      return;
    case kTaskClassNames:
      ReadClassNames(e.value, &c);
      return;
    default:
      return;  // (Extensions keeps only the known tags)
  }
}

template <class Archive>
void serialize(Archive& ar, Task& m) {
  ar(m.config, m.model);
  std::vector<ExtensionRecord> ext;
  if constexpr (!Archive::is_loading::value) ext = TaskExtensions(m);
  Extensions(ar, ext,
             {kTaskAskBeforeUpload, kTaskProximalMu, kTaskNormalization, kTaskTrainable,
              kTaskModelCode, kTaskClassNames, kTaskRootEndorsement, kTaskPrivacy, kTaskCodec});
  if constexpr (Archive::is_loading::value) {
    for (const auto& e : ext) ReadTaskExtension(e, &m);
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
      const uint32_t n = GetLeU32(e.value);
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
