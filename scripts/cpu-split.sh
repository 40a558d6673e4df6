#!/usr/bin/env bash
# Splits a replicator's CPU into a cost per upload and a cost that follows the data (README,
# "Why the CPU per transaction at 100ms stays above v0.3.13's"; issue 18).
#
# Usage: scripts/cpu-split.sh WALSHIP_BIN LITESTREAM_BIN [SECONDS]   (default 60 s per run)
#
# Each tool replicates one database to a file replica (defaults everywhere but sync-interval)
# while a writer commits 200 small transactions a second, at sync-interval 1s and 100ms. Printed
# per run: CPU per 1,000 transactions (user+system from /proc) and uploads a second (segments in
# the replica). Two runs of one tool give two equations, cpu/s = data + uploads/s x per-upload,
# solved at the end.
set -euo pipefail
[ $# -ge 2 ] || { sed -n 4p "$0" >&2; exit 1; }
WALSHIP=$(realpath "$1"); LITESTREAM=$(realpath "$2"); SECS=${3:-60}
command -v python3 >/dev/null || { echo "cpu-split: python3 is missing" >&2; exit 1; }
WORK=$(mktemp -d /tmp/walship-cpu-split.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
TICK=$(getconf CLK_TCK)

cat >"$WORK/writer.py" <<'PYEOF'
import os, sqlite3, sys, time
db, secs, rate = sys.argv[1], float(sys.argv[2]), 200.0
c = sqlite3.connect(db, isolation_level=None)
c.execute("PRAGMA journal_mode=WAL")
c.execute("PRAGMA synchronous=NORMAL")
c.execute("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v TEXT)")
start, n = time.time(), 0
while time.time() - start < secs:
    due = start + n / rate
    if due > time.time():
        time.sleep(due - time.time())
    c.execute("INSERT INTO t(v) VALUES (?)", (os.urandom(50).hex(),))
    n += 1
print(n)
PYEOF

# One run: prints "cpu_ticks tx uploads seconds".
run() {
  local bin=$1 sync=$2 d
  d=$(mktemp -d "$WORK/run.XXXX")
  printf 'dbs:\n  - path: %s/db.sqlite\n    replicas:\n      - type: file\n        path: %s/replica\n        sync-interval: %s\n' \
    "$d" "$d" "$sync" >"$d/cfg.yml"
  python3 "$WORK/writer.py" "$d/db.sqlite" 0 >/dev/null
  "$bin" replicate -config "$d/cfg.yml" >"$WORK/log.$sync" 2>&1 &
  local pid=$!
  sleep 3
  python3 "$WORK/writer.py" "$d/db.sqlite" 3 >/dev/null   # warm-up
  # The first snapshot must be in the replica before counting (a slow disk takes longer than
  # the warm-up; counting in a replica not yet made would abort the script).
  local i=0
  until [ -n "$(find "$d/replica" -name '*.snapshot.lz4' -print -quit 2>/dev/null)" ]; do
    i=$((i + 1))
    if [ $i -gt 600 ]; then
      echo "cpu-split: $bin made no snapshot in 60 s; its log: $WORK/log.$sync" >&2
      exit 1
    fi
    sleep 0.1
  done
  local s0 t0 tx t1 s1
  s0=$(find "$d/replica" -name '*.wal.lz4' | wc -l)
  t0=$(awk '{print $14+$15}' "/proc/$pid/stat")
  tx=$(python3 "$WORK/writer.py" "$d/db.sqlite" "$SECS")
  sleep 1
  t1=$(awk '{print $14+$15}' "/proc/$pid/stat")
  s1=$(find "$d/replica" -name '*.wal.lz4' | wc -l)
  kill "$pid"; wait "$pid" 2>/dev/null || true
  echo "$((t1 - t0)) $tx $((s1 - s0)) $SECS"
}

for tool in walship litestream; do
  bin=$WALSHIP; [ $tool = litestream ] && bin=$LITESTREAM
  read -r c1 x1 u1 s <<<"$(run "$bin" 1s)"
  read -r c2 x2 u2 _ <<<"$(run "$bin" 100ms)"
  python3 - "$tool" "$TICK" "$s" "$c1" "$x1" "$u1" "$c2" "$x2" "$u2" <<'PYEOF'
import sys
tool, tick, s = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
c1, x1, u1, c2, x2, u2 = map(float, sys.argv[4:])
cpu1, cpu2 = c1 / tick / s, c2 / tick / s            # CPU seconds per second
up1, up2 = u1 / s, u2 / s                            # uploads per second
for name, c, x, up in (("1s", c1, x1, up1), ("100ms", c2, x2, up2)):
    print(f"{tool:10} sync-interval {name:5}: {c / tick * 1e3 / (x / 1e3):6.1f} ms CPU per 1k tx, {up:5.2f} uploads/s")
if abs(up2 - up1) > 0.5:
    per = (cpu2 - cpu1) / (up2 - up1)
    rest = cpu1 - up1 * per
    print(f"{tool:10} per upload {per * 1e3:.2f} ms CPU; the rest {rest * 1e3 / (x1 / s / 1e3):.1f} ms per 1k tx")
else:
    print(f"{tool:10} uploads as often at both settings: no split")
PYEOF
done

