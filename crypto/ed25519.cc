#include "crypto/ed25519.h"

#include <fcntl.h>
#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/file_util.h"
#include "crypto/sha256.h"

namespace fl {
namespace {

using PkeyPtr = std::unique_ptr<EVP_PKEY, void (*)(EVP_PKEY*)>;
using MdCtxPtr = std::unique_ptr<EVP_MD_CTX, void (*)(EVP_MD_CTX*)>;
using BioPtr = std::unique_ptr<BIO, int (*)(BIO*)>;

std::string OpenSslError() {
  const unsigned long e = ERR_get_error();
  if (e == 0) return "unknown OpenSSL error";
  char buf[256];
  ERR_error_string_n(e, buf, sizeof(buf));
  ERR_clear_error();
  return buf;
}

Result<Ed25519PublicKey> RawPublic(EVP_PKEY* key) {
  Ed25519PublicKey pub;
  size_t len = pub.size();
  if (EVP_PKEY_get_raw_public_key(key, pub.data(), &len) != 1 || len != pub.size()) {
    return Status::Internal("reading Ed25519 public key", OpenSslError());
  }
  return pub;
}

std::string BioToString(BIO* bio) {
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio, &data);
  return std::string(data, static_cast<size_t>(n));
}

}  // namespace

struct SigningKey::Handle {
  PkeyPtr key{nullptr, EVP_PKEY_free};
};

SigningKey::SigningKey(std::unique_ptr<Handle> h, const Ed25519PublicKey& pub)
    : h_(std::move(h)), public_(pub) {}
SigningKey::SigningKey(SigningKey&&) noexcept = default;
SigningKey& SigningKey::operator=(SigningKey&&) noexcept = default;
SigningKey::~SigningKey() = default;

Result<SigningKey> SigningKey::Generate() {
  std::unique_ptr<EVP_PKEY_CTX, void (*)(EVP_PKEY_CTX*)> ctx(
      EVP_PKEY_CTX_new_id(EVP_PKEY_ED25519, nullptr), EVP_PKEY_CTX_free);
  EVP_PKEY* raw = nullptr;
  if (!ctx || EVP_PKEY_keygen_init(ctx.get()) != 1 || EVP_PKEY_keygen(ctx.get(), &raw) != 1) {
    return Status::Internal("generating an Ed25519 key", OpenSslError());
  }
  auto h = std::make_unique<Handle>();
  h->key.reset(raw);
  auto pub = RawPublic(raw);
  if (!pub.ok()) return pub.status();
  return SigningKey(std::move(h), *pub);
}

Result<SigningKey> SigningKey::FromSeed(const uint8_t* seed, size_t len) {
  if (len != kEd25519PrivateKeyBytes) {
    return Status::InvalidArgument("an Ed25519 seed is 32 bytes, got " + std::to_string(len));
  }
  EVP_PKEY* raw = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, nullptr, seed, len);
  if (!raw) return Status::Internal("loading an Ed25519 seed", OpenSslError());
  auto h = std::make_unique<Handle>();
  h->key.reset(raw);
  auto pub = RawPublic(raw);
  if (!pub.ok()) return pub.status();
  return SigningKey(std::move(h), *pub);
}

Result<std::string> ReadPrivateKeyFile(const std::string& path) {
  // Opened once, not followed if it is a symbolic link; everything is checked
  // on the descriptor that is then read, so the file cannot be swapped between
  // the check and the read.
  // O_NONBLOCK: a FIFO in the key's place does not block the open; it is then
  // refused as not a regular file.
  const int fd = ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  if (fd < 0) {
    const int err = errno;
    if (err == ENOENT) return Status::NotFound(path, "no such key file");
    if (err == ELOOP) {
      return Status::InvalidArgument(path,
                                     "is a symbolic link; a private key must be a regular file "
                                     "(point the option at the file itself)");
    }
    return Status::IOError(path, std::strerror(err));
  }
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat st;
  if (::fstat(fd, &st) != 0) return Status::IOError(path, std::strerror(errno));
  if (!S_ISREG(st.st_mode)) return Status::InvalidArgument(path, "is not a regular file");
  if (st.st_mode & (S_IRWXG | S_IRWXO)) {
    char mode[8];
    std::snprintf(mode, sizeof(mode), "%04o", static_cast<unsigned>(st.st_mode & 07777));
    return Status::InvalidArgument(path, std::string("private key file has mode ") + mode +
                                             "; it must not be accessible to group or others "
                                             "(chmod 600 " +
                                             path + ")");
  }
  if (st.st_uid != ::geteuid()) {
    return Status::InvalidArgument(path, "private key file is owned by uid " +
                                             std::to_string(st.st_uid) +
                                             ", not by the user running this program (uid " +
                                             std::to_string(::geteuid()) + ")");
  }
  constexpr off_t kMaxKeyFileBytes = 64 << 10;
  if (st.st_size > kMaxKeyFileBytes) {
    return Status::InvalidArgument(
        path, "is " + std::to_string(st.st_size) + " bytes; a key file is a few hundred");
  }
  // One buffer of the file's size, read into in place: no reallocation leaves
  // a copy of the secret behind. The caller wipes it (OPENSSL_cleanse).
  std::string text(static_cast<size_t>(st.st_size), '\0');
  size_t off = 0;
  while (off < text.size()) {
    const ssize_t n = ::read(fd, &text[off], text.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      OPENSSL_cleanse(&text[0], text.size());
      return Status::IOError(path, n < 0 ? std::strerror(errno) : "shorter than its size");
    }
    off += static_cast<size_t>(n);
  }
  return text;
}

Result<SigningKey> SigningKey::FromPem(const std::string& name, const std::string& pem) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())), BIO_free);
  EVP_PKEY* raw = PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr);
  if (!raw) return Status::Corruption(name, "not a PEM private key (" + OpenSslError() + ")");
  auto h = std::make_unique<Handle>();
  h->key.reset(raw);
  if (EVP_PKEY_get_id(raw) != EVP_PKEY_ED25519) {
    return Status::InvalidArgument(name, "holds a " +
                                             std::string(OBJ_nid2sn(EVP_PKEY_get_id(raw))) +
                                             " key; fedge needs Ed25519 (make one with fl-keygen)");
  }
  auto pub = RawPublic(raw);
  if (!pub.ok()) return pub.status();
  return SigningKey(std::move(h), *pub);
}

Result<SigningKey> SigningKey::LoadPem(const std::string& path) {
  auto bytes = ReadPrivateKeyFile(path);
  if (!bytes.ok()) return bytes.status();
  auto key = FromPem(path, *bytes);
  OPENSSL_cleanse(&(*bytes)[0], bytes->size());
  return key;
}

Ed25519Signature SigningKey::Sign(const void* data, size_t len) const {
  Ed25519Signature sig{};
  MdCtxPtr ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  size_t sig_len = sig.size();
  // Ed25519 is one-shot (no digest); failure here means OpenSSL is broken.
  if (!ctx || EVP_DigestSignInit(ctx.get(), nullptr, nullptr, nullptr, h_->key.get()) != 1 ||
      EVP_DigestSign(ctx.get(), sig.data(), &sig_len, static_cast<const unsigned char*>(data),
                     len) != 1 ||
      sig_len != sig.size()) {
    std::fprintf(stderr, "fatal: Ed25519 signing failed: %s\n", OpenSslError().c_str());
    std::abort();
  }
  return sig;
}

Result<std::string> SigningKey::ToPem() const {
  BioPtr bio(BIO_new(BIO_s_mem()), BIO_free);
  if (PEM_write_bio_PrivateKey(bio.get(), h_->key.get(), nullptr, nullptr, 0, nullptr, nullptr) !=
      1) {
    return Status::Internal("encoding private key", OpenSslError());
  }
  return BioToString(bio.get());
}

Status SigningKey::SavePem(const std::string& path) const {
  auto pem = ToPem();
  if (!pem.ok()) return pem.status();
  Status st = WriteFileAtomic(path, *pem, 0600);
  OPENSSL_cleanse(&(*pem)[0], pem->size());
  return st;
}

namespace {

Status VerifyWithKey(EVP_PKEY* key, const void* data, size_t len, const Ed25519Signature& sig) {
  MdCtxPtr ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  if (!ctx || EVP_DigestVerifyInit(ctx.get(), nullptr, nullptr, nullptr, key) != 1) {
    return Status::Internal("Ed25519 verify init", OpenSslError());
  }
  const int ok = EVP_DigestVerify(ctx.get(), sig.data(), sig.size(),
                                  static_cast<const unsigned char*>(data), len);
  ERR_clear_error();
  if (ok != 1) return Status::Unauthenticated("Ed25519 signature does not verify");
  return Status::OK();
}

}  // namespace

Status Ed25519Verify(const Ed25519PublicKey& pub, const void* data, size_t len,
                     const Ed25519Signature& sig) {
  PkeyPtr key(EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, nullptr, pub.data(), pub.size()),
              EVP_PKEY_free);
  if (!key) return Status::Unauthenticated("invalid Ed25519 public key");
  return VerifyWithKey(key.get(), data, len, sig);
}

struct Ed25519Verifier::Handle {
  PkeyPtr key{nullptr, EVP_PKEY_free};
};

Result<Ed25519Verifier> Ed25519Verifier::Create(const Ed25519PublicKey& pub) {
  auto h = std::make_shared<Handle>();
  h->key.reset(EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, nullptr, pub.data(), pub.size()));
  if (!h->key) return Status::InvalidArgument("invalid Ed25519 public key", OpenSslError());
  return Ed25519Verifier(std::move(h), pub);
}

Status Ed25519Verifier::Verify(const void* data, size_t len, const Ed25519Signature& sig) const {
  return VerifyWithKey(h_->key.get(), data, len, sig);
}

Result<std::string> PublicKeyPem(const Ed25519PublicKey& pub) {
  PkeyPtr key(EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, nullptr, pub.data(), pub.size()),
              EVP_PKEY_free);
  BioPtr bio(BIO_new(BIO_s_mem()), BIO_free);
  if (!key || PEM_write_bio_PUBKEY(bio.get(), key.get()) != 1) {
    return Status::Internal("encoding public key", OpenSslError());
  }
  return BioToString(bio.get());
}

Status SavePublicKeyPem(const std::string& path, const Ed25519PublicKey& pub) {
  auto pem = PublicKeyPem(pub);
  if (!pem.ok()) return pem.status();
  return WriteFileAtomic(path, *pem, 0644);
}

Result<Ed25519PublicKey> PublicKeyFromPem(const std::string& name, const std::string& pem) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())), BIO_free);
  PkeyPtr key(PEM_read_bio_PUBKEY(bio.get(), nullptr, nullptr, nullptr), EVP_PKEY_free);
  if (!key) return Status::Corruption(name, "not a PEM public key (" + OpenSslError() + ")");
  if (EVP_PKEY_get_id(key.get()) != EVP_PKEY_ED25519) {
    return Status::InvalidArgument(name, "not an Ed25519 public key");
  }
  return RawPublic(key.get());
}

Result<Ed25519PublicKey> LoadPublicKeyPem(const std::string& path) {
  auto bytes = ReadFile(path);
  if (!bytes.ok()) return bytes.status();
  return PublicKeyFromPem(path, *bytes);
}

std::string NodeId(const Ed25519PublicKey& pub) {
  return ToHex(Sha256(pub.data(), pub.size())).substr(0, 32);
}

}  // namespace fl
