"""Oracle for deploy/test-deploy.sh: `PRAGMA integrity_check` must say ok; prints a digest of the
logical content (every row of every user table, walship's/Litestream's _litestream_* excluded)
and the row count of `items`."""
import hashlib
import sqlite3
import sys

c = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)
check = c.execute("PRAGMA integrity_check").fetchall()
if check != [("ok",)]:
    sys.exit(f"{sys.argv[1]}: integrity_check: {check}")
h = hashlib.sha256()
tables = [r[0] for r in c.execute(
    "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE '_litestream_%' "
    "AND name NOT LIKE 'sqlite_%' ORDER BY name")]
for t in tables:
    h.update(t.encode())
    for row in c.execute(f'SELECT * FROM "{t}" ORDER BY rowid'):
        h.update(repr(row).encode())
items = c.execute("SELECT count(*) FROM items").fetchone()[0] if "items" in tables else 0
print(f"{h.hexdigest()} items={items}")
