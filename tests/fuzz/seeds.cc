// fl-fuzz-seeds DIR: writes valid encodings of every decoder's input into
// DIR/<target>/, the seed corpora of the fuzz targets (tests/fuzz/campaign.sh).
#include <sys/stat.h>

#include <cstdio>
#include <string>
#include <vector>

#include "common/file_util.h"
#include "common/fixed_point.h"
#include "common/quant_codec.h"
#include "common/random.h"
#include "common/wire/compact.h"
#include "common/wire/envelope.h"
#include "common/wire/serialize.h"
#include "crypto/ed25519.h"
#include "crypto/message.h"
#include "crypto/model_file.h"
#include "server/aggregator.h"
#include "server/checkpoint.h"
#include "server/wal.h"

namespace fl {
namespace {

ModelState Model(bool sparse) {
  ModelState m;
  m.architecture = "toy";
  Random rng(3);
  TensorState w{"w", {4, 8}, std::vector<float>(32), {}};
  for (auto& v : w.values) v = static_cast<float>(rng.Normal());
  if (sparse) {
    w.mask.assign(32, 1);
    for (int i = 0; i < 32; i += 3) w.mask[i] = 0, w.values[i] = 0;
  }
  m.tensors.push_back(w);
  m.tensors.push_back({"b", {8}, std::vector<float>(8, 0.5f), {}});
  return m;
}

int Main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: fl-fuzz-seeds DIR\n");
    return 2;
  }
  const std::string dir = argv[1];
  int written = 0;
  auto put = [&](const std::string& target, const std::string& name, const std::string& bytes) {
    if (!CreateDirectories(dir + "/" + target).ok() ||
        !WriteFileAtomic(dir + "/" + target + "/" + name, bytes).ok()) {
      std::fprintf(stderr, "error: writing %s/%s\n", target.c_str(), name.c_str());
      std::exit(1);
    }
    ++written;
  };
  auto key = SigningKey::Generate();
  if (!key.ok()) return 1;
  std::vector<float> delta(40);
  Random rng(5);
  for (auto& v : delta) v = static_cast<float>(rng.Normal() * 1e-2);
  for (int bits : {32, 8, 4, 2}) {
    QuantOptions q;
    q.bits = bits;
    q.block = 16;
    const std::string enc = QuantEncode(delta.data(), delta.size(), q);
    put("quant", "bits" + std::to_string(bits), enc);
    put("update", "bits" + std::to_string(bits),
        wire::Encode(wire::Update{600, 0.5, 1.0, wire::kCodecQuant, enc}));
  }
  {
    FixedSum sum;
    if (!AddWeighted(&sum, 2400, delta.data(), delta.size()).ok()) return 1;
    const std::string enc = EncodeFixedSum(sum);
    put("exact_sum", "w2400", enc);
    wire::Update u{2400, 0.5, 1.0, wire::kCodecExactSum, enc};
    u.contributors = 4;
    put("update", "exact_sum", wire::Encode(u));
  }
  put("hello", "hello", wire::Encode(wire::Hello{600, "mnist_cnn", {wire::kCodecQuant}, 2.0}));
  put("hello", "hello_any", wire::Encode(wire::Hello{1, "", {"q", "x"}, 0.3}));
  for (bool sparse : {false, true}) {
    for (auto fmt : {wire::ValueFormat::kFp32, wire::ValueFormat::kFp16}) {
      wire::Task t;
      t.config.uplink_bits = 8;
      t.model = wire::Compact(Model(sparse), fmt);
      const std::string name = std::string(sparse ? "sparse" : "dense") +
                               (fmt == wire::ValueFormat::kFp16 ? "_fp16" : "_fp32");
      put("task", name, wire::Encode(t));
      t.ask_before_upload = true;  // with an extension block
      put("task", name + "_ask", wire::Encode(t));
      t.config.proximal_mu = 0.01;  // and FedProx's mu
      put("task", name + "_ask_mu", wire::Encode(t));
      put("model_file", name, EncodeModelFile(Model(sparse), {}, sparse ? &*key : nullptr));
      // Strategy states after two rounds of a model of 4 values.
      for (const char* strategy : {"fedavgm", "fedadam"}) {
        for (bool dp : {false, true}) {
          StrategyOptions so;
          so.name = strategy;
          PrivacyOptions po;
          if (dp) po.noise_multiplier = 1;
          auto a = MakeAggregator(so, po, 0.5);
          if (!a.ok()) continue;
          ModelState m;
          m.tensors.push_back({"w", {4}, {0, 0, 0, 0}, {}});
          for (uint64_t r = 1; r <= 2; ++r) {
            (*a)->Begin(4, {2.0, r});
            std::vector<float> d = {0.5f, -1, 0.25f, 0};
            (void)(*a)->Add(1, &d);
            (void)(*a)->Finish(&m, 1e30f);
          }
          put("strategy_state", std::string(strategy) + (dp ? "_dp_" : "_") + name,
              (*a)->SaveState());
        }
      }
      put("checkpoint", name, [&] {
        const std::string path = dir + "/.tmp_checkpoint";
        (void)WriteCheckpoint(path, Checkpoint{3, 1, Model(sparse), 2.5}, sparse ? &*key : nullptr);
        auto b = ReadFile(path);
        std::remove(path.c_str());
        return b.ok() ? *b : std::string();
      }());
    }
  }
  wire::Reply r;
  r.in_reply_to = 2;
  r.reason = "accepted";
  r.message = "ok";
  put("reply", "reply", wire::Encode(r));
  put("reply", "done", wire::Encode(wire::Done{5, 0.97, "federation finished after 5 rounds"}));
  put("ready", "ready", wire::Encode(wire::Ready{6653545}));
  put("ready", "ready_with_extension",
      wire::Encode(wire::Ready{170504}) + std::string("\x01\x00\x42\x00\x01\0\0\0\0\0\0\0x", 13));
  wire::Envelope e;
  e.type = wire::MessageType::kUpdate;
  e.sender = "c0";
  e.round = 4;
  const SealedMessage signed_msg =
      SealMessage(e, wire::Encode(wire::Hello{600, "", {"q"}, 2}), &*key);
  put("envelope", "signed", signed_msg.envelope + signed_msg.payload);
  const SealedMessage plain = SealMessage(e, "payload", nullptr);
  put("envelope", "unsigned", plain.envelope + plain.payload);
  {
    WalHeader h;
    h.round = 2;
    h.weight_cap = 6000;
    h.norm_bound = 77.5;
    h.selected = {{"c0", 600}, {"c1", 300}};
    const std::string path = dir + "/.tmp_wal";
    // Unkeyed, and keyed with the key decoder_fuzz.cc also tries (0x42...).
    WalKey wal_key = std::array<uint8_t, 32>{};
    wal_key->fill(0x42);
    for (const WalKey& k : {WalKey(), wal_key}) {
      auto w = WalWriter::Create(path, h, false, k);
      if (!w.ok()) return 1;
      QuantOptions q;
      q.bits = 8;
      const std::string enc = QuantEncode(delta.data(), delta.size(), q);
      (void)(*w)->Append("c0", 600, 0.5, 1.0, enc);
      (void)(*w)->Append("c1", 300, 0.4, 1.1, enc);
      w->reset();
      auto b = ReadFile(path);
      std::remove(path.c_str());
      if (!b.ok()) return 1;
      const std::string name = k ? "keyed_" : "";
      put("wal", name + "two_records", *b);
      put("wal", name + "torn", b->substr(0, b->size() - 7));
    }
  }
  std::printf("wrote %d seed inputs under %s\n", written, dir.c_str());
  return 0;
}

}  // namespace
}  // namespace fl

int main(int argc, char** argv) { return fl::Main(argc, argv); }
