// fl-keygen: makes a device's or the server's identity.
//
//   fl-keygen --out keys/ --name edge-17
//     keys/edge-17.key  Ed25519 private key, PKCS#8 PEM, mode 0600
//     keys/edge-17.pub  Ed25519 public key, PEM: copy it into the server's
//                       enrollment folder (fl-server --clients DIR)
//   and prints the node id (the fingerprint the device sends as its id).
#include <CLI/CLI.hpp>
#include <cstdio>

#include "common/file_util.h"
#include "crypto/ed25519.h"

int main(int argc, char** argv) {
  std::string out = ".";
  std::string name;
  bool force = false;
  CLI::App app{"fl-keygen: make an Ed25519 identity (signing key pair) for a device or server"};
  app.add_option("--out", out, "Folder to write NAME.key and NAME.pub into")->capture_default_str();
  app.add_option("--name", name, "Name of the key files")->required();
  app.add_flag("--force", force, "Overwrite existing key files");
  CLI11_PARSE(app, argc, argv);
  if (name.empty() || name.find('/') != std::string::npos) {
    std::fprintf(stderr, "error: --name must be a plain file name\n");
    return 2;
  }
  fl::Status st = fl::CreateDirectories(out);
  const std::string priv = out + "/" + name + ".key", pub = out + "/" + name + ".pub";
  if (st.ok() && !force && fl::ReadFile(priv).ok()) {
    st = fl::Status::InvalidArgument(priv, "exists; refusing to overwrite an identity (--force)");
  }
  auto key = fl::SigningKey::Generate();
  if (st.ok() && !key.ok()) st = key.status();
  if (st.ok()) st = key->SavePem(priv);
  if (st.ok()) st = fl::SavePublicKeyPem(pub, key->public_key());
  if (!st.ok()) {
    std::fprintf(stderr, "error: %s\n", st.ToString().c_str());
    return 1;
  }
  std::printf("wrote %s (private, mode 0600) and %s\n", priv.c_str(), pub.c_str());
  std::printf("node id: %s\n", fl::NodeId(key->public_key()).c_str());
  return 0;
}
