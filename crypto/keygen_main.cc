// fl-keygen: makes a device's or the server's identity.
//
//   fl-keygen --out keys/ --name edge-17
//     keys/edge-17.key  Ed25519 private key (PKCS#8 PEM) and CURVE secret key,
//                       mode 0600: stays on the device
//     keys/edge-17.pub  Ed25519 public key (PEM) and CURVE public key: copy it
//                       into the server's enrollment folder (fl-server --clients)
//   and prints the node id (the fingerprint the device sends as its id).
//   For the server, the same: clients pin its .pub with --server-key.
#include <sys/stat.h>

#include <CLI/CLI.hpp>
#include <cstdio>

#include "common/file_util.h"
#include "crypto/ed25519.h"
#include "crypto/identity.h"

int main(int argc, char** argv) {
  std::string out = ".";
  std::string name;
  CLI::App app{
      "fl-keygen: make the identity of a device or server: an Ed25519 signing key pair and a\n"
      "ZeroMQ CURVE transport key pair, in NAME.key (private, mode 0600) and NAME.pub"};
  app.add_option("--out", out, "Folder to write NAME.key and NAME.pub into")->capture_default_str();
  app.add_option("--name", name, "Name of the key files")->required();
  CLI11_PARSE(app, argc, argv);
  if (name.empty() || name.find('/') != std::string::npos) {
    std::fprintf(stderr, "error: --name must be a plain file name\n");
    return 2;
  }
  fl::Status st = fl::CreateDirectories(out);
  const std::string priv = out + "/" + name + ".key", pub = out + "/" + name + ".pub";
  // An identity is never overwritten (its enrolled .pub would no longer match
  // it): replacing one means deleting the old NAME.key first, on purpose.
  struct stat existing;
  if (st.ok() && ::lstat(priv.c_str(), &existing) == 0) {
    st = fl::Status::InvalidArgument(
        priv, "exists; fl-keygen never overwrites an identity (delete it first to replace it)");
  }
  auto key = fl::SigningKey::Generate();
  if (st.ok() && !key.ok()) st = key.status();
  auto curve = fl::GenerateCurveKeyPair();
  if (st.ok() && !curve.ok()) st = curve.status();
  if (st.ok()) st = fl::SaveIdentity(priv, pub, *key, *curve);
  if (!st.ok()) {
    std::fprintf(stderr, "error: %s\n", st.ToString().c_str());
    return 1;
  }
  std::printf("wrote %s (private, mode 0600) and %s\n", priv.c_str(), pub.c_str());
  std::printf("node id: %s\n", fl::NodeId(key->public_key()).c_str());
  std::printf("curve public key: %s\n",
              fl::Z85Encode(curve->public_key.data(), curve->public_key.size()).c_str());
  return 0;
}
