#!/usr/bin/env bash
# Runs every cargo fuzz target in fuzz/ for FUZZ_SECS seconds each (default 60), starting from
# the committed seed corpora in fuzz/corpus/<target>. Works on the stable toolchain (no
# sanitizer: `-s none`; Rust's own checks catch what ASan would in safe code).
# A crash leaves its input in fuzz/artifacts/<target>/ and fails this script: add that input
# to the target's regression test (or to the unit tests of the parser) before fixing it.
# New inputs found go to a scratch corpus, not the committed one.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${FUZZ_SECS:-60}
cargo fuzz --version 2>/dev/null | grep -q '0.13.2' || cargo install cargo-fuzz --locked --version 0.13.2
cd fuzz
cargo fuzz build -O -s none
mapfile -t TARGETS < <(cargo fuzz list)
SCRATCH=$(mktemp -d /tmp/walship-fuzz.XXXXXX)
trap 'rm -rf "$SCRATCH"' EXIT
for t in "${TARGETS[@]}"; do
  mkdir -p "$SCRATCH/$t"
  echo "fuzz: $t for ${SECS}s"
  # -rss_limit_mb: the decode target caps its own output at 64 MiB; more means a leak.
  cargo fuzz run -O -s none "$t" "$SCRATCH/$t" "corpus/$t" -- \
    -max_total_time="$SECS" -rss_limit_mb=1024 -timeout=10 -print_final_stats=1 2>&1 \
    | grep -E "^(stat::number_of_executed_units|stat::new_units_added|==|SUMMARY|Done)|panicked|ERROR" || true
  if [ -n "$(ls -A "artifacts/$t" 2>/dev/null)" ]; then
    echo "fuzz: $t found crashing inputs: $(ls "artifacts/$t")" >&2
    exit 1
  fi
done
echo "fuzz: ${#TARGETS[@]} targets, ${SECS}s each, no crash"
