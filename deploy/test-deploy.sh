#!/usr/bin/env bash
# Deployment test, run by scripts/test.sh after the cargo tests, as root, with the S3
# server of scripts/test.sh in TEST_S3_*. It installs the walship .deb on this machine and walks
# deploy/README.md (the runbook): every ```sh runbook=NAME block is extracted and run word for
# word, with only the bucket name, the keys/endpoint/region, the SFTP host and the example
# timestamp replaced, so the document cannot drift from the binary. There is no systemd as PID 1 here: systemctl and
# journalctl are stand-ins (deploy/ci/) that run walship exactly as the unit says (User= from the
# drop-in, EnvironmentFile=, Type=notify's READY=1, SIGTERM and a clean exit on stop), and the
# installed unit and the runbook's drop-in are checked with systemd-analyze verify.
#
# Between the runbook's steps the script plays the application (user `app`, databases in
# /var/lib/app, a writer that keeps committing) and checks with oracles: restores pass
# integrity_check and equal the source's logical content, files keep their owner, the
# application can still write, and dpkg --purge removes every file the package installed.
#
# It changes the machine (dpkg -i, /etc/walship*, /etc/litestream.yml, user `app`, /var/lib/app,
# /var/backups/walship, the runbook's restores in /root/walship-restore) and undoes all of it on exit; it refuses to start when any of those already exists. Under CI=true a missing tool or
# server is a failure; elsewhere it is a skip.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
RUNBOOK=$ROOT/deploy/README.md
start=$(date +%s)

fail() { echo "test-deploy: FAILED: $*" >&2; exit 1; }
skip_or_fail() {
  if [ "${CI:-}" = true ]; then fail "$*"; fi
  echo "test-deploy: SKIPPED: $*" >&2; exit 0
}
step() { echo "=== test-deploy: $* ($(( $(date +%s) - start ))s)"; }

[ "$(id -u)" = 0 ] || skip_or_fail "needs root (dpkg -i, useradd)"
[ -n "${TEST_S3_ENDPOINT:-}" ] || skip_or_fail "no S3 server: TEST_S3_ENDPOINT unset (scripts/test.sh starts one)"
: "${TEST_S3_ACCESS_KEY:?}" "${TEST_S3_SECRET_KEY:?}" "${TEST_S3_REGION:=us-east-1}"

# Tools. systemd (for systemd-analyze) and sqlite3 are Debian packages; install them when missing.
need_apt=()
command -v systemd-analyze >/dev/null || need_apt+=(systemd)
command -v sqlite3 >/dev/null || need_apt+=(sqlite3)
[ -x /usr/bin/python3 ] || need_apt+=(python3)
if [ ${#need_apt[@]} -gt 0 ]; then
  apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need_apt[@]}" >/dev/null \
    || skip_or_fail "cannot install ${need_apt[*]}"
fi
for tool in dpkg dpkg-deb setpriv runuser useradd curl systemd-analyze sqlite3; do
  command -v "$tool" >/dev/null || skip_or_fail "missing tool: $tool"
done
SFTP=1
if [ -z "${TEST_SFTP_HOST:-}" ]; then
  [ "${CI:-}" != true ] || fail "no SFTP server: TEST_SFTP_HOST unset (scripts/test.sh starts one)"
  echo "test-deploy: WARNING: no SFTP server (TEST_SFTP_*): runbook block sftp-known-hosts is not exercised" >&2
  SFTP=0
else
  : "${TEST_SFTP_PORT:?}" "${TEST_SFTP_USER:?}" "${TEST_SFTP_KEY:?}" "${TEST_SFTP_ROOT:?}"
  for tool in ssh-keyscan ssh-keygen; do command -v "$tool" >/dev/null || skip_or_fail "missing tool: $tool"; done
fi
VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$ROOT/Cargo.toml" | head -1)
DEB=${WALSHIP_DEB:-$ROOT/dist/walship_${VERSION}_amd64.deb}
[ -f "$DEB" ] || skip_or_fail "no package at $DEB (scripts/release.sh builds it)"
LITESTREAM=${LITESTREAM_BIN:-$ROOT/target/test-tools/bin/litestream}
[ -x "$LITESTREAM" ] || skip_or_fail "no Litestream v0.3.13 at $LITESTREAM (LITESTREAM_BIN; scripts/test.sh installs it)"
BIN=${WALSHIP_BIN:-$ROOT/target/x86_64-unknown-linux-gnu/release/walship}
[ -x "$BIN" ] || skip_or_fail "no release build at $BIN (cargo build --release -p walship)"

# Refuse to touch a machine that already has any of this.
for p in /etc/walship.yml /etc/litestream.yml /etc/walship /var/lib/app /var/backups/walship /root/walship-restore /etc/systemd/system/walship.service.d /etc/systemd/system/walship-follow.service /lib/systemd/system/walship.service /usr/bin/walship; do
  [ ! -e "$p" ] || fail "$p already exists; this test installs and removes it (run it on a CI machine)"
done
! dpkg -s walship >/dev/null 2>&1 || fail "package walship is already installed"
! getent passwd app >/dev/null || fail "user 'app' already exists"

WORK=$(mktemp -d /tmp/walship-deploy.XXXXXX)
chmod 0755 "$WORK"
STATE=$WORK/state SHIMS=$WORK/shims
mkdir -p "$STATE" "$SHIMS"
chmod 0755 "$STATE"
cp "$ROOT"/deploy/ci/* "$SHIMS"/
chmod 0755 "$SHIMS"/systemctl "$SHIMS"/journalctl
chmod 0644 "$SHIMS"/*.py
export DEPLOY_STATE=$STATE
CLEAN_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
WRITER_PID=
created_user=

cleanup() {
  local rc=$?
  set +e
  [ -z "$WRITER_PID" ] || { touch "$WORK/stop-writer"; wait "$WRITER_PID"; }
  PATH=$SHIMS:$CLEAN_PATH systemctl stop walship >/dev/null 2>&1
  if [ -s "$STATE/walship.pid" ]; then kill -KILL "$(cat "$STATE/walship.pid")" 2>/dev/null; fi
  PATH=$SHIMS:$CLEAN_PATH systemctl stop walship-follow >/dev/null 2>&1
  if [ -s "$STATE/walship-follow.pid" ]; then kill -KILL "$(cat "$STATE/walship-follow.pid")" 2>/dev/null; fi
  if [ $rc != 0 ] && [ -s "$STATE/walship-follow.log" ]; then echo "--- walship-follow service log (last 40 lines)"; tail -40 "$STATE/walship-follow.log"; fi
  if [ -s "$STATE/notify.pid" ]; then kill "$(cat "$STATE/notify.pid")" 2>/dev/null; fi
  PATH=$SHIMS:$CLEAN_PATH systemctl stop litestream >/dev/null 2>&1
  if [ $rc != 0 ] && [ -s "$STATE/walship.log" ]; then echo "--- walship service log (last 40 lines)"; tail -40 "$STATE/walship.log"; fi
  dpkg -s walship >/dev/null 2>&1 && dpkg --purge walship >/dev/null
  rm -rf /etc/walship.yml /etc/litestream.yml /etc/walship /etc/systemd/system/walship.service.d /etc/systemd/system/walship-follow.service /var/lib/app /var/backups/walship
  [ -z "$created_user" ] || userdel app 2>/dev/null
  rm -rf /root/walship-restore
  rm -rf "$WORK"
  exit $rc
}
trap cleanup EXIT

# The runbook's blocks, in document order; every one must be run by this script.
mapfile -t ALL_BLOCKS < <(sed -n 's/^```sh runbook=\([a-z0-9-]*\)$/\1/p' "$RUNBOOK")
[ ${#ALL_BLOCKS[@]} -gt 0 ] || fail "no \`\`\`sh runbook=NAME blocks in $RUNBOOK"
RAN=()
block_text() {
  awk -v open='```sh runbook='"$1" '$0 == open {on = 1; next} on && /^```$/ {exit} on {print}' "$RUNBOOK"
}
# run_block NAME [SED_EXPRESSION...]: the block as written, with these substitutions only.
run_block() {
  local name=$1 text expr
  shift
  text=$(block_text "$name")
  [ -n "$text" ] || fail "runbook block '$name' not found in $RUNBOOK"
  for expr in "$@"; do text=$(printf '%s\n' "$text" | sed -e "$expr"); done
  step "runbook: $name"
  printf '%s\n' "$text" | sed 's/^/  $ /'
  (cd "$WORK" && PATH=$SHIMS:$CLEAN_PATH bash -euo pipefail -c "$text") || fail "runbook block '$name' failed (commands above)"
  RAN+=("$name")
}
as_app() { runuser -u app -- "$@"; }
digest() { as_app /usr/bin/python3 "$SHIMS/digest.py" "$1"; }          # a database the app owns
digest_root() { /usr/bin/python3 "$SHIMS/digest.py" "$1"; }             # a restored copy
with_env() { (set -a; . /etc/walship/environment; set +a; export PATH=$CLEAN_PATH; "$@"); }
# The application's files must all still belong to it (walship runs as the app's user).
check_ownership() {
  local bad
  bad=$(find /var/lib/app ! -user app -o ! -group app | head -5)
  [ -z "$bad" ] || fail "files under /var/lib/app not owned by app:app: $bad"
}
app_can_write() {
  local db
  for db in "$@"; do
    as_app sqlite3 "$db" "PRAGMA busy_timeout=10000; INSERT INTO items(at, body) VALUES (0, 'written by the application');" >/dev/null \
      || fail "the application cannot write $db"
  done
}
s3curl() { curl -sf --aws-sigv4 "aws:amz:$TEST_S3_REGION:s3" --user "$TEST_S3_ACCESS_KEY:$TEST_S3_SECRET_KEY" \
             -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" "$@"; }

BUCKET=deploy-test-$$-$(date +%s)
step "bucket $BUCKET on $TEST_S3_ENDPOINT"
s3curl -X PUT "$TEST_S3_ENDPOINT/$BUCKET" -o /dev/null || fail "cannot create bucket $BUCKET on $TEST_S3_ENDPOINT"

step "the release package"
cp "$DEB" "$(dirname "$DEB")/SHA256SUMS" "$WORK/"
ls -l "$WORK"/walship_*_amd64.deb

# --- install
run_block install
[ "$(command -v walship)" = /usr/bin/walship ] || fail "walship is not /usr/bin/walship"
[ "$(/usr/bin/walship version)" = "$("$BIN" version)" ] || fail "/usr/bin/walship is not the build under test ($BIN)"
/usr/bin/walship version
mapfile -t PKG_FILES < <(dpkg -L walship)
for f in /usr/bin/walship /lib/systemd/system/walship.service /etc/walship/environment.example \
         /usr/share/doc/walship/examples/walship.yml /usr/share/doc/walship/examples/walship-local.yml \
         /usr/share/doc/walship/examples/environment.example /usr/share/doc/walship/README.md; do
  [ -f "$f" ] || fail "package did not install $f"
done
[ "$(stat -c %a /etc/walship)" = 755 ] || fail "/etc/walship is $(stat -c %a /etc/walship), want 755"
[ "$(stat -c %a /etc/walship/environment.example)" = 600 ] || fail "environment.example is not 0600"
grep -qx /etc/walship/environment.example /var/lib/dpkg/info/walship.conffiles || fail "environment.example is not a conffile"
if ls /etc/systemd/system/*.wants/walship.service >/dev/null 2>&1; then fail "dpkg -i enabled walship.service"; fi
[ ! -e /etc/walship.yml ] || fail "the package installed /etc/walship.yml"
# systemd-analyze verify only warns (exit 0) about unknown keys and the like: any output fails.
verify_unit() {
  local out
  out=$(systemd-analyze verify /lib/systemd/system/walship.service 2>&1) || { echo "$out" >&2; fail "systemd-analyze verify ($1)"; }
  [ -z "$out" ] || { echo "$out" >&2; fail "systemd-analyze verify warns ($1)"; }
  echo "  systemd-analyze verify: clean ($1)"
}
step "systemd-analyze verify (unit as installed, placeholder User=)"
verify_unit "as installed"
exposure=$(systemd-analyze security --offline=true /lib/systemd/system/walship.service 2>&1 | sed -n 's/.*exposure level for walship.service: \([0-9.]*\).*/\1/p')
echo "  systemd-analyze security --offline: exposure $exposure"
awk -v e="$exposure" 'BEGIN { exit !(e != "" && e + 0 <= 2.0) }' || fail "unit hardening regressed: exposure '$exposure' (want <= 2.0)"

# --- the application: user app, two databases in WAL mode, a writer that keeps committing
step "application: user app, /var/lib/app/{app,queue}.db, writer"
useradd --system --user-group --home-dir /var/lib/app --create-home --shell /usr/sbin/nologin app
created_user=1
chmod 0750 /var/lib/app
for db in app queue; do
  as_app sqlite3 "/var/lib/app/$db.db" "PRAGMA journal_mode=wal; CREATE TABLE items(id INTEGER PRIMARY KEY, at REAL, body BLOB);" >/dev/null
done
start_writer() {
  rm -f "$WORK/stop-writer"
  as_app /usr/bin/python3 "$SHIMS/app_writer.py" "$WORK/stop-writer" "$@" &
  WRITER_PID=$!
}
stop_writer() {
  touch "$WORK/stop-writer"; wait "$WRITER_PID" || fail "the application writer failed"; WRITER_PID=
}
start_writer /var/lib/app/app.db /var/lib/app/queue.db

# --- config + environment, pointed at the local S3 server (the only substitutions)
run_block config
sed -i "s/my-app-backups/$BUCKET/g" /etc/walship.yml
sed -i -e "s|^LITESTREAM_ACCESS_KEY_ID=.*|LITESTREAM_ACCESS_KEY_ID=$TEST_S3_ACCESS_KEY|" \
       -e "s|^LITESTREAM_SECRET_ACCESS_KEY=.*|LITESTREAM_SECRET_ACCESS_KEY=$TEST_S3_SECRET_KEY|" \
       -e "s|^DIGITALOCEAN_SPACES_ENDPOINT=.*|DIGITALOCEAN_SPACES_ENDPOINT=$TEST_S3_ENDPOINT|" \
       -e "s|^DIGITALOCEAN_SPACES_REGION=.*|DIGITALOCEAN_SPACES_REGION=$TEST_S3_REGION|" /etc/walship/environment
[ "$(stat -c '%a %U' /etc/walship/environment)" = "600 root" ] || fail "/etc/walship/environment is not 0600 root"
[ "$(stat -c %a /etc/walship.yml)" = 644 ] || fail "/etc/walship.yml is not 0644"

run_block check
run_block dropin
verify_unit "with the runbook's drop-in"
run_block start
check_ownership
run_block logs

run_block test-backup
TIMESTAMP=$(date -u +%Y-%m-%dT%H:%M:%SZ)

# The listings after the first sync (section 8 of the runbook comes before the backup test, but
# before a first sync there is nothing to list). Every line of the block runs: a binary without
# `walship replicas` fails here, rather than the runbook being trimmed to fit it.
/usr/bin/walship replicas --help >/dev/null 2>&1 || fail "the installed walship has no 'replicas' command, which the runbook uses"
run_block list

for cmd in generations snapshots wal; do
  out=$(with_env walship "$cmd" /var/lib/app/app.db) || fail "walship $cmd"
  [ "$(printf '%s\n' "$out" | wc -l)" -ge 2 ] || fail "walship $cmd lists nothing after the first sync: $out"
done

# A snapshot through the running service: root asks, the service (user app) takes
# it, the generation stays, and nothing of the request is left behind.
gens_before=$(ls "/var/lib/app/.app.db-litestream/generations")
journal_mark=$(date '+%Y-%m-%d %H:%M:%S')
run_block snapshot-now
journal=$(PATH=$SHIMS:$CLEAN_PATH journalctl -u walship --since "$journal_mark" --no-pager)
case $journal in *"snapshot requested"*) ;; *) fail "the running service did not take the snapshot request" ;; esac
[ "$(ls /var/lib/app/.app.db-litestream/generations)" = "$gens_before" ] || fail "walship snapshot started a new generation"
left=$(find /var/lib/app/.app.db-litestream -maxdepth 1 -name 'walship-snapshot-*')
[ -z "$left" ] || fail "snapshot request files left behind: $left"
# The monthly restore drill through the running service: every replica matches, and neither
# the request nor the drill's restored copy is left in the meta directory.
journal_mark=$(date '+%Y-%m-%d %H:%M:%S')
run_block verify
journal=$(PATH=$SHIMS:$CLEAN_PATH journalctl -u walship --since "$journal_mark" --no-pager)
case $journal in *"restore drill requested"*) ;; *) fail "the running service did not take the verify request" ;; esac
left=$(find /var/lib/app/.app.db-litestream -maxdepth 1 \( -name 'walship-snapshot-*' -o -name 'drill-*' \))
[ -z "$left" ] || fail "verify left files behind: $left"
sleep 3

# --- a read replica (runbook section 14), on this host for the test: it follows app.db while
# the application writes, through the same bucket, as the user app.
run_block follow
out=$(systemd-analyze verify /etc/systemd/system/walship-follow.service 2>&1) || { echo "$out" >&2; fail "systemd-analyze verify walship-follow.service"; }
[ -z "$out" ] || { echo "$out" >&2; fail "systemd-analyze verify warns (walship-follow.service)"; }
sleep 3
metrics=$(curl -sf 127.0.0.1:9091/metrics) || fail "the follower's -addr 127.0.0.1:9091 does not answer"
case $metrics in *"walship_follow_lag_seconds{"*) ;; *) fail "no walship_follow_lag_seconds in the follower's metrics" ;; esac
run_block follow-check

# --- round trip while the writer keeps writing: stop the app, then the service (final sync)
step "round trip: stop the writer, stop the service (final sync), restore both databases"
stop_writer
PATH=$SHIMS:$CLEAN_PATH systemctl stop walship
# The read replica reaches what the final sync shipped, then stops cleanly (exit 0).
src=$(digest /var/lib/app/app.db) || fail "source app.db"
for _ in $(seq 60); do
  [ "$(digest /var/lib/app/replica.db 2>/dev/null)" = "$src" ] && break
  sleep 1
done
got=$(digest /var/lib/app/replica.db) || fail "the read replica /var/lib/app/replica.db"
echo "  app.db source $src, read replica $got"
[ "$src" = "$got" ] || fail "the read replica did not reach the source within 60 s"
case $(PATH=$SHIMS:$CLEAN_PATH journalctl -u walship-follow --no-pager) in *"following: restored"*) ;; *) fail "the follower's log has no first restore" ;; esac
PATH=$SHIMS:$CLEAN_PATH systemctl disable --now walship-follow
rm -f /etc/systemd/system/walship-follow.service /var/lib/app/replica.db /var/lib/app/replica.db-wal /var/lib/app/replica.db-shm /var/lib/app/replica.db.walship-follow
for db in app queue; do
  src=$(digest "/var/lib/app/$db.db") || fail "source $db.db"
  with_env walship restore -o "$WORK/rt-$db.db" "/var/lib/app/$db.db"
  got=$(digest_root "$WORK/rt-$db.db") || fail "restored $db.db"
  echo "  $db.db source $src, restored $got"
  [ "$src" = "$got" ] || fail "restored $db.db differs from the source"
  case $src in *" items=0") fail "the writer wrote nothing to $db.db" ;; esac
done
check_ownership
app_can_write /var/lib/app/app.db /var/lib/app/queue.db
echo "  meta directory (UMask=0027):"; ls -la /var/lib/app/.app.db-litestream | sed 's/^/    /'
# Shadow WAL files take the database's own mode (as in v0.3.13); everything else follows UMask.
world=$(find /var/lib/app/.app.db-litestream /var/lib/app/.queue.db-litestream -perm -o+r ! -type l ! -name '*.wal' | head -3)
[ -z "$world" ] || fail "walship's meta files are world-readable under UMask=0027: $world"

# --- restore in place while the service runs again and the app has written more
PATH=$SHIMS:$CLEAN_PATH systemctl start walship
start_writer /var/lib/app/app.db /var/lib/app/queue.db
sleep 5
stop_writer   # the runbook: stop the application first
run_block restore-latest
before=$(digest /var/lib/app/before-restore/app.db) || fail "before-restore/app.db"
after=$(digest /var/lib/app/app.db) || fail "restored /var/lib/app/app.db"
echo "  app.db before restore $before, restored in place $after"
[ "$before" = "$after" ] || fail "the in-place restore differs from the database it replaced"
check_ownership
app_can_write /var/lib/app/app.db

run_block restore-timestamp "s/2025-11-20T14:00:00Z/$TIMESTAMP/"
at=$(digest_root /root/walship-restore/app-at.db) || fail "/root/walship-restore/app-at.db"
# Restored files are private: 0600 in a 0700 directory.
[ "$(stat -c %a /root/walship-restore/app-at.db)" = 600 ] || fail "restored file is $(stat -c %a /root/walship-restore/app-at.db), want 600"
[ "$(stat -c %a /root/walship-restore)" = 700 ] || fail "restore directory is $(stat -c %a /root/walship-restore), want 700"
echo "  app.db at $TIMESTAMP: $at (latest: $after)"
[ "${at##*items=}" -gt 0 ] && [ "${at##*items=}" -le "${after##*items=}" ] || fail "point-in-time restore has an impossible row count"
rm -f /root/walship-restore/app-at.db

# --- a third database in the same bucket
as_app sqlite3 /var/lib/app/audit.db "PRAGMA journal_mode=wal; CREATE TABLE items(id INTEGER PRIMARY KEY, at REAL, body BLOB);" >/dev/null
run_block add-db "s/my-app-backups/$BUCKET/g"
start_writer /var/lib/app/app.db /var/lib/app/queue.db /var/lib/app/audit.db
sleep 5
stop_writer
PATH=$SHIMS:$CLEAN_PATH systemctl stop walship
for db in app queue audit; do
  src=$(digest "/var/lib/app/$db.db") || fail "source $db.db"
  rm -f "$WORK/rt-$db.db"
  with_env walship restore -o "$WORK/rt-$db.db" "/var/lib/app/$db.db"
  got=$(digest_root "$WORK/rt-$db.db") || fail "restored $db.db"
  echo "  $db.db source $src, restored $got"
  [ "$src" = "$got" ] || fail "restored $db.db differs from the source"
done
listing=$(s3curl "$TEST_S3_ENDPOINT/$BUCKET?delimiter=%2F&list-type=2&prefix=app%2F") || fail "cannot list bucket $BUCKET"
prefixes=$(printf '%s' "$listing" | grep -o '<Prefix>app/[^<]\+/</Prefix>' | sort | tr -d '\n' || true)
[ "$prefixes" = "<Prefix>app/app.db/</Prefix><Prefix>app/audit.db/</Prefix><Prefix>app/queue.db/</Prefix>" ] \
  || fail "bucket layout: want app/app.db/, app/audit.db/, app/queue.db/; got $prefixes"
check_ownership
app_can_write /var/lib/app/app.db /var/lib/app/queue.db /var/lib/app/audit.db

# --- SFTP host key pinning (runbook section 12) against scripts/test.sh's sshd, checked as the
# service user: its home has no known_hosts, so the key must come from /etc/walship/known_hosts.
if [ $SFTP = 1 ]; then
  run_block sftp-known-hosts "s/ backup.example.com/ -p $TEST_SFTP_PORT $TEST_SFTP_HOST/"
  install -d -o app -g app -m 0700 /var/lib/app/.ssh
  install -o app -g app -m 0600 "$TEST_SFTP_KEY" /var/lib/app/.ssh/walship_ed25519
  cat >"$WORK/sftp.yml" <<EOF
dbs:
  - path: /var/lib/app/app.db
    replicas:
      - type: sftp
        host: $TEST_SFTP_HOST:$TEST_SFTP_PORT
        user: $TEST_SFTP_USER
        key-path: /var/lib/app/.ssh/walship_ed25519
        path: $TEST_SFTP_ROOT/walship-deploy-$$/app.db
EOF
  chmod 0644 "$WORK/sftp.yml"
  step "SFTP: replicate -dry-run as app, host key from /etc/walship/known_hosts"
  runuser -u app -- /usr/bin/walship replicate -dry-run -config "$WORK/sftp.yml" || fail "SFTP dry-run as app with /etc/walship/known_hosts"
  rm -rf /var/lib/app/.ssh "${TEST_SFTP_ROOT:?}/walship-deploy-$$"
fi

# --- the staging example (walship-local.yml) as shipped: one sync pass as the app's user into
# the local directory replica, restored equal to the source.
step "example walship-local.yml: replicate -once as app, restore"
install -d -o app -g app /var/backups/walship
runuser -u app -- /usr/bin/walship replicate -once -config /usr/share/doc/walship/examples/walship-local.yml \
  || fail "replicate -once with walship-local.yml"
for db in app queue; do
  src=$(digest "/var/lib/app/$db.db") || fail "source $db.db"
  /usr/bin/walship restore -config /usr/share/doc/walship/examples/walship-local.yml -o "$WORK/local-$db.db" "/var/lib/app/$db.db"
  got=$(digest_root "$WORK/local-$db.db") || fail "restored $db.db from the local replica"
  [ "$src" = "$got" ] || fail "$db.db restored from the walship-local.yml replica differs from the source"
  echo "  $db.db from the local replica: $got"
done
rm -rf /var/backups/walship
check_ownership

# --- migration from Litestream v0.3.13 (runbook section 13): a host where Litestream ran as the
# app's user with /etc/litestream.yml; walship must continue Litestream's generation.
step "migration: Litestream v0.3.13 replicates with /etc/litestream.yml"
mv /etc/walship.yml /etc/litestream.yml
install -m 0755 "$LITESTREAM" "$WORK/litestream"
ls_envs=("PATH=$CLEAN_PATH" HOME=/var/lib/app)
while IFS= read -r line; do case $line in ''|'#'*) ;; *) ls_envs+=("$line") ;; esac; done </etc/walship/environment
( setpriv --reuid=app --regid=app --init-groups -- env -i "${ls_envs[@]}" "$WORK/litestream" replicate >>"$STATE/litestream.log" 2>&1 &
  echo $! >"$STATE/litestream.pid"; rc=0; wait $! || rc=$?; echo "$rc" >"$STATE/litestream.rc" ) </dev/null >/dev/null 2>&1 &
start_writer /var/lib/app/app.db /var/lib/app/queue.db /var/lib/app/audit.db
sleep 3
[ ! -e "$STATE/litestream.rc" ] || { cat "$STATE/litestream.log" >&2; fail "litestream exited"; }
run_block check   # -dry-run while Litestream runs: it writes nothing next to the databases
sleep 12          # past Litestream's first sync-interval (10s)
touch "$WORK/stop-writer.pause"   # the app stays up (connections open) but idle during the switch
sleep 1
ls_gen=$(cat /var/lib/app/.app.db-litestream/generation)
echo "  Litestream's generation of app.db: $ls_gen"
: >"$STATE/walship.log"
run_block migrate
grep -q "continuing generation db=/var/lib/app/app.db position=$ls_gen/" "$STATE/walship.log" \
  || fail "walship did not continue Litestream's generation $ls_gen of app.db (log above)"
[ "$(cat /var/lib/app/.app.db-litestream/generation)" = "$ls_gen" ] || fail "the generation file changed"
rm -f "$WORK/stop-writer.pause"
sleep 3
stop_writer
PATH=$SHIMS:$CLEAN_PATH systemctl stop walship
for db in app queue audit; do
  src=$(digest "/var/lib/app/$db.db") || fail "source $db.db"
  rm -f "$WORK/rt-$db.db"
  with_env walship restore -o "$WORK/rt-$db.db" "/var/lib/app/$db.db"
  got=$(digest_root "$WORK/rt-$db.db") || fail "restored $db.db"
  echo "  $db.db source $src, restored after the migration $got"
  [ "$src" = "$got" ] || fail "restored $db.db differs from the source after the migration"
done
check_ownership
app_can_write /var/lib/app/app.db /var/lib/app/queue.db /var/lib/app/audit.db
PATH=$SHIMS:$CLEAN_PATH systemctl start walship

# --- uninstall: every file the package installed is gone
run_block uninstall
! dpkg -s walship >/dev/null 2>&1 || fail "dpkg --purge left the package installed"
for f in "${PKG_FILES[@]}"; do
  # Directories (/lib, /usr/bin, ...) are shared; every file and link must be gone.
  if [ ! -d "$f" ] && { [ -e "$f" ] || [ -L "$f" ]; }; then fail "dpkg --purge left $f"; fi
done
[ ! -e /var/lib/dpkg/info/walship.list ] || fail "dpkg --purge left its file list"

# Every runbook block ran.
for b in "${ALL_BLOCKS[@]}"; do
  if [ "$b" = sftp-known-hosts ] && [ $SFTP = 0 ]; then continue; fi   # warned above; CI fails instead
  case " ${RAN[*]} " in *" $b "*) ;; *) fail "runbook block '$b' is not exercised by deploy/test-deploy.sh" ;; esac
done
echo "test-deploy: OK: ${#RAN[@]} runbook blocks, package installed, verified, exercised and purged ($(( $(date +%s) - start ))s)"
