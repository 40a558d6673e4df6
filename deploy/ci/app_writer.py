"""The application in deploy/test-deploy.sh: commits rows into each database, as fast as a small
app would (a commit every ~2 ms per database), until the stop file appears. While STOP.pause
exists it only keeps its connections open, as a running application does (so a replicator's
exit is not the last close, which would checkpoint and delete the WAL)."""
import os
import sqlite3
import sys
import time

stop_file, dbs = sys.argv[1], sys.argv[2:]
conns = []
for path in dbs:
    c = sqlite3.connect(path, timeout=30, isolation_level=None)
    c.execute("PRAGMA journal_mode=wal")
    c.execute("CREATE TABLE IF NOT EXISTS items(id INTEGER PRIMARY KEY, at REAL, body BLOB)")
    conns.append(c)
n = 0
while not os.path.exists(stop_file):
    if os.path.exists(stop_file + ".pause"):
        time.sleep(0.01)
        continue
    for c in conns:
        c.execute("INSERT INTO items(at, body) VALUES (?, randomblob(200 + abs(random()) % 800))", (time.time(),))
    n += 1
    time.sleep(0.002)
print(f"app_writer: {n} commits per database", flush=True)
