#include "crypto/identity.h"

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>

#include <cstring>
#include <memory>

#include "common/file_util.h"

namespace fl {
namespace {

const char kZ85Chars[] =
    "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";
const char kCurveSecretTag[] = "curve-secret-key:";
const char kCurvePublicTag[] = "curve-public-key:";

using PkeyPtr = std::unique_ptr<EVP_PKEY, void (*)(EVP_PKEY*)>;

// Finds the line "TAG <value>" in `text` and returns the value with spaces
// trimmed; nullopt when there is no such line.
std::optional<std::string> TaggedLine(const std::string& text, const char* tag) {
  size_t pos = 0;
  const size_t tag_len = std::strlen(tag);
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    if (text.compare(pos, tag_len, tag) == 0) {
      size_t b = pos + tag_len, e = end;
      while (b < e && (text[b] == ' ' || text[b] == '\t')) ++b;
      while (e > b && (text[e - 1] == ' ' || text[e - 1] == '\r' || text[e - 1] == '\t')) --e;
      return text.substr(b, e - b);
    }
    pos = end + 1;
  }
  return std::nullopt;
}

Result<CurveKey> ParseCurveKey(const std::string& path, const std::string& z85) {
  auto raw = Z85Decode(z85);
  if (!raw.ok() || raw->size() != kCurveKeyBytes) {
    return Status::Corruption(path, "CURVE key is not 40 Z85 characters");
  }
  CurveKey k;
  std::memcpy(k.data(), raw->data(), k.size());
  OPENSSL_cleanse(&(*raw)[0], raw->size());
  return k;
}

std::string NoCurveHelp(const std::string& path) {
  return "has no CURVE transport key (written by an older fl-keygen?); make a new identity "
         "with fl-keygen, or run with --insecure on a trusted network. File: " +
         path;
}

}  // namespace

std::string Z85Encode(const uint8_t* data, size_t len) {
  std::string out;
  out.reserve(len / 4 * 5);
  for (size_t i = 0; i + 4 <= len; i += 4) {
    uint32_t v = (uint32_t{data[i]} << 24) | (uint32_t{data[i + 1]} << 16) |
                 (uint32_t{data[i + 2]} << 8) | data[i + 3];
    char chunk[5];
    for (int j = 4; j >= 0; --j) {
      chunk[j] = kZ85Chars[v % 85];
      v /= 85;
    }
    out.append(chunk, 5);
  }
  return out;
}

Result<std::string> Z85Decode(const std::string& text) {
  if (text.size() % 5 != 0) {
    return Status::Corruption("Z85 text length " + std::to_string(text.size()) +
                              " is not a multiple of 5");
  }
  std::string out;
  out.reserve(text.size() / 5 * 4);
  for (size_t i = 0; i < text.size(); i += 5) {
    uint64_t v = 0;
    for (size_t j = 0; j < 5; ++j) {
      const char* p = std::strchr(kZ85Chars, text[i + j]);
      if (text[i + j] == '\0' || p == nullptr) {
        return Status::Corruption("Z85 text has a character outside the alphabet");
      }
      v = v * 85 + static_cast<uint64_t>(p - kZ85Chars);
    }
    if (v > 0xFFFFFFFFull) return Status::Corruption("Z85 group out of range");
    for (int s = 24; s >= 0; s -= 8) out.push_back(static_cast<char>((v >> s) & 0xFF));
  }
  return out;
}

std::string KeyBytes(const CurveKey& key) { return std::string(key.begin(), key.end()); }

CurveKeyPair::~CurveKeyPair() { OPENSSL_cleanse(secret_key.data(), secret_key.size()); }

Result<CurveKey> CurvePublicFromSecret(const CurveKey& secret) {
  PkeyPtr key(EVP_PKEY_new_raw_private_key(EVP_PKEY_X25519, nullptr, secret.data(), secret.size()),
              EVP_PKEY_free);
  CurveKey pub{};
  size_t len = pub.size();
  if (!key || EVP_PKEY_get_raw_public_key(key.get(), pub.data(), &len) != 1 || len != pub.size()) {
    ERR_clear_error();
    return Status::Internal("deriving a Curve25519 public key");
  }
  return pub;
}

Result<CurveKeyPair> GenerateCurveKeyPair() {
  std::unique_ptr<EVP_PKEY_CTX, void (*)(EVP_PKEY_CTX*)> ctx(
      EVP_PKEY_CTX_new_id(EVP_PKEY_X25519, nullptr), EVP_PKEY_CTX_free);
  EVP_PKEY* raw = nullptr;
  if (!ctx || EVP_PKEY_keygen_init(ctx.get()) != 1 || EVP_PKEY_keygen(ctx.get(), &raw) != 1) {
    ERR_clear_error();
    return Status::Internal("generating a Curve25519 key");
  }
  PkeyPtr key(raw, EVP_PKEY_free);
  CurveKeyPair kp;
  size_t slen = kp.secret_key.size(), plen = kp.public_key.size();
  if (EVP_PKEY_get_raw_private_key(key.get(), kp.secret_key.data(), &slen) != 1 ||
      EVP_PKEY_get_raw_public_key(key.get(), kp.public_key.data(), &plen) != 1 ||
      slen != kCurveKeyBytes || plen != kCurveKeyBytes) {
    ERR_clear_error();
    return Status::Internal("reading a Curve25519 key");
  }
  return kp;
}

Status SaveIdentity(const std::string& key_path, const std::string& pub_path,
                    const SigningKey& signing, const CurveKeyPair& curve) {
  auto priv = signing.ToPem();
  if (!priv.ok()) return priv.status();
  std::string text = std::move(priv).value();
  text += kCurveSecretTag;
  text += ' ';
  text += Z85Encode(curve.secret_key.data(), curve.secret_key.size());
  text += '\n';
  // Never over an existing identity (or a link where one would go).
  Status st = WriteFileAtomic(key_path, text, 0600, /*replace=*/false);
  OPENSSL_cleanse(&text[0], text.size());
  FL_RETURN_IF_ERROR(st);
  return SavePublicIdentity(pub_path, signing.public_key(), curve.public_key);
}

Status SavePublicIdentity(const std::string& pub_path, const Ed25519PublicKey& signing,
                          const CurveKey& curve) {
  auto pub = PublicKeyPem(signing);
  if (!pub.ok()) return pub.status();
  std::string pub_text = std::move(pub).value();
  pub_text += std::string(kCurvePublicTag) + " " + Z85Encode(curve.data(), curve.size()) + "\n";
  return WriteFileAtomic(pub_path, pub_text, 0644);
}

Result<Identity> LoadIdentity(const std::string& key_path) {
  auto text = ReadPrivateKeyFile(key_path);
  if (!text.ok()) return text.status();
  auto signing = SigningKey::FromPem(key_path, *text);
  auto line = TaggedLine(*text, kCurveSecretTag);
  OPENSSL_cleanse(&(*text)[0], text->size());
  if (!signing.ok()) return signing.status();
  Identity id{std::move(signing).value(), std::nullopt};
  if (line) {
    auto secret = ParseCurveKey(key_path, *line);
    OPENSSL_cleanse(&(*line)[0], line->size());
    if (!secret.ok()) return secret.status();
    CurveKeyPair kp;
    kp.secret_key = *secret;
    OPENSSL_cleanse(secret->data(), secret->size());
    auto pub = CurvePublicFromSecret(kp.secret_key);
    if (!pub.ok()) return pub.status();
    kp.public_key = *pub;
    id.curve = kp;
  }
  return id;
}

Result<PublicIdentity> LoadPublicIdentity(const std::string& pub_path) {
  auto text = ReadFile(pub_path);
  if (!text.ok()) return text.status();
  auto signing = PublicKeyFromPem(pub_path, *text);
  if (!signing.ok()) return signing.status();
  PublicIdentity id;
  id.signing = *signing;
  if (auto line = TaggedLine(*text, kCurvePublicTag)) {
    auto k = ParseCurveKey(pub_path, *line);
    if (!k.ok()) return k.status();
    id.curve = *k;
  }
  return id;
}

Result<Identity> LoadIdentityWithCurve(const std::string& key_path) {
  auto id = LoadIdentity(key_path);
  if (id.ok() && !id->curve) return Status::InvalidArgument(NoCurveHelp(key_path));
  return id;
}

Result<PublicIdentity> LoadPublicIdentityWithCurve(const std::string& pub_path) {
  auto id = LoadPublicIdentity(pub_path);
  if (id.ok() && !id->curve) return Status::InvalidArgument(NoCurveHelp(pub_path));
  return id;
}

}  // namespace fl
