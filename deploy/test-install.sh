#!/usr/bin/env bash
# Install test of the release files, run by scripts/test.sh after scripts/release.sh:
# the .deb installs with `dpkg -i` on a minimal Debian 11 (bullseye, glibc 2.31) root made by
# debootstrap, and there `walship version`, a replicate -> restore round trip on a file replica
# with an exact content check, and `walship check` against the suite's S3 server all work. The
# same round trip and check then run on this host with the release tarball's binary.
#
# The bullseye root is built once (`debootstrap --variant=minbase`, about a minute and 215 MB)
# and kept under target/test-tools; each run works in a copy. Needs root (chroot, debootstrap).
# Under CI=true anything missing is a failure; elsewhere a skip.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
TOOLS=${TEST_TOOLS_DIR:-$ROOT/target/test-tools}
start=$(date +%s)
fail() { echo "test-install: FAILED: $*" >&2; exit 1; }
skip_or_fail() {
  if [ "${CI:-}" = true ]; then fail "$*"; fi
  echo "test-install: SKIPPED: $*" >&2; exit 0
}
step() { echo "=== test-install: $* ($(( $(date +%s) - start ))s)"; }

[ "$(id -u)" = 0 ] || skip_or_fail "needs root (debootstrap, chroot)"
[ -n "${TEST_S3_ENDPOINT:-}" ] || skip_or_fail "no S3 server: TEST_S3_ENDPOINT unset (scripts/test.sh starts one)"
: "${TEST_S3_ACCESS_KEY:?}" "${TEST_S3_SECRET_KEY:?}" "${TEST_S3_REGION:=us-east-1}"
VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)
DEB=$ROOT/dist/walship_${VERSION}_amd64.deb
TARBALL=$ROOT/dist/walship-$VERSION-x86_64-linux.tar.gz
[ -f "$DEB" ] && [ -f "$TARBALL" ] || skip_or_fail "no release files in dist/ (run scripts/release.sh)"
(cd dist && sha256sum --quiet -c SHA256SUMS) || fail "dist/SHA256SUMS does not match the release files"
if ! command -v debootstrap >/dev/null; then
  apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends debootstrap >/dev/null \
    || skip_or_fail "cannot install debootstrap"
fi
command -v python3 >/dev/null || skip_or_fail "missing python3 (the test's SQLite writer and oracle)"

WORK=$(mktemp -d /tmp/walship-install-test.XXXXXX)
MOUNTS=()
cleanup() {
  local m
  for m in "${MOUNTS[@]}"; do umount -l "$m" 2>/dev/null || true; done
  pkill -f "$WORK/" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# --- the bullseye root (cached pristine copy; each run installs into its own copy)
PRISTINE=$TOOLS/debian-bullseye-minbase
if [ ! -x "$PRISTINE/bin/sh" ]; then
  step "debootstrap --variant=minbase bullseye (once; kept in $PRISTINE)"
  rm -rf "$PRISTINE.tmp"
  debootstrap --variant=minbase bullseye "$PRISTINE.tmp" http://deb.debian.org/debian >"$WORK/debootstrap.log" 2>&1 \
    || { tail -20 "$WORK/debootstrap.log" >&2; fail "debootstrap bullseye (log above)"; }
  rm -rf "$PRISTINE" && mv "$PRISTINE.tmp" "$PRISTINE"
fi
R=$WORK/bullseye
cp -a "$PRISTINE" "$R"
glibc=$(chroot "$R" /usr/bin/ldd --version | sed -n 1p)
step "bullseye root: $glibc"
grep -q ' 2\.31$' <<<"$glibc" || fail "the root's glibc is not 2.31: $glibc"
mount -t proc proc "$R/proc" && MOUNTS+=("$R/proc") || fail "cannot mount /proc in the root"

# --- install the package on the minimal system: its Depends must be satisfied there
step "dpkg -i $(basename "$DEB") in the bullseye root"
cp "$DEB" "$R/tmp/"
chroot "$R" dpkg -i "/tmp/$(basename "$DEB")" >"$WORK/dpkg.log" 2>&1 || { cat "$WORK/dpkg.log" >&2; fail "dpkg -i in bullseye"; }
chroot "$R" dpkg -s walship | grep -q '^Status: install ok installed' || fail "walship is not installed in the root"
for f in /usr/bin/walship /lib/systemd/system/walship.service /etc/walship/environment.example \
         /usr/share/man/man1/walship.1.gz /usr/share/bash-completion/completions/walship \
         /usr/share/zsh/vendor-completions/_walship /usr/share/fish/vendor_completions.d/walship.fish; do
  [ -f "$R$f" ] || fail "the package did not install $f"
done
size_kb=$(chroot "$R" dpkg-query -W -f='${Installed-Size}' walship)
[ "$size_kb" -le $((35 * 1024)) ] || fail "installed size $size_kb KiB is over 35 MiB"
if file_out=$(readelf -S "$R/usr/bin/walship" 2>/dev/null) && grep -q '\.debug_info' <<<"$file_out"; then
  fail "the installed binary carries debug information"
fi
ver=$(chroot "$R" /usr/bin/walship version) || fail "walship version in bullseye"
echo "  $ver (installed size $size_kb KiB)"
grep -q "^walship $VERSION (commit [0-9a-f]\{12\}" <<<"$ver" || fail "walship version does not name the version and commit: $ver"

# --- a replicate -> restore round trip with an exact content check, and check against S3
# RUN runs walship: "chroot ROOT" for the bullseye root, "" on the host. DIR is the directory
# (as seen from outside) that walship sees as /data (inside the root) or as itself (host).
round_trip() {
  local name=$1 outside=$2 inside=$3; shift 3
  local run=("$@")
  step "$name: replicate -> restore round trip (file replica)"
  mkdir -p "$outside"
  python3 - "$outside/app.db" <<'PY'
import sqlite3, sys
c = sqlite3.connect(sys.argv[1])
c.execute("PRAGMA journal_mode=wal")
c.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT, b BLOB)")
c.commit()
PY
  cat >"$outside/walship.yml" <<YML
dbs:
  - path: $inside/app.db
    monitor-interval: 1s
    replicas:
      - type: file
        path: $inside/replica
        sync-interval: 1s
YML
  "${run[@]}" walship replicate -config "$inside/walship.yml" >"$WORK/$name-replicate.log" 2>&1 &
  local pid=$!
  # The application: commits while walship runs (a checkpoint happens past 1000 pages).
  python3 - "$outside/app.db" <<'PY'
import os, sqlite3, sys, time
c = sqlite3.connect(sys.argv[1], timeout=10)
for i in range(400):
    c.execute("INSERT INTO t (v, b) VALUES (?, ?)", ("row %d" % i, os.urandom(3000 if i % 10 == 0 else 100)))
    c.commit()
    if i % 50 == 0:
        time.sleep(0.05)
c.execute("DELETE FROM t WHERE id % 7 = 0")
c.commit()
PY
  sleep 3
  kill -TERM "$pid"
  local waited=0
  while kill -0 "$pid" 2>/dev/null && [ $waited -lt 600 ]; do sleep 0.1; waited=$((waited + 1)); done
  if kill -0 "$pid" 2>/dev/null; then
    kill -9 "$pid"; cat "$WORK/$name-replicate.log" >&2; fail "$name: replicate did not stop within 60 s of SIGTERM"
  fi
  wait "$pid" || { cat "$WORK/$name-replicate.log" >&2; fail "$name: replicate did not exit 0 on SIGTERM"; }
  grep -q '"wal segment written"\|msg="wal segment written"\|wal segment written' "$WORK/$name-replicate.log" \
    || { cat "$WORK/$name-replicate.log" >&2; fail "$name: no upload logged at INFO"; }
  "${run[@]}" walship restore -o "$inside/restored.db" "file://$inside/replica" >"$WORK/$name-restore.log" 2>&1 \
    || { cat "$WORK/$name-restore.log" >&2; fail "$name: restore"; }
  python3 - "$outside/app.db" "$outside/restored.db" <<'PY' || fail "$name: the restored database differs from the source"
import hashlib, sqlite3, sys
def digest(path):
    c = sqlite3.connect(path)
    assert c.execute("PRAGMA integrity_check").fetchone()[0] == "ok", path + ": integrity_check"
    h = hashlib.sha256()
    n = 0
    for row in c.execute("SELECT id, v, b FROM t ORDER BY id"):
        h.update(repr(row).encode()); n += 1
    return n, h.hexdigest()
a, b = digest(sys.argv[1]), digest(sys.argv[2])
print("  source %d rows %s, restored %d rows %s" % (a[0], a[1][:16], b[0], b[1][:16]))
sys.exit(0 if a == b and a[0] > 300 else 1)
PY
  step "$name: walship check against S3 ($TEST_S3_ENDPOINT)"
  local bucket=install-test-$name-$$
  curl -sf --aws-sigv4 "aws:amz:$TEST_S3_REGION:s3" --user "$TEST_S3_ACCESS_KEY:$TEST_S3_SECRET_KEY" \
    -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" -X PUT "$TEST_S3_ENDPOINT/$bucket" -o /dev/null || fail "cannot create bucket $bucket"
  cat >"$outside/s3.yml" <<YML
dbs:
  - path: $inside/app.db
    replicas:
      - type: s3
        bucket: $bucket
        path: app
        endpoint: $TEST_S3_ENDPOINT
        region: $TEST_S3_REGION
        force-path-style: true
YML
  "${run[@]}" env AWS_ACCESS_KEY_ID="$TEST_S3_ACCESS_KEY" AWS_SECRET_ACCESS_KEY="$TEST_S3_SECRET_KEY" \
    walship check -config "$inside/s3.yml" >"$WORK/$name-check.log" 2>&1 \
    || { cat "$WORK/$name-check.log" >&2; fail "$name: walship check against S3"; }
  sed 's/^/  /' "$WORK/$name-check.log"
}

# A clean environment inside the root, as a service there would have (this host exports
# AWS_CA_BUNDLE and the like, naming files the minimal root does not have).
round_trip bullseye "$R/data" /data chroot "$R" env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root

# --- the host (Debian 12): the tarball's binary
step "host: $(ldd --version | sed -n 1p)"
tar -xzf "$TARBALL" -C "$WORK"
HOSTBIN=$WORK/walship-$VERSION-x86_64-linux
[ -x "$HOSTBIN/walship" ] || fail "the tarball has no walship binary"
for f in README.md LICENSE RUNBOOK.md examples/walship.yml systemd/walship.service \
         completions/walship.bash completions/_walship completions/walship.fish man/walship.1; do
  [ -f "$HOSTBIN/$f" ] || fail "the tarball has no $f"
done
[ "$("$HOSTBIN/walship" version)" = "$ver" ] || fail "the tarball's binary is not the package's"
round_trip host "$WORK/host" "$WORK/host" env PATH="$HOSTBIN:$PATH"
step "passed"
