# Sourced by scripts/test.sh and scripts/release.sh: the toolchain that builds the released binary.
#
# The binary links against glibc 2.31 (Debian 11, Ubuntu 20.04) through cargo-zigbuild, with Zig
# as the C compiler and linker, so it starts on every droplet image from those on. Both come from
# PyPI (wheels with the executables inside), installed once under target/test-tools. The tests
# and the package use the same build: `cargo zigbuild ... --target $RELEASE_TARGET`.
ZIGLANG_VERSION=0.15.2
CARGO_ZIGBUILD_VERSION=0.24.1
RELEASE_TARGET=x86_64-unknown-linux-gnu.2.31
RELEASE_TRIPLE=x86_64-unknown-linux-gnu
RELEASE_GLIBC=2.31
ZIG_TOOLS=${TEST_TOOLS_DIR:-$ROOT/target/test-tools}/zig-$ZIGLANG_VERSION-czb-$CARGO_ZIGBUILD_VERSION
if [ ! -x "$ZIG_TOOLS/bin/cargo-zigbuild" ] || [ ! -x "$ZIG_TOOLS/ziglang/zig" ]; then
  command -v python3 >/dev/null || { echo "toolchain: python3 is missing (apt-get install python3 python3-pip)" >&2; exit 1; }
  rm -rf "$ZIG_TOOLS.tmp"
  PIP_ROOT_USER_ACTION=ignore python3 -m pip install -q --disable-pip-version-check --no-warn-script-location --target "$ZIG_TOOLS.tmp" \
    "ziglang==$ZIGLANG_VERSION" "cargo-zigbuild==$CARGO_ZIGBUILD_VERSION"
  rm -rf "$ZIG_TOOLS" && mv "$ZIG_TOOLS.tmp" "$ZIG_TOOLS"
fi
export PATH="$ZIG_TOOLS/bin:$ZIG_TOOLS/ziglang:$PATH"
export RELEASE_TARGET RELEASE_TRIPLE RELEASE_GLIBC
export RELEASE_BIN="$ROOT/target/$RELEASE_TRIPLE/release/walship"
