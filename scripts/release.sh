#!/usr/bin/env bash
# The release files, from a clean checkout, into dist/ (docs/release.md):
#   walship-<version>-x86_64-linux.tar.gz   binary, README, LICENSE, example configs, systemd unit,
#                                           shell completions, man pages, the runbook
#   walship_<version>_amd64.deb             the same installed under /usr, /lib/systemd, /etc
#   walship-<version>-x86_64-linux.debug    the binary's debug information (not installed)
#   SHA256SUMS
# The binary is built by cargo-zigbuild against glibc 2.31 and checked for it: it starts on
# Debian 11/12 and Ubuntu 20.04/22.04/24.04. Needs python3 (for the toolchain from PyPI), objcopy
# and dpkg-deb (Debian's binutils and dpkg).
# Usage: scripts/release.sh             build, then package
#        scripts/release.sh --no-build  package the binary scripts/test.sh built (same target)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
. scripts/toolchain.sh
fail() { echo "release: $*" >&2; exit 1; }
for tool in objcopy objdump dpkg-deb gzip tar sha256sum; do
  command -v "$tool" >/dev/null || fail "missing tool: $tool (apt-get install binutils dpkg gzip tar coreutils)"
done

if [ "${1:-}" != --no-build ]; then
  cargo zigbuild --release --locked -p walship --bin walship --target "$RELEASE_TARGET"
fi
[ -x "$RELEASE_BIN" ] || fail "no binary at $RELEASE_BIN (run without --no-build)"
VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)
[ -n "$VERSION" ] || fail "no version in Cargo.toml"
# Reproducible archives: every file dated from the commit.
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}
export SOURCE_DATE_EPOCH

# The glibc promise, checked on the binary itself: no symbol version above 2.31, no DT_RELR
# (GLIBC_ABI_DT_RELR needs 2.36), and no shared library beyond glibc's and libgcc_s.
glibc_max=$(objdump -T "$RELEASE_BIN" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -1)
[ "$(printf '%s\n%s\n' "$glibc_max" "$RELEASE_GLIBC" | sort -V | tail -1)" = "$RELEASE_GLIBC" ] \
  || fail "$RELEASE_BIN needs glibc $glibc_max, more than $RELEASE_GLIBC"
if objdump -T "$RELEASE_BIN" | grep -q GLIBC_ABI_DT_RELR; then fail "$RELEASE_BIN needs GLIBC_ABI_DT_RELR (glibc 2.36)"; fi
needed=$(objdump -p "$RELEASE_BIN" | awk '/NEEDED/ {print $2}' | sort -u)
for lib in $needed; do
  case "$lib" in
    libc.so.6|libm.so.6|libpthread.so.0|libdl.so.2|librt.so.1|ld-linux-x86-64.so.2|libgcc_s.so.1) ;;
    *) fail "$RELEASE_BIN needs $lib: not declared in the package's Depends" ;;
  esac
done
# ca-certificates only as Recommends: TLS to S3 and heartbeats verifies against the system's
# roots, but a minimal system must still install the package (plain-HTTP and file replicas).
depends="libc6 (>= $glibc_max)"
if grep -qx libgcc_s.so.1 <<<"$needed"; then depends="$depends, libgcc-s1"; fi

DIST=$ROOT/dist
rm -rf "$DIST" && mkdir -p "$DIST"
STAGE=$(mktemp -d "${TMPDIR:-/tmp}/walship-release.XXXXXX")
trap 'rm -rf "$STAGE"' EXIT
umask 022

# Debug information into its own file; the shipped binary keeps a link to it (gdb finds
# walship.debug next to the binary or under /usr/lib/debug/usr/bin/).
objcopy --only-keep-debug "$RELEASE_BIN" "$STAGE/walship.debug"
objcopy --strip-debug --strip-unneeded --add-gnu-debuglink="$STAGE/walship.debug" "$RELEASE_BIN" "$STAGE/walship"
chmod 0755 "$STAGE/walship"
install -m 0644 "$STAGE/walship.debug" "$DIST/walship-$VERSION-x86_64-linux.debug"
"$STAGE/walship" version >/dev/null || fail "the stripped binary does not start"

# The tarball's tree.
NAME=walship-$VERSION-x86_64-linux
T=$STAGE/$NAME
mkdir -p "$T/examples" "$T/systemd" "$T/completions" "$T/man"
install -m 0755 "$STAGE/walship" "$T/walship"
install -m 0644 README.md LICENSE "$T/"
install -m 0644 deploy/README.md "$T/RUNBOOK.md"
install -m 0644 deploy/examples/walship.yml deploy/examples/walship-local.yml deploy/environment.example "$T/examples/"
install -m 0644 deploy/walship.service "$T/systemd/"
"$STAGE/walship" completion bash >"$T/completions/walship.bash"
"$STAGE/walship" completion zsh >"$T/completions/_walship"
"$STAGE/walship" completion fish >"$T/completions/walship.fish"
"$STAGE/walship" man "$T/man"
ls "$T/man"/walship.1 >/dev/null || fail "no walship.1 man page"
tar_opts=(--sort=name --owner=0 --group=0 --numeric-owner --mtime="@$SOURCE_DATE_EPOCH")
tar "${tar_opts[@]}" -C "$STAGE" -cf - "$NAME" | gzip -9n >"$DIST/$NAME.tar.gz"

# The Debian package's tree.
D=$STAGE/deb
install -D -m 0755 "$STAGE/walship" "$D/usr/bin/walship"
install -D -m 0644 deploy/walship.service "$D/lib/systemd/system/walship.service"
install -d -m 0755 "$D/etc/walship"
install -m 0600 deploy/environment.example "$D/etc/walship/environment.example"
DOC=$D/usr/share/doc/walship
install -D -m 0644 deploy/README.md "$DOC/README.md"
install -D -m 0644 deploy/examples/walship.yml "$DOC/examples/walship.yml"
install -m 0644 deploy/examples/walship-local.yml deploy/environment.example "$DOC/examples/"
{
  echo "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/"
  echo "Upstream-Name: walship"
  echo
  echo "Files: *"
  echo "Copyright: walship contributors"
  echo "License: Apache-2.0"
  echo " On Debian systems the full text is in /usr/share/common-licenses/Apache-2.0."
} >"$DOC/copyright"
install -D -m 0644 "$T/completions/walship.bash" "$D/usr/share/bash-completion/completions/walship"
install -D -m 0644 "$T/completions/_walship" "$D/usr/share/zsh/vendor-completions/_walship"
install -D -m 0644 "$T/completions/walship.fish" "$D/usr/share/fish/vendor_completions.d/walship.fish"
install -d -m 0755 "$D/usr/share/man/man1"
for m in "$T/man"/*.1; do gzip -9n <"$m" >"$D/usr/share/man/man1/$(basename "$m").gz"; done
find "$D" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
install -d -m 0755 "$D/DEBIAN"
(cd "$D" && find . -path ./DEBIAN -prune -o -type f -printf '%P\n' | LC_ALL=C sort | xargs md5sum) >"$D/DEBIAN/md5sums"
echo /etc/walship/environment.example >"$D/DEBIAN/conffiles"
installed_kb=$(du -sk --apparent-size --exclude=DEBIAN "$D" | cut -f1)
cat >"$D/DEBIAN/control" <<CONTROL
Package: walship
Version: $VERSION
Architecture: amd64
Maintainer: walship maintainers <walship@example.invalid>
Installed-Size: $installed_kb
Depends: $depends
Recommends: ca-certificates
Section: admin
Priority: optional
Description: continuous streaming backup of SQLite databases
 walship streams every committed change of SQLite databases (WAL mode) to
 S3-compatible storage (DigitalOcean Spaces, AWS S3, MinIO, R2, B2), SFTP or a
 local directory, and restores them to the latest state or a point in time. It
 reads litestream.yml and the Litestream v0.3.13 replica layout.
 .
 The systemd unit is installed but not enabled: see
 /usr/share/doc/walship/README.md.
CONTROL
chmod 0644 "$D/DEBIAN/"*
DEB=$DIST/walship_${VERSION}_amd64.deb
dpkg-deb --root-owner-group -Zxz --build "$D" "$DEB" >/dev/null
[ "$installed_kb" -le $((35 * 1024)) ] || fail "installed size ${installed_kb} KiB is over 35 MiB"

(cd "$DIST" && sha256sum -- *.tar.gz *.deb *.debug >SHA256SUMS)
echo "release: walship $VERSION (glibc >= $glibc_max; Depends: $depends; installed size ${installed_kb} KiB)"
ls -l "$DIST"
