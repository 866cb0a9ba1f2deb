#!/usr/bin/env bash
# PackageTest: builds the Debian packages from this build (cpack -G DEB),
# checks their file lists and control data, unpacks them into a scratch root
# (dpkg-deb -x: no root, no container), runs the unpacked binaries' --help
# and --config, checks the maintainer scripts' syntax, and verifies the
# systemd units with systemd-analyze against that root.
#
#   tests/package_test.sh BUILD_DIR
set -euo pipefail

BUILD="$(cd "$1" && pwd)"
WORK="$(mktemp -d /tmp/fedge-package-test.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

(cd "$BUILD" && cpack -G DEB -B "$WORK/out" >"$WORK/cpack.log" 2>&1) ||
  { cat "$WORK/cpack.log" >&2; fail "cpack -G DEB"; }
VERSION="$(sed -n 's/^set(CPACK_PACKAGE_VERSION "\(.*\)")$/\1/p' "$BUILD/CPackConfig.cmake")"
for p in common server client; do
  deb="$(ls "$WORK"/out/fedge-${p}_"$VERSION"_*.deb)"
  [ -f "$deb" ] || fail "no fedge-$p package"
  dpkg-deb -c "$deb" | awk '{print $6}' | sed 's|^\./|/|' >"$WORK/$p.files"
  dpkg-deb -I "$deb" >"$WORK/$p.info"
  echo "fedge-$p: $(wc -l <"$WORK/$p.files") entries, $(stat -c %s "$deb") bytes"
done

expect_file() {  # package path
  grep -qx "$2" "$WORK/$1.files" || { cat "$WORK/$1.files" >&2; fail "fedge-$1 lacks $2"; }
}
expect_file common /usr/bin/fl-keygen
expect_file common /etc/fedge/
expect_file server /usr/bin/fl-server
expect_file server /usr/bin/fl-plot
expect_file server /usr/lib/systemd/system/fedge-server.service
expect_file server /etc/fedge/server.toml
expect_file server /etc/fedge/clients/
expect_file server /usr/share/doc/fedge-server/fl-server--help.txt
expect_file server /usr/share/doc/fedge-server/README.md
expect_file server /usr/share/doc/fedge-server/docs/operating.md
expect_file client /usr/share/doc/fedge-client/docs/deploying.md
expect_file client /usr/bin/fl-client
expect_file client /usr/lib/systemd/system/fedge-client.service
expect_file client /etc/fedge/client.toml
expect_file client /usr/share/doc/fedge-client/fl-client--help.txt
# No file is in two packages (dpkg would refuse the second).
sort "$WORK"/{common,server,client}.files | grep -v '/$' | uniq -d >"$WORK/dups"
[ ! -s "$WORK/dups" ] || { cat "$WORK/dups" >&2; fail "files in two packages"; }

# Control data: shared-library dependencies found, the configs are conffiles,
# the maintainer scripts are there.
grep -q 'Depends:.*libzmq5' "$WORK/server.info" || fail "fedge-server does not depend on libzmq5"
grep -q 'Depends:.*fedge-common (= ' "$WORK/client.info" || fail "fedge-client lacks fedge-common"
for p in server client; do
  deb="$(ls "$WORK"/out/fedge-${p}_*.deb)"
  dpkg-deb -e "$deb" "$WORK/control-$p"
  grep -qx "/etc/fedge/$p.toml" "$WORK/control-$p/conffiles" || fail "$p.toml is not a conffile"
  for s in postinst prerm; do
    [ -x "$WORK/control-$p/$s" ] || fail "fedge-$p has no executable $s"
    sh -n "$WORK/control-$p/$s" || fail "fedge-$p $s: syntax"
  done
done
for p in server client; do
  # An upgrade restarts a running service; a purge leaves the identities and
  # state (no postrm: docs/operating.md, "Packages").
  grep -q "systemctl try-restart fedge-$p.service" "$WORK/control-$p/postinst" ||
    fail "fedge-$p postinst does not restart the service on upgrade"
  [ ! -e "$WORK/control-$p/postrm" ] || fail "fedge-$p has a postrm"
done
dpkg-deb -e "$(ls "$WORK"/out/fedge-common_*.deb)" "$WORK/control-common"
sh -n "$WORK/control-common/postinst" || fail "fedge-common postinst: syntax"
grep -q 'adduser --system' "$WORK/control-common/postinst" || fail "no fedge system user"

# Unpacked into a scratch root: the binaries run and read the shipped configs.
ROOT="$WORK/root"
mkdir -p "$ROOT"
for deb in "$WORK"/out/*.deb; do dpkg-deb -x "$deb" "$ROOT"; done
"$ROOT/usr/bin/fl-server" --help >/dev/null || fail "fl-server --help"
"$ROOT/usr/bin/fl-client" --help >/dev/null || fail "fl-client --help"
grep -q -- '--config' "$ROOT/usr/share/doc/fedge-server/fl-server--help.txt" ||
  fail "the packaged --help lacks --config"
# The shipped server.toml parses: every key is a flag (a bad key stops the
# server before anything else; here the key file it names is missing, which
# is the next thing it says).
set +e
out="$("$ROOT/usr/bin/fl-server" --config "$ROOT/etc/fedge/server.toml" 2>&1)"
set -e
if echo "$out" | grep -q 'unknown key'; then echo "$out" >&2; fail "server.toml has an unknown key"; fi
echo "$out" | grep -q '/etc/fedge/server.key' || { echo "$out" >&2; fail "server.toml not read"; }
set +e
out="$("$ROOT/usr/bin/fl-client" --config "$ROOT/etc/fedge/client.toml" 2>&1)"
set -e
if echo "$out" | grep -q 'unknown key'; then echo "$out" >&2; fail "client.toml has an unknown key"; fi
echo "$out" | grep -q '/etc/fedge' || { echo "$out" >&2; fail "client.toml not read"; }

# The units: systemd-analyze verify, with the unpacked binaries on their
# ExecStart paths (a copy of each unit whose paths point into the root).
for u in fedge-server fedge-client; do
  sed "s|/usr/bin/|$ROOT/usr/bin/|g" "$ROOT/usr/lib/systemd/system/$u.service" >"$WORK/$u.service"
  grep -q '^ProtectSystem=strict' "$WORK/$u.service" || fail "$u: no ProtectSystem=strict"
  grep -q '^NoNewPrivileges=true' "$WORK/$u.service" || fail "$u: no NoNewPrivileges"
  grep -q '^PrivateTmp=true' "$WORK/$u.service" || fail "$u: no PrivateTmp"
  grep -q '^StateDirectory=fedge/' "$WORK/$u.service" || fail "$u: no StateDirectory"
  grep -q '^Restart=on-failure' "$WORK/$u.service" || fail "$u: no Restart=on-failure"
  if ! systemd-analyze verify "$WORK/$u.service" >"$WORK/$u.verify" 2>&1; then
    cat "$WORK/$u.verify" >&2
    fail "systemd-analyze verify $u.service"
  fi
  # (verify prints warnings it does not fail on: none is acceptable.)
  if grep -v -e '^$' "$WORK/$u.verify" | grep -q .; then
    cat "$WORK/$u.verify" >&2
    fail "systemd-analyze verify $u.service printed warnings"
  fi
done
grep -q '^ExecReload=/bin/kill -HUP \$MAINPID' "$ROOT/usr/lib/systemd/system/fedge-server.service" ||
  fail "fedge-server: no ExecReload sending SIGHUP"
grep -q '^CPUQuota=' "$ROOT/usr/lib/systemd/system/fedge-client.service" || fail "fedge-client: no CPUQuota"
echo "PASS: fedge-common, fedge-server, fedge-client $VERSION"
