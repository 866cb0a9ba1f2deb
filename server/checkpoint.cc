#include "server/checkpoint.h"

#include <algorithm>
#include <array>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <optional>
#include <utility>

#include "common/wire/reader.h"
#include "common/wire/serialize.h"
#include "crypto/sha256.h"

namespace fl {
namespace {

constexpr char kCheckpointMagic[4] = {'F', 'L', 'C', 'K'};
constexpr uint32_t kCheckpointFormat = 6;
// Longest strategy name a checkpoint may carry.
constexpr uint32_t kMaxStrategyName = 64;
// Longest pruning schedule description a checkpoint may carry.
constexpr uint32_t kMaxPruningText = 1024;
// Settings added to the run settings after format 6 first shipped, with the
// value a run had before it could set them.
// (--codec was written only when not q, before the options schema wrote
// every run setting.)
const std::array<std::pair<const char*, const char*>, 3> kSettingDefaults = {{
    {"--over-selection", "1"},
    {"--mode", "sync"},
    {"--codec", "q"},
}};
// Longest run settings text a checkpoint may carry.
constexpr uint32_t kMaxSettingsText = 1u << 20;

// "--flag=value" lines, in order.
std::vector<std::pair<std::string, std::string>> SettingLines(const std::string& text) {
  std::vector<std::pair<std::string, std::string>> lines;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    const std::string line = text.substr(start, end - start);
    const size_t eq = line.find('=');
    if (!line.empty()) {
      lines.emplace_back(line.substr(0, eq), eq == std::string::npos ? "" : line.substr(eq + 1));
    }
    start = end + 1;
  }
  return lines;
}
constexpr size_t kSignatureBlockBytes = 1 + kEd25519PublicKeyBytes + kEd25519SignatureBytes;

}  // namespace

Status WriteCheckpoint(const std::string& path, const Checkpoint& c, const SigningKey* signer) {
  const std::string model = wire::Encode(c.model);
  wire::Writer w;
  w.PutBytes(kCheckpointMagic, 4);
  w.PutU32(kCheckpointFormat);
  w.PutU64(c.round);
  w.PutU64(c.seed);
  uint64_t norm_bits;
  std::memcpy(&norm_bits, &c.reference_norm, 8);
  w.PutU64(norm_bits);
  w.PutU32(static_cast<uint32_t>(c.pending_rows.size()));
  for (const auto& row : c.pending_rows) {
    w.PutU64(row.round);
    w.PutU32(row.participants);
    w.PutU64(row.upload_bytes);
    w.PutU64(row.download_bytes);
    uint64_t bits;
    std::memcpy(&bits, &row.round_seconds, 8);
    w.PutU64(bits);
    std::memcpy(&bits, &row.max_delta_norm, 8);
    w.PutU64(bits);
  }
  w.PutU32(static_cast<uint32_t>(c.strategy.size()));
  w.PutBytes(c.strategy.data(), c.strategy.size());
  w.PutU64(c.strategy_state.size());
  w.PutBytes(c.strategy_state.data(), c.strategy_state.size());
  w.PutU32(static_cast<uint32_t>(c.pruning.size()));
  w.PutBytes(c.pruning.data(), c.pruning.size());
  w.PutU32(static_cast<uint32_t>(c.settings.size()));
  w.PutBytes(c.settings.data(), c.settings.size());
  w.PutU64(model.size());
  w.PutBytes(model.data(), model.size());
  std::string body = w.Release();
  // The signature block: over the SHA-256 of everything before it.
  const Sha256Digest signed_digest = Sha256(body);
  body.push_back(signer ? 1 : 0);
  if (signer) {
    const Ed25519Signature sig = signer->Sign(signed_digest.data(), signed_digest.size());
    body.append(reinterpret_cast<const char*>(signer->public_key().data()), kEd25519PublicKeyBytes);
    body.append(reinterpret_cast<const char*>(sig.data()), sig.size());
  } else {
    body.append(kEd25519PublicKeyBytes + kEd25519SignatureBytes, '\0');
  }
  const Sha256Digest digest = Sha256(body);
  body.append(reinterpret_cast<const char*>(digest.data()), digest.size());
  // Oldest first, so a crash between the renames loses no generation but the
  // oldest; ReadNewestCheckpoint reads whichever are there.
  for (int g = kCheckpointGenerations - 1; g >= 1; --g) {
    const std::string from = g == 1 ? path : path + "." + std::to_string(g - 1);
    const std::string to = path + "." + std::to_string(g);
    if (std::rename(from.c_str(), to.c_str()) != 0 && errno != ENOENT) {
      return Status::IOError(from, std::string("rename to ") + to + ": " + std::strerror(errno));
    }
  }
  return WriteFileAtomic(path, body);
}

std::vector<std::string> SettingsDifferences(const std::string& checkpoint,
                                             const std::string& run) {
  const auto before = SettingLines(checkpoint);
  const auto now = SettingLines(run);
  auto find = [](const std::vector<std::pair<std::string, std::string>>& lines,
                 const std::string& key) -> const std::string* {
    for (const auto& [k, v] : lines) {
      if (k == key) return &v;
    }
    return nullptr;
  };
  std::vector<std::string> out;
  for (const auto& [key, value] : now) {
    const std::string* was = find(before, key);
    if (!was) {
      // A setting newer than the checkpoint's writer: the run had its default.
      const auto d = std::find_if(kSettingDefaults.begin(), kSettingDefaults.end(),
                                  [&](const auto& kv) { return key == kv.first; });
      if (d == kSettingDefaults.end()) {
        out.push_back(key + ": not in the checkpoint, " + value + " in this run");
      } else if (d->second != value) {
        out.push_back(key + ": " + d->second + " (the default) in the checkpoint, " + value +
                      " in this run");
      }
    } else if (*was != value) {
      out.push_back(key + ": " + *was + " in the checkpoint, " + value + " in this run");
    }
  }
  for (const auto& [key, value] : before) {
    if (!find(now, key)) out.push_back(key + ": " + value + " in the checkpoint, not in this run");
  }
  return out;
}

Result<Checkpoint> ReadCheckpoint(const std::string& path, const Ed25519PublicKey* trusted) {
  auto read = ReadFile(path);
  if (!read.ok()) return read.status();
  return DecodeCheckpoint(path, *read, trusted);
}

namespace {

// The header after format, round and seed (each part from the format that
// added it): reference norm (2), pending rows (3), strategy and its state
// (4), pruning schedule (5), run settings (6). An error names what is bad.
Status ReadHeader(wire::Reader* r, uint32_t format, Checkpoint* c) {
  if (format >= 2) {
    if (!r->GetF64(&c->reference_norm)) return Status::Corruption("truncated header");
    if (!(std::isfinite(c->reference_norm) && c->reference_norm >= 0)) {
      return Status::Corruption("reference norm is not a finite non-negative number");
    }
  }
  if (format >= 3) {
    uint32_t rows = 0;
    if (!r->GetU32(&rows) || rows > 64) return Status::Corruption("bad pending rows");
    for (uint32_t i = 0; i < rows; ++i) {
      Checkpoint::Row row;
      if (!r->GetU64(&row.round) || !r->GetU32(&row.participants) ||
          !r->GetU64(&row.upload_bytes) || !r->GetU64(&row.download_bytes) ||
          !r->GetF64(&row.round_seconds) || !r->GetF64(&row.max_delta_norm)) {
        return Status::Corruption("truncated pending rows");
      }
      c->pending_rows.push_back(row);
    }
  }
  // A u32 length and that many bytes, at most `max`.
  auto get_text = [r](uint64_t max, std::string* out, bool wide = false) {
    uint64_t len = 0;
    uint32_t len32 = 0;
    if (wide ? !r->GetU64(&len) : !r->GetU32(&len32)) return false;
    if (!wide) len = len32;
    if (len > max || r->remaining() < len) return false;
    out->resize(len);
    r->GetBytes(out->data(), len);
    return true;
  };
  if (format >= 4) {
    if (!get_text(kMaxStrategyName, &c->strategy) || c->strategy.empty()) {
      return Status::Corruption("bad strategy name");
    }
    if (!get_text(r->remaining(), &c->strategy_state, /*wide=*/true)) {
      return Status::Corruption("bad strategy state length");
    }
  }
  c->has_pruning = format >= 5;
  if (format >= 5 && !get_text(kMaxPruningText, &c->pruning)) {
    return Status::Corruption("bad pruning schedule");
  }
  if (format >= 6 && !get_text(kMaxSettingsText, &c->settings)) {
    return Status::Corruption("bad run settings");
  }
  return Status::OK();
}

// The signature block of format 3 and later (flag u8 | signer's key | its
// signature over the SHA-256 of what precedes the block): with a `trusted`
// key, the checkpoint must be signed by it. `*is_signed` gets the flag.
Status CheckSignature(const std::string& bytes, size_t body_len, size_t sig_block,
                      const Ed25519PublicKey* trusted, bool* is_signed) {
  const char* block = bytes.data() + body_len - sig_block;
  const uint8_t flag = static_cast<uint8_t>(block[0]);
  if (flag > 1) return Status::Corruption("bad signature flag");
  *is_signed = flag == 1;
  if (!trusted) return Status::OK();
  Ed25519PublicKey signer;
  Ed25519Signature sig;
  std::memcpy(signer.data(), block + 1, signer.size());
  std::memcpy(sig.data(), block + 1 + signer.size(), sig.size());
  const Sha256Digest signed_digest = Sha256(bytes.data(), body_len - sig_block);
  if (!*is_signed || signer != *trusted ||
      !Ed25519Verify(*trusted, signed_digest.data(), signed_digest.size(), sig).ok()) {
    return Status::Unauthenticated(
        *is_signed ? "signed by another key than this server's"
                   : "not signed; this server (--key) only resumes from checkpoints it signed "
                     "itself");
  }
  return Status::OK();
}

}  // namespace

Result<Checkpoint> DecodeCheckpoint(const std::string& path, const std::string& bytes,
                                    const Ed25519PublicKey* trusted) {
  const size_t min_header = 4 + 4 + 8 + 8 + 8;
  if (bytes.size() < min_header + kSha256DigestBytes) {
    return Status::Corruption(path,
                              "truncated checkpoint (" + std::to_string(bytes.size()) + " bytes)");
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
  if (!r.GetU32(&format) || !r.GetU64(&c.round) || !r.GetU64(&c.seed)) {
    return Status::Corruption(path, "truncated header");
  }
  if (format < 1 || format > kCheckpointFormat) {
    return Status::Corruption(path,
                              "checkpoint format " + std::to_string(format) + " not supported");
  }
  if (Status st = ReadHeader(&r, format, &c); !st.ok()) {
    return Status::Corruption(path, st.message());
  }
  if (!r.GetU64(&model_len)) return Status::Corruption(path, "truncated header");
  const size_t header = body_len - r.remaining();
  const size_t sig_block = format >= 3 ? kSignatureBlockBytes : 0;
  if (r.remaining() < sig_block) return Status::Corruption(path, "truncated signature");
  bool is_signed = false;
  if (format >= 3) {
    Status st = CheckSignature(bytes, body_len, sig_block, trusted, &is_signed);
    if (!st.ok()) return st.code() == Status::Code::kUnauthenticated
                             ? Status::Unauthenticated(path, st.message())
                             : Status::Corruption(path, st.message());
  }
  if (trusted && !is_signed) {
    return Status::Unauthenticated(
        path, "not signed; this server (--key) only resumes from checkpoints it signed itself");
  }
  if (model_len != r.remaining() - sig_block) {
    return Status::Corruption(
        path, "model length " + std::to_string(model_len) + " does not match the file");
  }
  Status st = wire::Decode(bytes.substr(header, model_len), &c.model);
  if (!st.ok()) return st.WithContext(path);
  st = CheckValueRange(c.model);
  if (!st.ok()) return Status::Corruption(path, st.message());
  return c;
}

Result<Checkpoint> ReadNewestCheckpoint(const std::string& path, std::string* used,
                                        std::vector<std::string>* refused,
                                        const Ed25519PublicKey* trusted) {
  std::optional<Status> newest_error;
  for (int g = 0; g < kCheckpointGenerations; ++g) {
    const std::string file = g == 0 ? path : path + "." + std::to_string(g);
    auto c = ReadCheckpoint(file, trusted);
    if (c.ok()) {
      if (used) *used = file;
      return c;
    }
    if (c.status().IsNotFound()) continue;
    if (refused) refused->push_back(c.status().ToString());
    if (!newest_error) newest_error = c.status();
  }
  if (newest_error) return *newest_error;
  return Status::NotFound(path, "no checkpoint");
}

}  // namespace fl
