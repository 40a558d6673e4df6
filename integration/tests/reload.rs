//! Issue 16.10: SIGHUP re-reads the config. Before, SIGHUP killed `replicate` at once (exit 129)
//! with no final sync and no log line. A database added by reload starts replicating, one removed
//! gets a final sync and stops (its instance lock is free again), a broken config is logged and
//! the running one stays, and a database the reload does not touch keeps its generation and never
//! falls behind.

use std::path::Path;
use std::time::Duration;
use walship_integration::*;

fn entry(db: &Path, replica: &Path) -> String {
    format!(
        "  - path: {}\n    replicas:\n      - type: file\n        path: {}\n        sync-interval: 100ms\n",
        db.display(),
        replica.display()
    )
}

fn hup(p: &Proc) {
    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(p.pid(), libc::SIGHUP);
    }
}

fn reloads(p: &Proc) -> usize {
    p.log_text().matches("config reload").count()
}

fn wait_reload(p: &Proc, before: usize) -> String {
    wait_until(Duration::from_secs(30), "the reload's log line", || {
        reloads(p) > before
    });
    let log = p.log_text();
    log.lines()
        .rfind(|l| l.contains("config reload"))
        .unwrap()
        .to_string()
}

#[test]
fn sighup_adds_and_removes_databases_while_the_others_keep_replicating() {
    let d = tempfile::tempdir().unwrap();
    let (a, b) = (d.path().join("a.db"), d.path().join("b.db"));
    let (ra, rb) = (d.path().join("ra"), d.path().join("rb"));
    let (url_a, url_b) = (
        format!("file://{}", ra.display()),
        format!("file://{}", rb.display()),
    );
    let cfg = d.path().join("litestream.yml");
    std::fs::write(&cfg, format!("dbs:\n{}", entry(&a, &ra))).unwrap();
    let mut wa = Writer::new(&a, 1);
    let mut wb = Writer::new(&b, 2);
    for _ in 0..20 {
        wa.tx();
        wb.tx();
    }
    let mut p = Proc::spawn(
        &walship_bin(),
        &["replicate", "-config", cfg.to_str().unwrap()],
        &d.path().join("w.log"),
    );
    let scratch = d.path().join("scratch.db");
    wait_caught_up(&url_a, &a, &scratch, Duration::from_secs(30));
    let gen_a = generations(&ra);
    assert_eq!(gen_a.len(), 1);

    // Add b.
    std::fs::write(&cfg, format!("dbs:\n{}{}", entry(&a, &ra), entry(&b, &rb))).unwrap();
    let n = reloads(&p);
    hup(&p);
    let line = wait_reload(&p, n);
    assert!(
        line.contains("added=1") && line.contains("kept=1"),
        "{line}"
    );
    for _ in 0..30 {
        wa.tx();
        wb.tx();
    }
    wait_caught_up(&url_b, &b, &scratch, Duration::from_secs(30));
    wait_caught_up(&url_a, &a, &scratch, Duration::from_secs(30));

    // A broken config: logged, and both keep running.
    std::fs::write(&cfg, "dbs:\n  - path: [oops\n").unwrap();
    let n = reloads(&p);
    hup(&p);
    let line = wait_reload(&p, n);
    assert!(line.contains("config reload failed"), "{line}");
    for _ in 0..10 {
        wa.tx();
        wb.tx();
    }
    wait_caught_up(&url_b, &b, &scratch, Duration::from_secs(30));
    wait_caught_up(&url_a, &a, &scratch, Duration::from_secs(30));

    // Remove b: its last commits reach its replica (final sync), then it is free: a second
    // replicate may take it.
    for _ in 0..10 {
        wb.tx();
    }
    std::fs::write(&cfg, format!("dbs:\n{}", entry(&a, &ra))).unwrap();
    let n = reloads(&p);
    hup(&p);
    let line = wait_reload(&p, n);
    assert!(
        line.contains("removed=1") && line.contains("kept=1"),
        "{line}"
    );
    let want_b = digest(&b);
    let restored = d.path().join("b-restored.db");
    let o = walship(&["restore", "-o", restored.to_str().unwrap(), &url_b]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(digest(&restored), want_b, "b's final sync missed commits");
    let other = d.path().join("b-only.yml");
    std::fs::write(&other, format!("dbs:\n{}", entry(&b, &rb))).unwrap();
    let o = walship(&["replicate", "-once", "-config", other.to_str().unwrap()]);
    assert!(
        o.status.success(),
        "b is still held after its removal: {}",
        String::from_utf8_lossy(&o.stderr)
    );

    for _ in 0..10 {
        wa.tx();
    }
    wait_caught_up(&url_a, &a, &scratch, Duration::from_secs(30));
    assert_eq!(p.stop(), 0, "{}", p.log_text());
    assert_eq!(
        generations(&ra),
        gen_a,
        "a started a new generation across reloads"
    );
}
