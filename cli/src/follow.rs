//! `restore -f`: a read replica that follows a replica (walship_core::follow).

use crate::setup;
use anyhow::{anyhow, bail, Result};
use std::path::{Path, PathBuf};
use std::time::Duration;
use walship_core::follow::{FollowOptions, Follower};
use walship_core::listing::Listing;
use walship_core::plan::{self, Target};

pub struct FollowArgs<'a> {
    pub config: Option<&'a Path>,
    pub no_expand_env: bool,
    pub output: Option<PathBuf>,
    pub replica: Option<&'a str>,
    pub interval: Duration,
    pub parallelism: usize,
    pub target: &'a str,
    /// `-addr`: serve the follower's metrics there.
    pub addr: Option<&'a str>,
}

pub async fn run(a: FollowArgs<'_>) -> Result<i32> {
    if a.interval.is_zero() {
        bail!("invalid -follow-interval: must be more than 0");
    }
    // Bound first: a bad or busy address fails before anything is restored.
    let listener = match a.addr {
        Some(addr) => Some(crate::metrics::listen(addr).await?),
        None => None,
    };
    let (db_path, replicas) = setup::replicas_for(a.target, a.config, a.no_expand_env, a.replica)?;
    let output = match (a.output.clone(), db_path) {
        (Some(o), _) => setup::abs_path(&o.to_string_lossy())?,
        (None, Some(db)) => db,
        (None, None) => bail!("output path required"),
    };
    // The replica whose latest generation was updated last, as `restore` chooses.
    let mut best: Option<(
        std::time::SystemTime,
        String,
        walship_core::replica::DynReplica,
        walship_core::crypt::Age,
    )> = None;
    let mut first_err: Option<anyhow::Error> = None;
    for (name, r, age) in replicas {
        let planned = match Listing::fetch(r.as_ref(), None).await {
            Ok(l) => plan::plan(&l, None, Target::Latest),
            Err(e) => Err(e),
        };
        match planned {
            Ok(p) => {
                let newer = match &best {
                    Some((updated, ..)) => p.updated > *updated,
                    None => true,
                };
                if newer {
                    best = Some((p.updated, name, r, age));
                }
            }
            Err(e) => {
                tracing::error!(replica = %name, error = %e, "cannot follow replica");
                first_err.get_or_insert(e.with_replica(name.as_str()).into());
            }
        }
    }
    let Some((_, name, replica, age)) = best else {
        return Err(first_err.unwrap_or_else(|| anyhow!("no matching backups found")));
    };
    tracing::info!(replica = %name, output = %output.display(), interval = ?a.interval, "following");
    let opts = FollowOptions {
        parallelism: a.parallelism,
        ..FollowOptions::every(a.interval)
    };
    // Served from now on: a scrape during the first restore sees the lag growing from start.
    let _metrics = listener.map(|l| {
        let status = opts.status.clone();
        let shown = output.display().to_string();
        let render = move || {
            let s = status.lock().unwrap_or_else(|p| p.into_inner()).clone();
            crate::metrics::render_follow(&shown, &s)
        };
        AbortOnDrop(tokio::spawn(crate::metrics::serve_with(
            l,
            std::sync::Arc::new(render),
        )))
    });
    let mut f = Follower::start(replica, age, &output, opts).await?;
    use tokio::signal::unix::{signal, SignalKind};
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let stop = async move {
        tokio::select! {
            _ = sigint.recv() => {}
            _ = sigterm.recv() => {}
        }
    };
    f.run(stop).await?;
    tracing::info!(position = %f.position(), "following stopped");
    Ok(0)
}

/// Stops the metrics server with the follower.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
