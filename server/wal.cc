#include "server/wal.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string_view>

#include "common/file_util.h"
#include "common/wire/reader.h"
#include "crypto/ed25519.h"
#include "crypto/sha256.h"

namespace fl {
namespace {

constexpr char kWalMagic[4] = {'F', 'L', 'W', 'L'};
// Odd versions: SHA-256 tags; even ones: HMAC-SHA256 tags. 3 and up add the
// population (after the selection); 5 and 6 a staleness per record (after
// the train seconds), 7 and 8 also the devices a record averages (after the
// staleness: relays' partial aggregates), 9 and 10 also a private partial's
// count of deltas within the clip (after the contributors; kNoWithinClip for
// any other record). Written: 3 or 4, 5 or 6 with staleness, 9 or 10 with
// contributors; read: all ten.
constexpr uint32_t kWalVersion = 3;
constexpr uint32_t kWalKeyedVersion = 4;
constexpr uint32_t kWalStalenessVersion = 5;
constexpr uint32_t kWalKeyedStalenessVersion = 6;
constexpr uint32_t kWalContributorsVersion = 7;
constexpr uint32_t kWalKeyedContributorsVersion = 8;
constexpr uint32_t kWalWithinClipVersion = 9;
constexpr uint32_t kWalKeyedWithinClipVersion = 10;
constexpr uint32_t kWalNewestVersion = 10;
constexpr uint32_t kNoWithinClip = 0xFFFFFFFF;
bool KeyedVersion(uint32_t v) { return v % 2 == 0; }
bool HasStaleness(uint32_t v) { return v >= 5; }
bool HasContributors(uint32_t v) { return v >= 7; }
bool HasWithinClip(uint32_t v) { return v >= 9; }

// The tag that ends the header and each record: HMAC-SHA256 under the key,
// or a SHA-256 without one.
class Tagger {
 public:
  explicit Tagger(const WalKey& key) {
    if (key) mac_.emplace(*key);
  }
  void Update(const void* p, size_t n) {
    if (mac_) {
      mac_->Update(p, n);
    } else {
      hasher_.Update(p, n);
    }
  }
  Sha256Digest Finish() { return mac_ ? mac_->Finish() : hasher_.Finish(); }
  Sha256Digest Of(const void* p, size_t n) {
    Update(p, n);
    return Finish();
  }

 private:
  std::optional<HmacSha256> mac_;
  Sha256Hasher hasher_;
};
constexpr size_t kMaxIdBytes = 256;

Status Errno(const std::string& what) { return Status::IOError(what, std::strerror(errno)); }

Status WriteAll(int fd, std::string_view bytes, uint64_t offset, const std::string& path) {
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n =
        ::pwrite(fd, bytes.data() + done, bytes.size() - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Errno("write " + path);
    done += static_cast<size_t>(n);
  }
  return Status::OK();
}

uint64_t DoubleBits(double v) {
  uint64_t b;
  std::memcpy(&b, &v, 8);
  return b;
}
double BitsDouble(uint64_t b) {
  double v;
  std::memcpy(&v, &b, 8);
  return v;
}

void PutId(wire::Writer* w, const std::string& id) {
  w->PutU16(static_cast<uint16_t>(id.size()));
  w->PutBytes(id.data(), id.size());
}
bool GetId(wire::Reader* r, std::string* id) {
  uint16_t n = 0;
  const uint8_t* p = nullptr;
  if (!r->GetU16(&n) || n > kMaxIdBytes || !r->Skip(n, &p)) return false;
  id->assign(reinterpret_cast<const char*>(p), n);
  return true;
}

// A record's tag. Keyed, it also covers the tag before it (the header's for
// the first record): a record is valid only in its place in the log it was
// written to, not copied from another log of the same server, nor moved.
Sha256Digest RecordTag(const WalKey& key, const Sha256Digest& prev, const char* body, size_t len,
                       std::string_view tail = {}) {
  Tagger t(key);
  if (key) t.Update(prev.data(), prev.size());
  t.Update(body, len);
  t.Update(tail.data(), tail.size());
  return t.Finish();
}

uint32_t FormatFor(const WalKey& key, bool with_staleness, bool with_contributors) {
  if (with_contributors) return key ? kWalKeyedWithinClipVersion : kWalWithinClipVersion;
  if (with_staleness) return key ? kWalKeyedStalenessVersion : kWalStalenessVersion;
  return key ? kWalKeyedVersion : kWalVersion;
}

std::string EncodeHeader(const WalHeader& h, const WalKey& key, uint32_t format) {
  wire::Writer w;
  w.PutBytes(kWalMagic, 4);
  w.PutU32(format);
  w.PutU64(h.round);
  w.PutBytes(h.nonce.data(), h.nonce.size());
  w.PutBytes(h.model_version.data(), h.model_version.size());
  w.PutU64(static_cast<uint64_t>(h.weight_cap));
  w.PutU64(DoubleBits(h.norm_bound));
  w.PutU32(static_cast<uint32_t>(h.selected.size()));
  for (const auto& [id, n] : h.selected) {
    PutId(&w, id);
    w.PutU64(static_cast<uint64_t>(n));
  }
  w.PutU32(h.population);
  std::string out = w.Release();
  const Sha256Digest d = Tagger(key).Of(out.data(), out.size());
  out.append(reinterpret_cast<const char*>(d.data()), d.size());
  return out;
}

// Parses the header at the start of `bytes`; `*size` gets its length.
Status DecodeHeader(const std::string& bytes, WalHeader* h, size_t* size, const WalKey& key,
                    Sha256Digest* tag) {
  wire::Reader r(bytes.data(), bytes.size());
  char magic[4];
  uint32_t version = 0, count = 0;
  uint64_t cap = 0, bound = 0;
  if (!r.GetBytes(magic, 4) || std::memcmp(magic, kWalMagic, 4) != 0) {
    return Status::Corruption("not a fedge round log (bad magic)");
  }
  if (!r.GetU32(&version) || version < 1 || version > kWalNewestVersion) {
    return Status::Corruption("round log version " + std::to_string(version) + " not supported");
  }
  if (!KeyedVersion(version) && key) {
    return Status::Corruption(
        "round log is not authenticated (written by a server without a key); this server has "
        "one and resumes only logs it wrote");
  }
  if (KeyedVersion(version) && !key) {
    return Status::Corruption(
        "round log is authenticated by a server key; start the server with its --key to "
        "resume it");
  }
  h->format = version;
  if (!r.GetU64(&h->round) || !r.GetBytes(h->nonce.data(), h->nonce.size()) ||
      !r.GetBytes(h->model_version.data(), h->model_version.size()) || !r.GetU64(&cap) ||
      !r.GetU64(&bound) || !r.GetU32(&count) || count > (1u << 24)) {
    return Status::Corruption("round log header truncated");
  }
  h->weight_cap = static_cast<int64_t>(cap);
  h->norm_bound = BitsDouble(bound);
  for (uint32_t i = 0; i < count; ++i) {
    std::string id;
    uint64_t n = 0;
    if (!GetId(&r, &id) || !r.GetU64(&n)) return Status::Corruption("round log header truncated");
    h->selected[id] = static_cast<int64_t>(n);
  }
  if (version >= 3 && !r.GetU32(&h->population)) {
    return Status::Corruption("round log header truncated");
  }
  const size_t body = bytes.size() - r.remaining();
  Sha256Digest want;
  if (!r.GetBytes(want.data(), want.size()))
    return Status::Corruption("round log header truncated");
  const Sha256Digest got = Tagger(key).Of(bytes.data(), body);
  if (std::memcmp(want.data(), got.data(), want.size()) != 0) {
    return Status::Corruption(key ? "round log header does not match its MAC: not written with "
                                    "this server's key"
                                  : "round log header does not match its hash");
  }
  if (!(h->weight_cap > 0) || !std::isfinite(h->norm_bound)) {
    return Status::Corruption("round log header holds impossible bounds");
  }
  *size = body + want.size();
  *tag = got;
  return Status::OK();
}

Status DecodeBody(const char* p, size_t n, uint32_t format, WalRecord* rec) {
  wire::Reader r(p, n);
  uint64_t weight = 0, loss = 0, secs = 0, len = 0;
  uint32_t staleness = 0, contributors = 1, within = kNoWithinClip;
  const uint8_t* data = nullptr;
  if (!GetId(&r, &rec->sender) || !r.GetU64(&weight) || !r.GetU64(&loss) || !r.GetU64(&secs) ||
      (HasStaleness(format) && !r.GetU32(&staleness)) ||
      (HasContributors(format) && (!r.GetU32(&contributors) || contributors < 1)) ||
      (HasWithinClip(format) &&
       (!r.GetU32(&within) || (within != kNoWithinClip && within > contributors))) ||
      !r.GetU64(&len) || len != r.remaining() || !r.Skip(len, &data)) {
    return Status::Corruption("round log record malformed");
  }
  rec->staleness = staleness;
  rec->contributors = contributors;
  rec->within_clip = within == kNoWithinClip ? -1 : static_cast<int64_t>(within);
  rec->weight = static_cast<int64_t>(weight);
  rec->train_loss = BitsDouble(loss);
  rec->train_seconds = BitsDouble(secs);
  rec->delta.assign(reinterpret_cast<const char*>(data), len);
  return Status::OK();
}

}  // namespace

WalKey WalKeyFor(const SigningKey* signer) {
  if (!signer) return std::nullopt;
  static const char kLabel[] = "fedge round log key, v1";
  const auto sig = signer->Sign(kLabel, sizeof(kLabel) - 1);
  return Sha256(sig.data(), sig.size());
}

WalWriter::WalWriter(int fd, std::string path, uint64_t end, bool durable, const WalKey& key,
                     const Sha256Digest& chain, uint32_t format)
    : fd_(fd),
      format_(format),
      path_(std::move(path)),
      end_(end),
      durable_(durable),
      key_(key),
      chain_(chain),
      requested_(end),
      synced_(end) {
  if (durable_) syncer_ = std::thread([this] { SyncLoop(); });
}

WalWriter::~WalWriter() {
  if (syncer_.joinable()) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    syncer_.join();
  }
  if (owing_) clock_->EndWork();  // a sync the stopped thread never did
  if (fd_ >= 0) ::close(fd_);
}

void WalWriter::SyncLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    cv_.wait(lock, [&] { return stopping_ || requested_ > synced_; });
    if (requested_ <= synced_) return;  // stopping, nothing left to sync
    const uint64_t target = requested_;
    lock.unlock();
    const int rc = ::fdatasync(fd_);
    const int err = errno;
    lock.lock();
    if (rc != 0 && error_.ok()) {
      error_ = Status::IOError("fdatasync " + path_, std::strerror(err));
    }
    if (rc == 0) synced_ = std::max(synced_, target);
    const bool done = rc != 0 || synced_ >= requested_;
    const bool ended = done && owing_;
    if (ended) owing_ = false;
    cv_.notify_all();
    if (ended) {
      lock.unlock();
      clock_->EndWork();  // begun by RequestSync
      lock.lock();
    }
    if (rc != 0) return;
  }
}

Result<std::unique_ptr<WalWriter>> WalWriter::Create(const std::string& path,
                                                     const WalHeader& header, bool durable,
                                                     const WalKey& key, bool with_staleness,
                                                     bool with_contributors) {
  const uint32_t format = FormatFor(key, with_staleness, with_contributors);
  int fd = -1;
  std::string where = path;
  if (path.empty()) {
    const char* tmp = std::getenv("TMPDIR");
    std::string tmpl = std::string(tmp && *tmp ? tmp : "/tmp") + "/fedge-round-XXXXXX";
    fd = ::mkostemp(tmpl.data(), O_CLOEXEC);
    if (fd < 0) return Errno("create a temporary round log in " + tmpl);
    ::unlink(tmpl.c_str());
    where = tmpl + " (unlinked)";
    durable = false;
  } else {
    fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) return Errno("create " + path);
  }
  const std::string h = EncodeHeader(header, key, format);
  Status st = WriteAll(fd, h, 0, where);
  if (st.ok() && durable && ::fdatasync(fd) != 0) st = Errno("fdatasync " + path);
  if (!st.ok()) {
    ::close(fd);
    return st;
  }
  if (durable) {
    // The file's directory entry must outlive a crash too.
    const size_t slash = path.rfind('/');
    const std::string dir = slash == std::string::npos ? "." : path.substr(0, slash);
    const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
      ::fsync(dfd);
      ::close(dfd);
    }
  }
  Sha256Digest tag;
  std::memcpy(tag.data(), h.data() + h.size() - tag.size(), tag.size());
  return std::unique_ptr<WalWriter>(new WalWriter(fd, where, h.size(), durable, key, tag, format));
}

Result<std::unique_ptr<WalWriter>> WalWriter::Reopen(const std::string& path,
                                                     const WalContents& contents, bool durable,
                                                     const WalKey& key) {
  const uint64_t valid_bytes = contents.valid_bytes;
  const int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) return Errno("open " + path);
  if (::ftruncate(fd, static_cast<off_t>(valid_bytes)) != 0 || (durable && ::fdatasync(fd) != 0)) {
    Status st = Errno("truncate " + path);
    ::close(fd);
    return st;
  }
  return std::unique_ptr<WalWriter>(
      new WalWriter(fd, path, valid_bytes, durable, key, contents.chain, contents.header.format));
}

Result<WalEntry> WalWriter::Append(const std::string& sender, int64_t weight, double train_loss,
                                   double train_seconds, std::string_view delta, uint32_t staleness,
                                   uint32_t contributors, int64_t within_clip) {
  if (sender.size() > kMaxIdBytes) return Status::InvalidArgument("sender id too long");
  wire::Writer w;
  w.PutU32(0);  // the body's length, filled in below
  PutId(&w, sender);
  w.PutU64(static_cast<uint64_t>(weight));
  w.PutU64(DoubleBits(train_loss));
  w.PutU64(DoubleBits(train_seconds));
  if (HasStaleness(format_)) w.PutU32(staleness);
  if (HasContributors(format_)) w.PutU32(std::max<uint32_t>(1, contributors));
  const bool has_within = HasWithinClip(format_) && within_clip >= 0;
  if (HasWithinClip(format_)) {
    w.PutU32(has_within ? static_cast<uint32_t>(std::min<int64_t>(within_clip, contributors))
                        : kNoWithinClip);
  }
  w.PutU64(delta.size());
  std::string prefix = w.Release();
  const uint64_t body = prefix.size() - 4 + delta.size();
  if (body > UINT32_MAX) return Status::InvalidArgument("update too large for the round log");
  for (int i = 0; i < 4; ++i) prefix[i] = static_cast<char>((body >> (8 * i)) & 0xFF);
  const Sha256Digest d = RecordTag(key_, chain_, prefix.data() + 4, prefix.size() - 4, delta);
  // prefix | delta | hash, written in place from the three buffers.
  const char* parts[3] = {prefix.data(), delta.data(), reinterpret_cast<const char*>(d.data())};
  const size_t sizes[3] = {prefix.size(), delta.size(), d.size()};
  uint64_t at = end_;
  for (int k = 0; k < 3; ++k) {
    FL_RETURN_IF_ERROR(WriteAll(fd_, std::string_view(parts[k], sizes[k]), at, path_));
    at += sizes[k];
  }
  WalEntry e{sender,
             weight,
             end_ + 4,
             static_cast<uint32_t>(body),
             HasStaleness(format_) ? staleness : 0,
             HasContributors(format_) ? std::max<uint32_t>(1, contributors) : 1,
             has_within ? std::min<int64_t>(within_clip, contributors) : -1};
  end_ = at;
  chain_ = d;
  if (!durable_) {
    std::lock_guard<std::mutex> lock(mu_);
    requested_ = synced_ = end_;
  }
  return e;
}

void WalWriter::RequestSync() {
  if (!durable_) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (end_ <= requested_) return;
    requested_ = end_;
    if (!owing_ && error_.ok()) {
      owing_ = true;
      clock_->BeginWork();  // ended by the sync thread
    }
  }
  cv_.notify_all();
}

uint64_t WalWriter::durable_end() const {
  std::lock_guard<std::mutex> lock(mu_);
  return synced_;
}

Status WalWriter::Sync() {
  RequestSync();
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return synced_ >= end_ || !error_.ok(); });
  return error_;
}

Status WalWriter::error() const {
  std::lock_guard<std::mutex> lock(mu_);
  return error_;
}

Status WalWriter::ReadDelta(const WalEntry& e, std::string* buffer, std::string_view* delta) const {
  buffer->resize(e.length);
  size_t done = 0;
  while (done < buffer->size()) {
    const ssize_t n = ::pread(fd_, buffer->data() + done, buffer->size() - done,
                              static_cast<off_t>(e.offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return n < 0 ? Errno("read " + path_) : Status::IOError(path_, "short read");
    done += static_cast<size_t>(n);
  }
  // sender | weight | loss | seconds | (staleness) | delta length | delta
  wire::Reader r(buffer->data(), buffer->size());
  std::string sender;
  uint64_t skip = 0, len = 0;
  uint32_t skip32 = 0;
  if (!GetId(&r, &sender) || !r.GetU64(&skip) || !r.GetU64(&skip) || !r.GetU64(&skip) ||
      (HasStaleness(format_) && !r.GetU32(&skip32)) ||
      (HasContributors(format_) && !r.GetU32(&skip32)) ||
      (HasWithinClip(format_) && !r.GetU32(&skip32)) || !r.GetU64(&len) || len != r.remaining()) {
    return Status::Corruption(path_, "round log record malformed");
  }
  *delta = std::string_view(buffer->data() + buffer->size() - len, len);
  return Status::OK();
}

Result<WalRecord> WalWriter::Read(const WalEntry& e) const {
  std::string body;
  std::string_view unused;
  FL_RETURN_IF_ERROR(ReadDelta(e, &body, &unused));
  WalRecord rec;
  FL_RETURN_IF_ERROR(DecodeBody(body.data(), body.size(), format_, &rec));
  return rec;
}

Result<WalContents> WalReadAll(const std::string& path, const WalKey& key) {
  auto bytes = ReadFile(path);
  if (!bytes.ok()) return bytes.status();
  auto c = ParseWal(*bytes, key);
  if (!c.ok()) return c.status().WithContext(path);
  return c;
}

Result<WalContents> ParseWal(const std::string& b, const WalKey& key) {
  WalContents c;
  size_t pos = 0;
  FL_RETURN_IF_ERROR(DecodeHeader(b, &c.header, &pos, key, &c.chain));
  c.valid_bytes = pos;
  while (pos < b.size()) {
    if (b.size() - pos < 4) break;
    uint32_t len = 0;
    for (int i = 0; i < 4; ++i)
      len |= static_cast<uint32_t>(static_cast<uint8_t>(b[pos + i])) << (8 * i);
    if (b.size() - pos - 4 < static_cast<size_t>(len) + kSha256DigestBytes) break;
    const char* body = b.data() + pos + 4;
    const Sha256Digest d = RecordTag(key, c.chain, body, len);
    if (std::memcmp(d.data(), body + len, d.size()) != 0) break;
    WalRecord rec;
    if (!DecodeBody(body, len, c.header.format, &rec).ok()) break;
    c.entries.push_back(
        {rec.sender, rec.weight, pos + 4, len, rec.staleness, rec.contributors, rec.within_clip});
    c.chain = d;
    pos += 4 + len + kSha256DigestBytes;
    c.valid_bytes = pos;
  }
  c.torn_tail = c.valid_bytes != b.size();
  return c;
}

}  // namespace fl
