//! A reader of a follower's output in a process of its own, as an application reading a read
//! replica is: `walship-follow-reader DB SECONDS TOTAL`. For SECONDS it reads, each time in one
//! read transaction of one long-lived read-only connection, the count and sum of `accounts`
//! (whose balances the primary's transactions move between accounts, so the sum is always TOTAL)
//! and, every tenth read, `PRAGMA quick_check`. Prints `reads N violations M states S`, the
//! first violations, and `seen ID MS` for each newest `moves` id it saw first at unix time MS
//! (the test's lag figures); exits 0 whatever it found (the test judges).

use rusqlite::{Connection, OpenFlags};
use std::collections::HashSet;
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        eprintln!("usage: walship-follow-reader DB SECONDS TOTAL");
        std::process::exit(2);
    }
    let secs: f64 = args[2].parse().expect("SECONDS");
    let total: i64 = args[3].parse().expect("TOTAL");
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let conn = Connection::open_with_flags(
        &args[1],
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .expect("open the follower's output");
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    let (mut reads, mut violations) = (0u64, Vec::new());
    let mut states = HashSet::new();
    let (mut last_newest, mut seen) = (0i64, Vec::new());
    while Instant::now() < deadline {
        reads += 1;
        let res = (|| -> rusqlite::Result<Option<String>> {
            conn.execute_batch("BEGIN")?;
            let (n, sum, moves, newest): (i64, i64, i64, i64) = conn.query_row(
                "SELECT count(*), sum(balance), (SELECT count(*) FROM moves), \
                 (SELECT coalesce(max(id), 0) FROM moves) FROM accounts",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )?;
            if newest > last_newest {
                last_newest = newest;
                let ms = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_millis();
                seen.push((newest, ms));
            }
            let check = if reads % 10 == 0 {
                let ok: String = conn.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
                Some(ok).filter(|ok| ok != "ok")
            } else {
                None
            };
            conn.execute_batch("COMMIT")?;
            states.insert(moves);
            Ok(if sum != total {
                Some(format!(
                    "{n} accounts sum to {sum}, not {total} (after {moves} moves)"
                ))
            } else {
                check.map(|c| format!("quick_check: {c}"))
            })
        })();
        match res {
            Ok(None) => {}
            Ok(Some(v)) => violations.push(v),
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                violations.push(format!("read failed: {e}"));
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    println!(
        "reads {reads} violations {} states {}",
        violations.len(),
        states.len()
    );
    for v in violations.iter().take(10) {
        println!("violation: {v}");
    }
    for (id, ms) in seen {
        println!("seen {id} {ms}");
    }
}
