#!/bin/sh
# ProtectSystem=strict + StateDirectory + PrivateTmp, emulated with a mount namespace.
set -e
STATE="$1"; shift
mount --make-rprivate /
mount --bind / /mnt 2>/dev/null || true
mount --bind "$STATE" "$STATE"
mount -o remount,bind,ro / 
mount -o remount,bind,rw "$STATE"
mount -t tmpfs tmpfs /tmp
touch /etc/fedge/probe 2>/dev/null && echo "UNEXPECTED: /etc writable" || echo "/etc is read-only"
touch /usr/probe 2>/dev/null && echo "UNEXPECTED: /usr writable" || echo "/usr is read-only"
cd "$STATE"
exec runuser -u fedge -- "$@"
