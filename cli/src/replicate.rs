//! `replicate`: run every configured database until SIGINT/SIGTERM (or until `-exec` exits).

use crate::setup;
use anyhow::{anyhow, bail, Result};
use std::path::Path;
use std::sync::Arc;
use tokio::process::Command;
use walship_config::{Config, ReplicaConfig};
use walship_core::db::Db;
use walship_core::monitor;
use walship_core::shipper::Shipper;

pub struct ReplicateArgs<'a> {
    pub config: Option<&'a Path>,
    pub no_expand_env: bool,
    pub exec: Option<String>,
    /// `-dry-run` / `check`: probe every replica, touch nothing else.
    pub dry_run: bool,
    /// `-once`: one sync pass, then exit.
    pub once: bool,
    pub positional: &'a [String],
}

/// Returns the process exit code.
pub async fn run(a: ReplicateArgs<'_>) -> Result<i32> {
    let cfg = if let Some((db, urls)) = a.positional.split_first() {
        if a.config.is_some() {
            bail!("cannot specify a replica URL and the -config flag");
        }
        if urls.is_empty() {
            bail!("must specify at least one replica URL for {db}");
        }
        let mut c = Config::default();
        let mut dbc = walship_config::DbConfig {
            path: setup::abs_path(db)?,
            ..Default::default()
        };
        for u in urls {
            dbc.replicas.push(ReplicaConfig::from_url(u)?);
        }
        c.dbs.push(dbc);
        c
    } else {
        setup::load_config(a.config, a.no_expand_env)?.0
    };
    setup::refuse_same_file_twice(&cfg)?;
    let exec = a
        .exec
        .clone()
        .or_else(|| cfg.exec.clone())
        .filter(|s| !s.trim().is_empty());
    if a.dry_run {
        // Validate what `replicate` would refuse at start, so a dry run that passes means the
        // service starts (the metrics port itself may be busy while the service runs: not bound).
        if let Some(addr) = cfg.addr.as_deref().filter(|s| !s.is_empty()) {
            crate::metrics::bind_addr(addr)?;
        }
        if let Some(u) = cfg.heartbeat_url.as_deref().filter(|s| !s.is_empty()) {
            crate::heartbeat::validate(u)?;
        }
        return crate::check::run(&cfg).await;
    }
    if cfg.dbs.is_empty() {
        tracing::error!("no databases specified in configuration");
        if a.once {
            return Ok(1);
        }
    }
    // Build everything first: a bad replica section must fail before anything starts.
    let mut running = Vec::new();
    let mut prepared = Vec::new();
    for dbc in &cfg.dbs {
        let mut shippers = Vec::new();
        for r in &dbc.replicas {
            let client = setup::open_replica(r, Some(&dbc.path))?;
            shippers.push((client, setup::replica_options(r)?));
        }
        prepared.push((dbc, shippers));
    }
    if a.once {
        return crate::once::run(prepared).await;
    }
    // Operations side (issue 7): a bad addr or heartbeat-url fails before anything starts.
    let metrics_listener = match cfg.addr.as_deref().filter(|s| !s.is_empty()) {
        Some(addr) => Some(crate::metrics::listen(addr).await?),
        None => None,
    };
    let heartbeat_url = cfg.heartbeat_url.clone().filter(|s| !s.is_empty());
    if let Some(u) = &heartbeat_url {
        crate::heartbeat::validate(u)?;
    }
    let ops = Arc::new(crate::metrics::Ops::default());
    let mut health = crate::health::Health::default();
    for (dbc, shippers) in prepared {
        let db = Db::open(&dbc.path, setup::db_options(dbc)).map_err(|e| anyhow!("{e}"))?;
        tracing::info!(db = %dbc.path.display(), "initialized db");
        let mut ss = Vec::new();
        for (client, opts) in shippers {
            tracing::info!(db = %dbc.path.display(), replica = %opts.name, r#type = client.kind(), target = %client.target(), "replicating to");
            let client = crate::metrics::Metered::wrap(
                client,
                ops.clone(),
                dbc.path.display().to_string(),
                opts.name.clone(),
            );
            let sync_interval = opts.sync_interval;
            let name = opts.name.clone();
            let shipper = Shipper::new(db.clone(), client, opts);
            health.replicas.push(crate::health::ReplicaView {
                db: db.clone(),
                name,
                sync_interval,
                status: shipper.status(),
            });
            ss.push(shipper);
        }
        let r = monitor::start(db, ss);
        health.dbs.push(crate::health::DbView {
            db: r.db.clone(),
            stats: r.stats.clone(),
        });
        running.push(r);
    }
    let health = Arc::new(health);
    let mut background = Vec::new();
    if let Some(l) = metrics_listener {
        background.push(tokio::spawn(crate::metrics::serve(
            l,
            health.clone(),
            ops.clone(),
        )));
    }
    if let Some(u) = heartbeat_url {
        let every = crate::heartbeat::interval(cfg.heartbeat_interval);
        tracing::info!(interval = ?every, "heartbeat enabled");
        background.push(tokio::spawn(crate::heartbeat::run(
            u,
            every,
            health.clone(),
        )));
    }
    // Every monitor runs: ready, whether or not a replica is reachable yet.
    let notifier = crate::notify::Notifier::from_env().map(Arc::new);
    if let Some(n) = &notifier {
        n.send(&format!(
            "READY=1\n{}",
            crate::notify::status_line(&health.summary())
        ));
        background.push(tokio::spawn(crate::notify::run(n.clone(), health.clone())));
    }
    let mut child = match &exec {
        Some(cmd) => {
            let words = shell_words(cmd)?;
            let (prog, args) = words
                .split_first()
                .ok_or_else(|| anyhow!("empty exec command"))?;
            Some(
                Command::new(prog)
                    .args(args)
                    .spawn()
                    .map_err(|e| anyhow!("cannot run exec command {prog:?}: {e}"))?,
            )
        }
        None => None,
    };
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut code = 0;
    let child_wait = async {
        match child.as_mut() {
            Some(c) => c.wait().await.ok(),
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = sigint.recv() => { forward(&child, libc::SIGINT); tracing::info!("signal received, litestream shutting down"); }
        _ = sigterm.recv() => { forward(&child, libc::SIGTERM); tracing::info!("signal received, litestream shutting down"); }
        status = child_wait => {
            if let Some(st) = status {
                if !st.success() {
                    tracing::error!(status = %st, "subprocess exited with error");
                    code = 1;
                }
            }
            child = None;
        }
    }
    if let Some(c) = child.as_mut() {
        let _ = c.wait().await;
    }
    if let Some(n) = &notifier {
        n.send("STOPPING=1\nSTATUS=shutting down: final sync");
    }
    for r in running {
        if !r.stop().await {
            code = 1;
        }
    }
    for t in background {
        t.abort();
    }
    tracing::info!("litestream shut down");
    Ok(code)
}

fn forward(child: &Option<tokio::process::Child>, sig: i32) {
    if let Some(pid) = child.as_ref().and_then(|c| c.id()) {
        // SAFETY: sending a signal to our own child process.
        unsafe {
            libc::kill(pid as i32, sig);
        }
    }
}

/// Splits a command line into words the way v0.3.13's shellwords does (quotes and escapes).
pub fn shell_words(s: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('"'), '\\') => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            (Some(_), c) => cur.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (None, '\\') => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                    in_word = true;
                }
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            (None, c) => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if quote.is_some() {
        bail!("invalid exec command {s:?}: unterminated quote");
    }
    if in_word {
        out.push(cur);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_shell_words() {
        assert_eq!(
            shell_words("app -x 'a b' \"c d\" e\\ f").unwrap(),
            vec!["app", "-x", "a b", "c d", "e f"]
        );
        assert!(shell_words("app 'oops").is_err());
    }
}
