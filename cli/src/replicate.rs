//! `replicate`: run every configured database until SIGINT/SIGTERM (or until `-exec` exits).

use crate::setup;
use anyhow::{anyhow, bail, Result};
use futures::StreamExt;
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
    /// `-force-snapshot` (with `-once`): a new snapshot on every replica.
    pub force_snapshot: bool,
    /// `-restore-if-db-not-exists`: restore missing databases before replicating.
    pub restore_if_db_not_exists: bool,
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
    let file = walship_config::resolve_config_path(a.config);
    crate::dirs::check_dirs(&cfg, &file)?;
    set_stop_limit(&cfg);
    // The databases under directory entries, found now, run like configured ones.
    let configured = cfg.clone();
    let cfg = walship_config::Config {
        dbs: crate::dirs::desired(&cfg),
        ..cfg
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
        // A directory entry with no database yet still has its replicas probed (at the entry's
        // own location), so credentials and buckets are checked before the first tenant.
        let mut probe = cfg.clone();
        for d in &configured.dirs {
            if !probe.dbs.iter().any(|x| x.path.starts_with(&d.dir)) {
                probe.dbs.push(d.template.clone());
            }
        }
        return crate::check::run(&probe).await;
    }
    // v0.3.13 runs a database without replicas and backs up nothing; a config written for a later
    // Litestream (keys it renamed) ends up that way without a word. Refuse it at start (`check`
    // reports it in its table).
    if let Some(d) = cfg
        .dbs
        .iter()
        .chain(configured.dirs.iter().map(|d| &d.template))
        .find(|d| d.replicas.is_empty())
    {
        let at = d.line.map(|l| format!(" line {l}:")).unwrap_or_default();
        bail!(
            "{}:{at} database {} has no replica, so nothing would be backed up: add a `replicas:` list (or one `replica:` section)",
            file.display(),
            d.path.display()
        );
    }
    // As v0.3.13 (`litestream version=...`): the first line says what is running.
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        commit = env!("WALSHIP_COMMIT"),
        "walship"
    );
    if cfg.dbs.is_empty() && configured.dirs.is_empty() {
        tracing::error!("no databases specified in configuration");
        if a.once {
            return Ok(1);
        }
    }
    // Build everything first: a bad replica section must fail before anything starts.
    let mut prepared = Vec::new();
    for dbc in &cfg.dbs {
        prepared.push((dbc, prepare(dbc)?));
    }
    if a.force_snapshot && !a.once {
        bail!(
            "-force-snapshot needs -once (a running replicate snapshots on its snapshot-interval)"
        );
    }
    if a.restore_if_db_not_exists {
        restore_missing(&cfg, a.config, a.no_expand_env, !a.positional.is_empty()).await?;
    }
    if a.once {
        return crate::once::run(prepared, a.force_snapshot).await;
    }
    // Operations side: a bad addr or heartbeat-url fails before anything starts.
    let metrics_listener = match cfg.addr.as_deref().filter(|s| !s.is_empty()) {
        Some(addr) => Some(crate::metrics::listen(addr).await?),
        None => None,
    };
    let heartbeat_url = cfg.heartbeat_url.clone().filter(|s| !s.is_empty());
    if let Some(u) = &heartbeat_url {
        crate::heartbeat::validate(u)?;
    }
    let ops = Arc::new(crate::metrics::Ops::default());
    ops.no_per_db.store(
        cfg.metrics_per_db == Some(false),
        std::sync::atomic::Ordering::Relaxed,
    );
    use tokio::signal::unix::{signal, SignalKind};
    // Before any database is locked: the lock file tells `walship snapshot` that this process
    // takes SIGUSR1 (without a handler the signal kills it).
    let mut sigusr1 = signal(SignalKind::user_defined1())?;
    let mut running: Vec<RunningDb> = Vec::new();
    let expecting = walship_core::db::budget::Budget::process().expecting(prepared.len());
    for (dbc, shippers) in prepared {
        running.push(start_db(dbc, shippers, &ops)?);
    }
    drop(expecting);
    // Directory entries with `watch: true`: databases created, removed and renamed while
    // running are started and stopped by the same code a reload runs.
    let (dir_tx, mut dir_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut live = Live {
        watcher: crate::dirs::Watcher::start(&configured.dirs, dir_tx.clone())?,
        cfg: configured,
        stopping: Default::default(),
    };
    let health = Arc::new(crate::health::Shared::new(health_of(&running)));
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
            crate::notify::status_line(&health.get().summary())
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
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    // Without a handler SIGHUP killed replicate at once (exit 129), with no final sync.
    let mut sighup = signal(SignalKind::hangup())?;
    let mut code = 0;
    let child_pid = child.as_ref().and_then(|c| c.id());
    let has_child = child.is_some();
    let mut child_wait = Box::pin(async {
        match child.as_mut() {
            Some(c) => c.wait().await.ok(),
            None => std::future::pending().await,
        }
    });
    let mut child_done = false;
    loop {
        tokio::select! {
            _ = sigint.recv() => { forward_opt(child_pid, libc::SIGINT); tracing::info!("signal received, litestream shutting down"); break; }
            _ = sigterm.recv() => { forward_opt(child_pid, libc::SIGTERM); tracing::info!("signal received, litestream shutting down"); break; }
            _ = sighup.recv() => {
                if let Some(n) = &notifier {
                    n.send(&format!("RELOADING=1\nMONOTONIC_USEC={}", monotonic_usec()));
                }
                reload(&a, &mut running, &ops, &mut live, &dir_tx).await;
                health.set(health_of(&running));
                if let Some(n) = &notifier {
                    n.send(&format!("READY=1\n{}", crate::notify::status_line(&health.get().summary())));
                }
            }
            Some(ev) = dir_rx.recv() => {
                let mut events = vec![ev];
                // A burst (a tenant created with its -wal and -shm, a directory copied in) is
                // handled as one change.
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                while let Ok(ev) = dir_rx.try_recv() {
                    events.push(ev);
                }
                if on_dir_events(&mut live, events, &mut running, &ops).await {
                    health.set(health_of(&running));
                    if let Some(n) = &notifier {
                        n.send(&crate::notify::status_line(&health.get().summary()));
                    }
                }
            }
            _ = sigusr1.recv() => {
                for r in &running {
                    crate::snapreq::answer(&r.running);
                }
            }
            status = &mut child_wait => {
                if let Some(st) = status {
                    if !st.success() {
                        tracing::error!(status = %st, "subprocess exited with error");
                        code = 1;
                    }
                }
                child_done = true;
                break;
            }
        }
    }
    // The subprocess got the signal too: wait for it (a `pending` future when there is none).
    if has_child && !child_done {
        let _ = child_wait.await;
    }
    if let Some(n) = &notifier {
        n.send("STOPPING=1\nSTATUS=shutting down: final sync");
    }
    live.settle(None).await;
    // Several at once: one after another, thousands of databases (each a final copy and a final
    // request per replica) could outlast systemd's stop timeout and be killed part way. A few
    // at a time bounds the descriptors that final copies of released databases open again.
    let stopped: Vec<bool> = futures::stream::iter(
        running
            .into_iter()
            .map(|r| r.running.stop_within(stop_limit())),
    )
    .buffer_unordered(STOP_TOGETHER)
    .collect()
    .await;
    if stopped.contains(&false) {
        code = 1;
    }
    for t in background {
        t.abort();
    }
    tracing::info!("litestream shut down");
    Ok(code)
}

/// `shutdown-sync-timeout` of the config in force, in milliseconds (see [`stop_limit`]).
static STOP_LIMIT_MS: std::sync::atomic::AtomicU64 =
    std::sync::atomic::AtomicU64::new(monitor::DEFAULT_SHUTDOWN_SYNC_TIMEOUT.as_millis() as u64);

/// Follows the config (at start and at each reload): a database stopping in the background when
/// a reload lands keeps the bound it started with.
fn set_stop_limit(cfg: &Config) {
    let limit = cfg
        .shutdown_sync_timeout
        .unwrap_or(monitor::DEFAULT_SHUTDOWN_SYNC_TIMEOUT);
    STOP_LIMIT_MS.store(
        u64::try_from(limit.as_millis()).unwrap_or(u64::MAX),
        std::sync::atomic::Ordering::Relaxed,
    );
}

/// How long one database may take to stop: its final copy and its replicas' final syncs.
fn stop_limit() -> std::time::Duration {
    std::time::Duration::from_millis(STOP_LIMIT_MS.load(std::sync::atomic::Ordering::Relaxed))
}

/// Databases stopped at once at shutdown (see `run`).
const STOP_TOGETHER: usize = 16;

/// `-restore-if-db-not-exists` (v0.5's name): each configured database whose file does not exist
/// is restored (latest state, the replica whose generation was updated last, quick integrity
/// check) before anything replicates, so a new server carries on where the old one stopped.
/// A database with no backup on any replica is left to the application to create. A failed
/// restore is an error naming the database: replicating an empty database in its place would
/// start a new generation and, after retention, lose the backup it could not restore.
async fn restore_missing(
    cfg: &Config,
    config: Option<&Path>,
    no_expand_env: bool,
    from_urls: bool,
) -> Result<()> {
    for dbc in &cfg.dbs {
        if dbc.path.exists() {
            continue;
        }
        let db = dbc.path.display().to_string();
        // From URLs (`replicate DB URL...`) the first replica with a backup; from a config
        // file, restore's own choice across the database's replicas.
        let targets: Vec<(Option<&Path>, String)> = if from_urls {
            dbc.replicas
                .iter()
                .filter_map(|r| r.url.clone())
                .map(|u| (None, u))
                .collect()
        } else {
            vec![(config, db.clone())]
        };
        let mut restored = false;
        for (config, target) in &targets {
            tracing::info!(db = %db, "database does not exist: restoring it before replicating");
            let done = crate::restore::run(crate::restore::RestoreArgs {
                config: *config,
                no_expand_env,
                output: from_urls.then(|| dbc.path.clone()),
                replica: None,
                generation: None,
                index: None,
                timestamp: None,
                parallelism: 8,
                if_db_not_exists: true,
                if_replica_exists: true,
                integrity_check: crate::verify::IntegrityCheck::Quick,
                target,
            })
            .await
            .map_err(|e| anyhow!("database {db}: restore before replicating failed: {e:#}"))?;
            if done || dbc.path.exists() {
                restored = true;
                break;
            }
        }
        if !restored {
            tracing::info!(db = %db, "no backup of the database on any replica: starting fresh");
        }
    }
    Ok(())
}

/// `walship snapshot DB_PATH`: one `-once -force-snapshot` pass over one configured database.
pub async fn snapshot_one(config: Option<&Path>, no_expand_env: bool, target: &str) -> Result<i32> {
    let (cfg, _) = setup::load_config(config, no_expand_env)?;
    let path = setup::abs_path(target)?;
    let dbc = &cfg
        .db_or_found(&path)
        .ok_or_else(|| anyhow!("database {} is not in the config", path.display()))?;
    if dbc.replicas.is_empty() {
        bail!("database {} has no replica", path.display());
    }
    // A running replicate holds the database: ask it (its shippers snapshot between their
    // syncs); otherwise take the snapshot here, as `replicate -once -force-snapshot` would.
    // Owned like walship's other files there: the service, often another user, removes it.
    let meta = walship_core::meta::MetaDir::owned(
        dbc.meta_path
            .clone()
            .unwrap_or_else(|| walship_core::meta::default_meta_dir(&dbc.path)),
        walship_core::meta::Ownership::of_db(&dbc.path),
    );
    if walship_core::local::lock_held(&meta.lock_file()) == Some(true) {
        let holder = walship_core::meta::LockHolder::read(&meta.lock_file());
        return crate::snapreq::ask(&dbc.path, &meta, &holder).await;
    }
    crate::once::run(vec![(dbc, prepare(dbc)?)], true).await
}

/// A database `replicate` runs, with the config it was started from (a reload compares it).
struct RunningDb {
    cfg: walship_config::DbConfig,
    running: monitor::Running,
    replicas: Vec<crate::health::ReplicaView>,
}

type Prepared = Vec<(
    walship_core::replica::DynReplica,
    walship_core::shipper::ReplicaOptions,
)>;

/// Builds every replica client of a database: a bad section fails before anything starts.
fn prepare(dbc: &walship_config::DbConfig) -> Result<Prepared> {
    let mut shippers = Vec::new();
    for r in &dbc.replicas {
        let client = setup::open_replica(r, Some(&dbc.path))?;
        shippers.push((client, setup::replica_options(r)?));
    }
    Ok(shippers)
}

fn start_db(
    dbc: &walship_config::DbConfig,
    shippers: Prepared,
    ops: &Arc<crate::metrics::Ops>,
) -> Result<RunningDb> {
    let opts = walship_core::db::DbOptions {
        takes_requests: true,
        ..setup::db_options(dbc)
    };
    let db = Db::open(&dbc.path, opts)?;
    tracing::info!(db = %dbc.path.display(), "initialized db");
    let mut ss = Vec::new();
    let mut replicas = Vec::new();
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
        replicas.push(crate::health::ReplicaView {
            db: db.clone(),
            name,
            sync_interval,
            status: shipper.status(),
        });
        ss.push(shipper);
    }
    Ok(RunningDb {
        cfg: dbc.clone(),
        running: monitor::start(db, ss),
        replicas,
    })
}

fn health_of(running: &[RunningDb]) -> crate::health::Health {
    let mut h = crate::health::Health::default();
    for r in running {
        h.dbs.push(crate::health::DbView {
            db: r.running.db.clone(),
            stats: r.running.stats.clone(),
        });
        h.replicas
            .extend(r.replicas.iter().map(|v| crate::health::ReplicaView {
                db: v.db.clone(),
                name: v.name.clone(),
                sync_interval: v.sync_interval,
                status: v.status.clone(),
            }));
    }
    h
}

/// A database's config without the line numbers, which move when another entry is added above.
fn settings(d: &walship_config::DbConfig) -> walship_config::DbConfig {
    let mut d = d.clone();
    d.line = None;
    for r in &mut d.replicas {
        r.line = None;
    }
    d
}

/// What a reload changes, by database path: pure, unit-tested below.
#[derive(Debug, PartialEq)]
struct ReloadPlan {
    /// Indexes into the running list: stopped for good.
    remove: Vec<usize>,
    /// (running index, new config index): stopped, then started with the new settings.
    restart: Vec<(usize, usize)>,
    /// Indexes into the new config: started.
    add: Vec<usize>,
    kept: usize,
}

fn plan_reload(old: &[walship_config::DbConfig], new: &[walship_config::DbConfig]) -> ReloadPlan {
    use std::collections::HashMap;
    let mut plan = ReloadPlan {
        remove: Vec::new(),
        restart: Vec::new(),
        add: Vec::new(),
        kept: 0,
    };
    // By path, in maps: a directory entry may hold thousands of databases.
    let new_at: HashMap<&Path, usize> = new
        .iter()
        .enumerate()
        .map(|(j, n)| (n.path.as_path(), j))
        .collect();
    let old_paths: std::collections::HashSet<&Path> =
        old.iter().map(|o| o.path.as_path()).collect();
    for (i, o) in old.iter().enumerate() {
        match new_at.get(o.path.as_path()) {
            None => plan.remove.push(i),
            Some(&j) if settings(&new[j]) != settings(o) => plan.restart.push((i, j)),
            Some(_) => plan.kept += 1,
        }
    }
    for (j, n) in new.iter().enumerate() {
        if !old_paths.contains(n.path.as_path()) {
            plan.add.push(j);
        }
    }
    plan
}

/// What the running set follows: the config as loaded (configured databases and directory
/// entries) and the watcher of its directories.
struct Live {
    cfg: Config,
    watcher: Option<crate::dirs::Watcher>,
    /// Databases removed from their directory, making their final sync in the background: a
    /// slow or failing store must not hold up the databases added meanwhile (the final sync of
    /// each removed tenant ran inline, one after the other).
    stopping: std::collections::HashMap<std::path::PathBuf, tokio::task::JoinHandle<()>>,
}

impl Live {
    /// Waits for the final syncs still running: of the database at `path`, or of all. A database
    /// starts again at a path only once its old instance has let go of the lock.
    async fn settle(&mut self, path: Option<&Path>) {
        let done: Vec<_> = match path {
            Some(p) => self.stopping.remove(p).into_iter().collect(),
            None => self.stopping.drain().map(|(_, h)| h).collect(),
        };
        for h in done {
            let _ = h.await;
        }
        self.stopping.retain(|_, h| !h.is_finished());
    }
}

/// SIGHUP: re-reads the config. Databases added are started, removed ones get a final sync and
/// stop, changed ones restart (which continues their generation); the others never pause. A
/// config that does not load, or a replica section that does not build, is logged and the
/// running set is left as it is. Directory entries are scanned again and their watcher follows
/// the new entries.
async fn reload(
    a: &ReplicateArgs<'_>,
    running: &mut Vec<RunningDb>,
    ops: &Arc<crate::metrics::Ops>,
    live: &mut Live,
    tx: &tokio::sync::mpsc::UnboundedSender<crate::dirs::Event>,
) {
    if !a.positional.is_empty() {
        tracing::warn!("SIGHUP: replicating from command-line arguments, no config to reload");
        return;
    }
    let file = walship_config::resolve_config_path(a.config);
    tracing::info!(config = %file.display(), "SIGHUP: reloading config");
    let cfg = match setup::load_config(a.config, a.no_expand_env).and_then(|(c, _)| {
        crate::dirs::check_dirs(&c, &file)?;
        if let Some(d) = c
            .dbs
            .iter()
            .chain(c.dirs.iter().map(|d| &d.template))
            .find(|d| d.replicas.is_empty())
        {
            bail!("database {} has no replica", d.path.display());
        }
        let all = Config {
            dbs: crate::dirs::desired(&c),
            ..c.clone()
        };
        setup::refuse_same_file_twice(&all)?;
        Ok((c, all.dbs))
    }) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(config = %file.display(), error = %format!("{e:#}"), "config reload failed; the running config stays");
            return;
        }
    };
    let (cfg, desired) = cfg;
    ops.no_per_db.store(
        cfg.metrics_per_db == Some(false),
        std::sync::atomic::Ordering::Relaxed,
    );
    let watcher = if cfg.dirs == live.cfg.dirs {
        live.watcher.take()
    } else {
        live.watcher = None;
        match crate::dirs::Watcher::start(&cfg.dirs, tx.clone()) {
            Ok(w) => w,
            Err(e) => {
                tracing::error!(config = %file.display(), error = %format!("{e:#}"), "config reload: cannot watch the directories; new databases need another reload");
                None
            }
        }
    };
    set_stop_limit(&cfg);
    live.cfg = cfg;
    live.watcher = watcher;
    live.settle(None).await;
    if let Err(e) = reconcile(&desired, running, ops, "config reloaded").await {
        tracing::error!(config = %file.display(), error = %format!("{e:#}"), "config reload failed; the running config stays");
    }
}

/// Events from the directory watcher: each path is judged on its own (a rescan when events were
/// lost or a directory appeared). Returns whether the running set changed.
async fn on_dir_events(
    live: &mut Live,
    events: Vec<crate::dirs::Event>,
    running: &mut Vec<RunningDb>,
    ops: &Arc<crate::metrics::Ops>,
) -> bool {
    use crate::dirs::{Change, Event};
    if events.iter().any(|e| matches!(e, Event::Rescan)) {
        live.settle(None).await;
        let desired = crate::dirs::desired(&live.cfg);
        if let Err(e) = reconcile(&desired, running, ops, "directories rescanned").await {
            tracing::error!(error = %format!("{e:#}"), "directory rescan failed");
        }
        return true;
    }
    let mut paths: Vec<std::path::PathBuf> = events
        .into_iter()
        .filter_map(|e| match e {
            Event::Path(p) => Some(p),
            Event::Rescan => None,
        })
        .collect();
    paths.sort();
    paths.dedup();
    let mut changed = false;
    let mut seen = std::collections::HashSet::new();
    for p in paths {
        let Some(change) = crate::dirs::judge(&live.cfg, &p) else {
            continue;
        };
        match change {
            Change::Present(dbc) => {
                if !seen.insert(dbc.path.clone()) {
                    continue;
                }
                let at = running.iter().position(|r| r.cfg.path == dbc.path);
                if at.is_some_and(|i| settings(&running[i].cfg) == settings(&dbc)) {
                    continue;
                }
                let shippers = match prepare(&dbc) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::error!(db = %dbc.path.display(), error = %format!("{e:#}"), "cannot start database found in directory");
                        continue;
                    }
                };
                changed = true;
                live.settle(Some(&dbc.path)).await;
                if let Some(i) = at {
                    let _ = running.remove(i).running.stop_within(stop_limit()).await;
                }
                match start_db(&dbc, shippers, ops) {
                    Ok(r) => running.push(r),
                    Err(e) => {
                        tracing::warn!(db = %dbc.path.display(), error = %format!("{e:#}"), "cannot start database found in directory")
                    }
                }
            }
            Change::Absent(path) => {
                if !seen.insert(path.clone()) {
                    continue;
                }
                let Some(i) = running.iter().position(|r| r.cfg.path == path) else {
                    continue;
                };
                changed = true;
                let r = running.remove(i);
                tracing::info!(db = %path.display(), "database removed from its directory: final sync, then stopped");
                live.settle(Some(&path)).await;
                let stop = tokio::spawn(async move {
                    if r.running.stop_within(stop_limit()).await {
                        tracing::info!(db = %r.cfg.path.display(), "stopped after its final sync");
                    } else {
                        tracing::warn!(db = %r.cfg.path.display(), "stopped; its final sync failed (the file is gone)");
                    }
                });
                live.stopping.insert(path, stop);
            }
        }
    }
    changed
}

/// Makes the running set `desired`: every replica section of a database to start builds before
/// anything stops (an error leaves the set as it is), then removed and changed databases stop
/// after their final sync, then added and changed ones start.
async fn reconcile(
    desired: &[walship_config::DbConfig],
    running: &mut Vec<RunningDb>,
    ops: &Arc<crate::metrics::Ops>,
    what: &'static str,
) -> Result<()> {
    let old: Vec<_> = running.iter().map(|r| r.cfg.clone()).collect();
    let plan = plan_reload(&old, desired);
    let mut built = std::collections::HashMap::new();
    for j in plan
        .add
        .iter()
        .copied()
        .chain(plan.restart.iter().map(|&(_, j)| j))
    {
        let p =
            prepare(&desired[j]).map_err(|e| anyhow!("db {}: {e:#}", desired[j].path.display()))?;
        built.insert(j, p);
    }
    let mut stop: Vec<usize> = plan.remove.clone();
    stop.extend(plan.restart.iter().map(|&(i, _)| i));
    stop.sort_unstable();
    let mut stopped = Vec::new();
    for i in stop.into_iter().rev() {
        stopped.push(running.remove(i));
    }
    for r in stopped {
        let path = r.cfg.path.clone();
        if r.running.stop_within(stop_limit()).await {
            tracing::info!(db = %path.display(), "stopped after its final sync");
        } else {
            tracing::error!(db = %path.display(), "stopped; its final sync failed (the next start resumes from the replica)");
        }
    }
    let mut failed = 0;
    let mut starts: Vec<usize> = plan.add.clone();
    starts.extend(plan.restart.iter().map(|&(_, j)| j));
    starts.sort_unstable();
    let _expecting = walship_core::db::budget::Budget::process().expecting(starts.len());
    for j in starts {
        let dbc = &desired[j];
        let shippers = built.remove(&j).unwrap_or_default();
        match start_db(dbc, shippers, ops) {
            Ok(r) => running.push(r),
            Err(e) => {
                failed += 1;
                tracing::error!(db = %dbc.path.display(), error = %format!("{e:#}"), "cannot start database");
            }
        }
    }
    tracing::info!(
        added = plan.add.len(),
        removed = plan.remove.len(),
        restarted = plan.restart.len(),
        kept = plan.kept,
        failed,
        "{what}"
    );
    Ok(())
}

fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime with a valid, owned struct.
    unsafe {
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts);
    }
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

fn forward_opt(pid: Option<u32>, sig: i32) {
    if let Some(pid) = pid {
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

    fn db(path: &str, line: usize, interval: u64) -> walship_config::DbConfig {
        walship_config::DbConfig {
            path: path.into(),
            line: Some(line),
            monitor_interval: Some(std::time::Duration::from_secs(interval)),
            ..Default::default()
        }
    }

    #[test]
    fn reload_plan_by_path_ignoring_line_numbers() {
        let old = [db("/a.db", 2, 1), db("/b.db", 5, 1), db("/c.db", 8, 1)];
        // a: unchanged but moved down by an entry added above it; b: removed; c: changed.
        let new = [db("/d.db", 2, 1), db("/a.db", 5, 1), db("/c.db", 8, 2)];
        let p = plan_reload(&old, &new);
        assert_eq!(
            p,
            ReloadPlan {
                remove: vec![1],
                restart: vec![(2, 2)],
                add: vec![0],
                kept: 1,
            }
        );
        let same = plan_reload(&old, &old);
        assert_eq!(
            (
                same.remove.len(),
                same.restart.len(),
                same.add.len(),
                same.kept
            ),
            (0, 0, 0, 3)
        );
    }

    #[test]
    fn splits_shell_words() {
        assert_eq!(
            shell_words("app -x 'a b' \"c d\" e\\ f").unwrap(),
            vec!["app", "-x", "a b", "c d", "e f"]
        );
        assert!(shell_words("app 'oops").is_err());
    }
}
