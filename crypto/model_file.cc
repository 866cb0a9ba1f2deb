#include "crypto/model_file.h"

#include <openssl/crypto.h>

#include <algorithm>
#include <cstring>

#include "common/file_util.h"
#include "common/quant_codec.h"
#include "common/text.h"
#include "common/wire/limits.h"
#include "common/wire/reader.h"
#include "crypto/sha256.h"

namespace fl {
namespace {

constexpr char kMagic[4] = {'F', 'L', 'M', '1'};
constexpr uint32_t kFormat = 1;
constexpr uint32_t kFormatSigned = 2;
// With a metadata block.
constexpr uint32_t kFormatMeta = 3;
constexpr uint32_t kFormatMetaSigned = 4;
// Longest metadata block (class names and normalisation pairs of the largest
// data sets fedge takes fit in it many times over).
constexpr uint32_t kMaxMeta = 1u << 20;
constexpr size_t kSignatureTrailer = kEd25519PublicKeyBytes + kEd25519SignatureBytes;
// Bounds on header fields, far above any real model, so a corrupt length is
// reported as such instead of being tried.
constexpr uint32_t kMaxName = 1024;
constexpr uint32_t kMaxDims = 8;

// The format field (bytes 4..8), or 0 when the file is too short to have one.
uint32_t FormatOf(const std::string& bytes) {
  if (bytes.size() < 8) return 0;
  wire::Reader r(bytes.data() + 4, 4);
  uint32_t f = 0;
  return r.GetU32(&f) ? f : 0;
}

// Bytes after the version digest.
size_t TrailerBytes(const std::string& bytes) {
  const uint32_t f = FormatOf(bytes);
  return f == kFormatSigned || f == kFormatMetaSigned ? kSignatureTrailer : 0;
}

// Bytes before the version digest, or 0 when the file is too short to hold a
// header, the digest and its trailer.
size_t BodyBytes(const std::string& bytes) {
  const size_t tail = kSha256DigestBytes + TrailerBytes(bytes);
  return bytes.size() < 8 + tail ? 0 : bytes.size() - tail;
}

void PutString32(wire::Writer* w, const std::string& s) {
  w->PutU32(static_cast<uint32_t>(s.size()));
  w->PutBytes(s.data(), s.size());
}

bool GetString32(wire::Reader* r, std::string* out) {
  uint32_t n;
  const uint8_t* p;
  if (!r->GetU32(&n) || n > kMaxName || !r->Skip(n, &p)) return false;
  out->assign(reinterpret_cast<const char*>(p), n);
  return true;
}

std::string EncodeMeta(const ModelFileMeta& meta) {
  std::string text;
  if (!meta.normalization.empty()) text += "normalize=" + meta.normalization.ToString() + "\n";
  for (const auto& name : meta.class_names) text += "class=" + name + "\n";
  return text;
}

Status DecodeMeta(const std::string& text, ModelFileMeta* meta) {
  for (const std::string& line : SplitList(text, '\n')) {
    if (line.empty()) continue;
    const size_t eq = line.find('=');
    const std::string key = line.substr(0, eq), value = eq == line.npos ? "" : line.substr(eq + 1);
    if (key == "normalize") {
      auto n = ParseNormalization(value);
      if (!n.ok()) {
        return Status::Corruption("metadata: normalisation '" + Printable(value) +
                                  "' does not parse");
      }
      meta->normalization = *n;
    } else if (key == "class") {
      // What a TASK may carry (common/wire/limits.h), printable.
      const bool printable = std::all_of(value.begin(), value.end(), [](char c) {
        return static_cast<unsigned char>(c) >= 0x20 && c != 0x7f;
      });
      if (value.empty() || value.size() > wire::kMaxClassNameBytes || !printable) {
        return Status::Corruption("metadata: class name '" + Printable(value) +
                                  "' is empty, longer than 255 bytes or not printable");
      }
      if (std::find(meta->class_names.begin(), meta->class_names.end(), value) !=
          meta->class_names.end()) {
        return Status::Corruption("metadata: class '" + Printable(value) + "' appears twice");
      }
      if (meta->class_names.size() == wire::kMaxClassNames) {
        return Status::Corruption("metadata: more than 256 classes");
      }
      meta->class_names.push_back(value);
    }
    // Other keys are a newer writer's: skipped.
  }
  return Status::OK();
}

}  // namespace

std::string EncodeModelFile(const ModelState& state, const ModelFileOptions& options,
                            const SigningKey* signer) {
  wire::Writer w;
  w.PutBytes(kMagic, 4);
  const std::string meta = EncodeMeta(options.meta);
  w.PutU32(meta.empty() ? (signer ? kFormatSigned : kFormat)
                        : (signer ? kFormatMetaSigned : kFormatMeta));
  PutString32(&w, state.architecture);
  w.PutU32(static_cast<uint32_t>(state.tensors.size()));
  for (const auto& t : state.tensors) {
    PutString32(&w, t.name);
    w.PutU32(static_cast<uint32_t>(t.shape.size()));
    for (int64_t d : t.shape) w.PutU64(static_cast<uint64_t>(d));
    w.PutU8(t.mask.empty() ? 0 : 1);
    if (!t.mask.empty()) {
      const std::string bits = PackMask(t.mask);
      w.PutBytes(bits.data(), bits.size());
    }
    const std::vector<float> kept = GatherKept(t);
    QuantOptions q;
    q.bits = options.value_bits;
    q.block = options.block;
    q.stochastic = false;
    const std::string values = QuantEncode(kept.data(), kept.size(), q);
    w.PutU64(values.size());
    w.PutBytes(values.data(), values.size());
  }
  if (!meta.empty()) {
    w.PutU32(static_cast<uint32_t>(meta.size()));
    w.PutBytes(meta.data(), meta.size());
  }
  std::string out = w.Release();
  const Sha256Digest d = Sha256(out);
  out.append(reinterpret_cast<const char*>(d.data()), d.size());
  if (signer) {
    const Ed25519Signature sig = signer->Sign(d.data(), d.size());
    out.append(reinterpret_cast<const char*>(signer->public_key().data()), kEd25519PublicKeyBytes);
    out.append(reinterpret_cast<const char*>(sig.data()), sig.size());
  }
  return out;
}

Result<std::array<uint8_t, 32>> ModelFileVersion(const std::string& bytes) {
  const size_t body = BodyBytes(bytes);
  if (body == 0) return Status::Corruption("model file truncated");
  std::array<uint8_t, 32> v;
  std::memcpy(v.data(), bytes.data() + body, v.size());
  return v;
}

Result<std::optional<Ed25519PublicKey>> ModelFileSigner(const std::string& bytes) {
  const size_t body = BodyBytes(bytes);
  if (body == 0) return Status::Corruption("model file truncated");
  if (TrailerBytes(bytes) == 0) return std::optional<Ed25519PublicKey>();
  Ed25519PublicKey pub;
  std::memcpy(pub.data(), bytes.data() + body + kSha256DigestBytes, pub.size());
  return std::optional<Ed25519PublicKey>(pub);
}

namespace {

// The signature trailer, when there is one: the signer's key and its
// signature over `digest` (the body's); with `trusted`, it must be that key's.
Status CheckFileSignature(const std::string& bytes, size_t body, const Sha256Digest& digest,
                          const Ed25519PublicKey* trusted) {
  if (!TrailerBytes(bytes)) {
    if (!trusted) return Status::OK();
    return Status::Unauthenticated("is not signed; expected a signature by node " +
                                   NodeId(*trusted));
  }
  Ed25519PublicKey signer;
  Ed25519Signature sig;
  const char* t = bytes.data() + body + kSha256DigestBytes;
  std::memcpy(signer.data(), t, signer.size());
  std::memcpy(sig.data(), t + signer.size(), sig.size());
  if (trusted && CRYPTO_memcmp(signer.data(), trusted->data(), signer.size()) != 0) {
    return Status::Unauthenticated("signed by node " + NodeId(signer) + ", expected " +
                                   NodeId(*trusted));
  }
  if (!Ed25519Verify(signer, digest.data(), digest.size(), sig).ok()) {
    return Status::Unauthenticated("signature does not verify");
  }
  return Status::OK();
}

// One tensor (the `i`-th): name, shape, mask, then its kept values in the
// quantized codec. An error names what is bad (Corruption, no path).
Status ReadTensor(wire::Reader* r, uint32_t i, TensorState* t) {
  uint32_t ndims = 0;
  const std::string where = "tensor " + std::to_string(i);
  if (!GetString32(r, &t->name) || !r->GetU32(&ndims) || ndims > kMaxDims) {
    return Status::Corruption(where + ": bad name or dimension count");
  }
  const std::string named = where + " ('" + Printable(t->name) + "'): ";
  uint64_t n = 1;
  for (uint32_t d = 0; d < ndims; ++d) {
    uint64_t dim = 0;
    if (!r->GetU64(&dim)) return Status::Corruption(named + "truncated shape");
    if (dim > (uint64_t{1} << 32) || (dim && n > (uint64_t{1} << 34) / dim)) {
      return Status::Corruption(named + "shape too large");
    }
    n *= dim;
    t->shape.push_back(static_cast<int64_t>(dim));
  }
  uint8_t has_mask = 0;
  if (!r->GetU8(&has_mask) || has_mask > 1) return Status::Corruption(where + ": bad mask flag");
  if (n > r->remaining() * 8 + 8) return Status::Corruption(named + "shape exceeds file");
  size_t kept = n;
  if (has_mask) {
    const uint8_t* bits;
    if (!r->Skip((n + 7) / 8, &bits)) return Status::Corruption(named + "truncated mask");
    auto k = UnpackMask(reinterpret_cast<const char*>(bits), (n + 7) / 8, n, &t->mask);
    if (!k.ok()) return Status::Corruption(named + k.status().message());
    kept = *k;
  }
  uint64_t vlen = 0;
  const uint8_t* vp;
  if (!r->GetU64(&vlen) || vlen > r->remaining() || !r->Skip(vlen, &vp)) {
    return Status::Corruption(named + "truncated values");
  }
  std::vector<float> values;
  Status st = QuantDecode(std::string(reinterpret_cast<const char*>(vp), vlen), kept, &values);
  if (!st.ok()) return Status::Corruption(named + st.message());
  t->values.assign(n, 0.0f);
  size_t j = 0;
  for (size_t k = 0; k < n; ++k) {
    if (!has_mask || t->mask[k]) t->values[k] = values[j++];
  }
  return Status::OK();
}

}  // namespace

Result<ModelState> DecodeModelFile(const std::string& name, const std::string& bytes,
                                   const Ed25519PublicKey* trusted_signer, ModelFileMeta* meta) {
  auto corrupt = [&](const std::string& what) { return Status::Corruption(name, what); };
  const size_t body = BodyBytes(bytes);
  if (body == 0) return corrupt("truncated (" + std::to_string(bytes.size()) + " bytes)");
  if (std::memcmp(bytes.data(), kMagic, 4) != 0) {
    return corrupt("not a fedge model file (bad magic)");
  }
  const Sha256Digest digest = Sha256(bytes.data(), body);
  if (CRYPTO_memcmp(digest.data(), bytes.data() + body, kSha256DigestBytes) != 0) {
    return corrupt("SHA-256 mismatch: the file is truncated or altered");
  }
  if (Status st = CheckFileSignature(bytes, body, digest, trusted_signer); !st.ok()) {
    return Status::Unauthenticated(name, st.message());
  }
  wire::Reader r(bytes.data() + 4, body - 4);
  uint32_t format = 0, count = 0;
  ModelState m;
  if (!r.GetU32(&format)) return corrupt("truncated header");
  if (format < kFormat || format > kFormatMetaSigned) {
    return corrupt("format version " + std::to_string(format) + " unknown");
  }
  if (!GetString32(&r, &m.architecture) || !r.GetU32(&count)) {
    return corrupt("truncated header");
  }
  for (uint32_t i = 0; i < count; ++i) {
    TensorState t;
    if (Status st = ReadTensor(&r, i, &t); !st.ok()) return corrupt(st.message());
    m.tensors.push_back(std::move(t));
  }
  ModelFileMeta found;
  if (format == kFormatMeta || format == kFormatMetaSigned) {
    uint32_t len = 0;
    const uint8_t* p;
    if (!r.GetU32(&len) || len > kMaxMeta || !r.Skip(len, &p)) {
      return corrupt("truncated metadata");
    }
    Status st = DecodeMeta(std::string(reinterpret_cast<const char*>(p), len), &found);
    if (!st.ok()) return corrupt(st.message());
  }
  if (r.remaining() != 0) return corrupt(std::to_string(r.remaining()) + " unexpected bytes");
  Status st = CheckModelState(m);
  if (!st.ok()) return corrupt(st.message());
  if (meta) *meta = std::move(found);
  return m;
}

Status WriteModelFile(const std::string& path, const ModelState& state,
                      const ModelFileOptions& options, const SigningKey* signer) {
  return WriteFileAtomic(path, EncodeModelFile(state, options, signer));
}

Result<ModelState> ReadModelFile(const std::string& path, const Ed25519PublicKey* trusted_signer,
                                 ModelFileMeta* meta) {
  auto bytes = ReadFile(path);
  if (!bytes.ok()) return bytes.status();
  return DecodeModelFile(path, *bytes, trusted_signer, meta);
}

}  // namespace fl
