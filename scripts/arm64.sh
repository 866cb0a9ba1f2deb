#!/usr/bin/env bash
# fl-client for arm64 (Raspberry Pi 4/5, Jetson, Graviton): cross-builds the
# device side of fedge (fl-client and its unit tests) with Debian's
# crossbuild-essential-arm64 against an arm64 sysroot of Debian's own packages,
# runs the unit tests under qemu-user-static, then one federated round of the
# MNIST CNN: an x86 fl-server (build/) and the arm64 fl-client under qemu.
# Optional: not part of scripts/test.sh (the sysroot is ~1.5 GB and the round
# is emulated). Idempotent: a second run reuses the sysroot and the build.
#
#   bash scripts/arm64.sh            # everything; wall time of each step at the end
#   ARM64_STEPS="sysroot build" bash scripts/arm64.sh   # only some steps
#
# Steps: sysroot (apt-get download + dpkg -x of the arm64 packages, nothing
# installed on the host but the cross compiler and qemu), build (build-arm64/),
# test (the client's unit tests under qemu), round (one CNN round, x86 server,
# arm64 client; peak RSS of the emulated client).
#
# Why a sysroot and not multiarch: Debian 12's libtorch-dev:arm64 cannot be
# installed beside libtorch-dev:amd64 (apt removes the x86 one), so the arm64
# libraries are unpacked into .deps/arm64/sysroot instead.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEPS="$ROOT/.deps/arm64"
SYSROOT="$DEPS/sysroot"
BUILD="$ROOT/build-arm64"
STEPS="${ARM64_STEPS:-sysroot build test round}"
TRIPLE=aarch64-linux-gnu
# What fl-client and its tests build against (arm64), and what apt's solver
# pulls in with them.
PACKAGES=(
  libc6-dev libstdc++-12-dev
  libtorch-dev libopenblas0-openmp
  libzmq3-dev cppzmq-dev libssl-dev libcereal-dev
  libspdlog-dev libcli11-dev libstb-dev libgtest-dev
)
# Library folders the arm64 dynamic loader searches (the sysroot has no
# ld.so.cache; BLAS and LAPACK are OpenBLAS's, which Debian's alternatives
# would have picked).
GUEST_LIBS="/lib/$TRIPLE:/usr/lib/$TRIPLE:/usr/lib/$TRIPLE/openblas-openmp"

log() { printf '[arm64] %s\n' "$*"; }
die() { printf '[arm64] ERROR: %s\n' "$*" >&2; exit 1; }
as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@";
  else die "need root to run: $* (re-run as root or install sudo)"; fi
}
declare -A SECONDS_OF=()
timed() {
  local name="$1" t0
  shift
  t0=$(date +%s.%N)
  "$@"
  SECONDS_OF[$name]=$(echo "$(date +%s.%N) - $t0" | bc)
  log "$name: ${SECONDS_OF[$name]} s"
}

host_tools() {
  local missing=()
  for p in crossbuild-essential-arm64 qemu-user-static cmake pkg-config bc file time; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
      missing+=("$p")
  done
  if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    log "adding the arm64 architecture to apt (package lists only; nothing arm64 is installed)"
    as_root dpkg --add-architecture arm64
    as_root apt-get update -q
  fi
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get update -q
    as_root apt-get install -y -q --no-install-recommends "${missing[@]}"
  fi
}

sysroot() {
  if [ -f "$SYSROOT/.complete" ]; then
    log "sysroot ready ($SYSROOT)"
    return
  fi
  # An unfinished sysroot (an interrupted run) is made again from scratch.
  rm -rf "$SYSROOT" "$DEPS/debs"
  mkdir -p "$DEPS/debs" "$SYSROOT"
  # The arm64 closure of PACKAGES as apt's solver sees it for an empty arm64
  # system (no host package counts as installed).
  : > "$DEPS/empty_status"
  apt-get -o Dir::State::status="$DEPS/empty_status" -o APT::Architecture=arm64 \
    -o APT::Install-Recommends=false install -s "${PACKAGES[@]}" |
    sed -nE 's/^Inst ([^ ]+) \(([^ ]+) .*\[([a-z0-9]+)\].*/\1:\3=\2/p' > "$DEPS/packages.txt"
  [ -s "$DEPS/packages.txt" ] || die "apt found no arm64 packages; run apt-get update"
  log "$(wc -l < "$DEPS/packages.txt") arm64 packages; downloading to $DEPS/debs"
  (cd "$DEPS/debs" && xargs -a "$DEPS/packages.txt" -n 40 apt-get download -q -o APT::Sandbox::User=root >/dev/null)
  # Merged /usr, as on Debian 12 devices: /lib is usr/lib.
  mkdir -p "$SYSROOT/usr/lib" "$SYSROOT/usr/bin" "$SYSROOT/usr/sbin"
  for d in lib bin sbin; do [ -e "$SYSROOT/$d" ] || ln -s "usr/$d" "$SYSROOT/$d"; done
  local n=0 deb
  for deb in "$DEPS"/debs/*.deb; do
    dpkg -x "$deb" "$SYSROOT"
    n=$((n + 1))
    (( n % 50 == 0 )) && log "unpacked $n packages"
  done
  # Absolute symlinks point into the host once outside a chroot: make them
  # relative to the sysroot.
  find "$SYSROOT" -type l -lname '/*' | while read -r link; do
    local target rel
    target="$(readlink "$link")"
    rel="$(realpath -m --relative-to="$(dirname "$link")" "$SYSROOT$target")"
    ln -sfn "$rel" "$link"
  done
  # What update-alternatives would have made: BLAS and LAPACK from OpenBLAS.
  local lib="$SYSROOT/usr/lib/$TRIPLE"
  for so in libblas.so.3 liblapack.so.3 libblas.so liblapack.so; do
    [ -e "$lib/openblas-openmp/$so" ] && ln -sfn "openblas-openmp/$so" "$lib/$so"
  done
  touch "$SYSROOT/.complete"
  log "sysroot ready: $(du -sh "$SYSROOT" | cut -f1) in $SYSROOT"
}

toolchain_file() {
  cat > "$DEPS/toolchain.cmake" <<CMAKE
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER $TRIPLE-gcc)
set(CMAKE_CXX_COMPILER $TRIPLE-g++)
set(CMAKE_SYSROOT $SYSROOT)
set(CMAKE_LIBRARY_ARCHITECTURE $TRIPLE)
set(CMAKE_FIND_ROOT_PATH $SYSROOT)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
# Tests (and gtest_discover_tests at build time) run under qemu.
set(CMAKE_CROSSCOMPILING_EMULATOR qemu-aarch64-static;-L;$SYSROOT;-E;LD_LIBRARY_PATH=$GUEST_LIBS)
# The sysroot's libraries link against each other by soname.
set(CMAKE_EXE_LINKER_FLAGS_INIT "-Wl,-rpath-link,$SYSROOT/lib/$TRIPLE:$SYSROOT/usr/lib/$TRIPLE:$SYSROOT/usr/lib/$TRIPLE/openblas-openmp")
CMAKE
}

build() {
  [ -f "$SYSROOT/.complete" ] || die "no sysroot yet: ARM64_STEPS=sysroot bash scripts/arm64.sh"
  toolchain_file
  export PKG_CONFIG_SYSROOT_DIR="$SYSROOT"
  export PKG_CONFIG_LIBDIR="$SYSROOT/usr/lib/$TRIPLE/pkgconfig:$SYSROOT/usr/share/pkgconfig"
  cmake -S "$ROOT" -B "$BUILD" -DCMAKE_TOOLCHAIN_FILE="$DEPS/toolchain.cmake" \
    -DCMAKE_BUILD_TYPE=Release -DFL_CLIENT_ONLY=ON -DFL_BUILD_BENCHMARKS=OFF >/dev/null
  cmake --build "$BUILD" -j "${JOBS:-2}"
  file "$BUILD/bin/fl-client" | grep -q "ARM aarch64" || die "fl-client is not an arm64 binary"
  log "$(file -b "$BUILD/bin/fl-client" | cut -d, -f1-2)"
}

unit_tests() {
  (cd "$BUILD" && ctest --output-on-failure -j 2)
}

# One federated round: an x86 fl-server and one client ($1: arm64 under
# qemu, or x86 native for comparison), the device holding only its own data.
# Prints "SECONDS ACCURACY PEAK_KIB [QEMU_TOTAL_KIB]".
round_with() {
  local kind="$1" run="$BUILD/round/$1"
  local keys="$BUILD/round"
  rm -rf "$run"
  mkdir -p "$run"
  "$SERVER" --bind "tcp://127.0.0.1:*" --model mnist_cnn --rounds 1 --min-clients 1 \
    --fraction 1 --epochs 1 --batch 10 --lr 0.05 --uplink-bits 8 --deadline 3600 --seed 7 \
    --key "$keys/server.key" --clients "$keys/clients" --data "$ROOT/data/mnist" \
    --out "$run/out" > "$run/server.log" 2>&1 &
  local server_pid=$! t0 seconds client_pid=ok endpoint=""
  # The port the kernel gave the server, from its log.
  for _ in $(seq 1 600); do
    endpoint=$(sed -n 's/.* on \(tcp:\/\/127\.0\.0\.1:[0-9]*\): rounds.*/\1/p' "$run/server.log" | head -1)
    [ -n "$endpoint" ] && break
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.1
  done
  [ -n "$endpoint" ] || { cat "$run/server.log" >&2; die "fl-server did not start (log above)"; }
  local args=(--server "$endpoint" --key "$keys/device.key"
              --server-key "$keys/server.pub" --data "$BUILD/round/device0" --threads 1)
  t0=$(date +%s.%N)
  if [ "$kind" = arm64 ]; then
    qemu-aarch64-static -L "$SYSROOT" -E LD_LIBRARY_PATH="$GUEST_LIBS" \
      "$BUILD/bin/fl-client" "${args[@]}" > "$run/client.log" 2>&1 &
    client_pid=$!
    sample_rss "$client_pid" > "$run/client.rss"
    wait "$client_pid" || client_pid=failed
  else
    /usr/bin/time -f "%M %M" -o "$run/client.rss" "$ROOT/build/bin/fl-client" "${args[@]}" \
      > "$run/client.log" 2>&1 || client_pid=failed
  fi
  if [ "$client_pid" = failed ]; then
    kill "$server_pid" 2>/dev/null || true
    cat "$run/server.log" "$run/client.log" >&2
    die "the $kind client failed (log above)"
  fi
  seconds=$(echo "$(date +%s.%N) - $t0" | bc)
  wait "$server_pid" || { cat "$run/server.log" >&2; die "fl-server failed (log above)"; }
  echo "$seconds $(awk -F, 'NR==2 {print $3}' "$run/out/rounds.csv") $(cat "$run/client.rss")"
}

one_round() {
  SERVER="$ROOT/build/bin/fl-server" KEYGEN="$ROOT/build/bin/fl-keygen"
  [ -x "$SERVER" ] || die "no x86 fl-server: bash scripts/build.sh first"
  [ -f "$ROOT/data/mnist/train-images-idx3-ubyte" ] || die "no MNIST: bash scripts/setup.sh"
  # A device's share of a 100-device MNIST federation (600 images, IID), as
  # a device would hold it: a folder of its own. One round of the FedAvg CNN,
  # E=1, B=10, 8-bit uplink; the server evaluates on the 10k test images.
  rm -rf "$BUILD/round"
  mkdir -p "$BUILD/round"
  "$ROOT/build/bin/fl-partition" --data "$ROOT/data/mnist" --clients 100 --only 1 \
    --out "$BUILD/round/shards" >/dev/null
  mv "$BUILD/round/shards/c0" "$BUILD/round/device0"
  # The same identities for both clients: the same device, two builds.
  mkdir -p "$BUILD/round/clients"
  "$KEYGEN" --out "$BUILD/round" --name server >/dev/null
  "$KEYGEN" --out "$BUILD/round" --name device >/dev/null
  cp "$BUILD/round/device.pub" "$BUILD/round/clients/"
  local s a guest total xs xa xrss
  read -r s a guest total < <(round_with arm64)
  read -r xs xa xrss _ < <(round_with x86)
  log "one round of the MNIST CNN, x86 fl-server + arm64 fl-client under qemu: $s s," \
    "test accuracy after it $a"
  log "arm64 client peak RSS: $((guest / 1024)) MiB (the arm64 process's own pages;" \
    "$((total / 1024)) MiB with qemu's code cache and heap)"
  log "the same round with the x86 fl-client, natively: $xs s, accuracy $xa," \
    "peak RSS $((xrss / 1024)) MiB"
}

# Peak resident KiB of an emulated process, sampled every 0.2 s from its
# smaps: "GUEST TOTAL". qemu-user maps the guest's memory (its binary,
# libraries, heap, stack) below the host's own binary (0x5555...), and keeps
# its translated code, its heap and its threads' stacks above, so the guest's
# share is what a device running the binary natively would hold.
sample_rss() {
  local pid="$1" guest=0 total=0 g t
  while [ -r "/proc/$pid/smaps" ]; do
    read -r g t < <(awk '
      /^[0-9a-f]+-[0-9a-f]+ / { split($1, r, "-"); low = (length(r[1]) < 12 || r[1] < "555500000000") }
      /^Rss:/ { all += $2; if (low) mine += $2 }
      END { print mine + 0, all + 0 }' "/proc/$pid/smaps" 2>/dev/null || echo "0 0")
    [ "${g:-0}" -gt "$guest" ] && guest=$g
    [ "${t:-0}" -gt "$total" ] && total=$t
    sleep 0.2
  done
  echo "$guest $total"
}

host_tools
for step in $STEPS; do
  case "$step" in
    sysroot) timed sysroot sysroot ;;
    build) timed build build ;;
    test) timed test unit_tests ;;
    round) timed round one_round ;;
    *) die "unknown step '$step' (sysroot, build, test, round)" ;;
  esac
done
for step in $STEPS; do log "wall time of $step: ${SECONDS_OF[$step]} s"; done
