//! walship: continuous streaming backup of SQLite databases, a drop-in successor to Litestream
//! v0.3.13 (same config, commands, flags and replica format).

mod args;
mod check;
mod dirs;
mod drill;
mod follow;
mod health;
mod heartbeat;
mod list;
mod metrics;
mod notify;
mod once;
mod progress;
mod replicas;
mod replicate;
mod restore;
mod restore_dir;
mod setup;
mod snapreq;
mod table;
mod verify;

// Name every backend crate: the linker drops a crate nothing references, and its registration.
use walship_abs as _;
use walship_file as _;
use walship_gcs as _;
use walship_s3 as _;
use walship_sftp as _;

use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// The backend types this build is expected to link (asserted by a test against `version -v`).
pub const EXPECTED_BACKENDS: &[&str] = &["file", "s3", "sftp"];

#[derive(Parser)]
#[command(
    name = "walship",
    about = "Continuous streaming backup of SQLite databases (Litestream v0.3 compatible)",
    disable_version_flag = true
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Args, Clone)]
struct ConfigFlags {
    /// Configuration file (default: ./litestream.yml if present, else /etc/litestream.yml).
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Use the configuration file verbatim, without expanding $VARIABLES.
    #[arg(long = "no-expand-env")]
    no_expand_env: bool,
}

impl ConfigFlags {
    /// The arguments every listing command shares.
    fn listing<'a>(
        &'a self,
        replica: &'a Option<String>,
        target: &'a str,
        json: bool,
    ) -> list::Common<'a> {
        list::Common {
            config: self.config.as_deref(),
            no_expand_env: self.no_expand_env,
            replica: replica.as_deref(),
            target,
            json,
        }
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Replicate databases continuously.
    #[command(after_help = "Examples:
  # Replicate every database of /etc/litestream.yml until SIGINT/SIGTERM.
  $ walship replicate
  # Replicate one database to a bucket without a config file.
  $ walship replicate /var/lib/app/db.sqlite s3://mybkt/db
  # Check the config and every replica, then exit.
  $ walship replicate -dry-run -config /etc/litestream.yml
  # Run the application; stop replicating when it exits.
  $ walship replicate -exec 'myapp -serve'
  # Before maintenance: ship everything and take a snapshot of every database now.
  $ walship replicate -once -force-snapshot")]
    Replicate {
        #[command(flatten)]
        c: ConfigFlags,
        /// Run this command as a subprocess; stop replicating when it exits.
        #[arg(long, value_name = "CMD")]
        exec: Option<String>,
        /// Check the configuration and every replica (probe put/list/get/delete), then exit.
        #[arg(long = "dry-run")]
        dry_run: bool,
        /// Sync every database to every replica once (snapshot where none exists, retention),
        /// then exit; exit code 1 if anything failed.
        #[arg(long)]
        once: bool,
        /// With -once: also take a new snapshot on every replica (before maintenance or an
        /// upgrade).
        #[arg(long = "force-snapshot")]
        force_snapshot: bool,
        /// Restore every configured database that does not exist from its replicas (latest)
        /// before replicating; a database with no backup anywhere starts fresh, and a failed
        /// restore stops replicate (exit 1) instead of leaving an empty database in its place.
        #[arg(long = "restore-if-db-not-exists")]
        restore_if_db_not_exists: bool,
        /// A database path and its replica URLs, instead of a config file.
        #[arg(value_name = "DB_PATH REPLICA_URL")]
        positional: Vec<String>,
    },
    /// Check the configuration and every replica, like `replicate -dry-run`.
    #[command(after_help = "Examples:
  # Check every database and replica of /etc/litestream.yml.
  $ walship check
  # Check one replica URL.
  $ walship check /var/lib/app/db.sqlite s3://mybkt/db")]
    Check {
        #[command(flatten)]
        c: ConfigFlags,
        /// A database path and its replica URLs, instead of a config file.
        #[arg(value_name = "DB_PATH REPLICA_URL")]
        positional: Vec<String>,
    },
    /// Restore a database from a replica.
    #[command(after_help = "Examples:
  # Restore the latest state to the database's own path (refused if it exists).
  $ walship restore /var/lib/app/db.sqlite
  # Restore to a point in time, into a new file.
  $ walship restore -timestamp 2026-01-01T00:00:00Z -o /tmp/db /var/lib/app/db.sqlite
  # Restore from one replica and generation.
  $ walship restore -replica s3 -generation 0123456789abcdef -o /tmp/db /var/lib/app/db.sqlite
  # Restore from a URL, no config needed; on boot, only when the database is missing.
  $ walship restore -if-db-not-exists -if-replica-exists -o /var/lib/app/db.sqlite s3://mybkt/db
  # The missing databases of a directory entry (`dir: /var/lib/app/tenants`), 4 at a time.
  $ walship restore -if-db-not-exists -dir /var/lib/app/tenants /var/lib/app/tenants
  # A read replica on another server: restore, then follow the primary's replica.
  $ walship restore -f -o /var/lib/app/replica.db s3://mybkt/db")]
    Restore {
        #[command(flatten)]
        c: ConfigFlags,
        /// Where to write the restored database (default: the database's own path).
        #[arg(short = 'o', value_name = "PATH")]
        output: Option<PathBuf>,
        /// Restore from this replica (default: the replica with the latest data).
        #[arg(long, value_name = "NAME")]
        replica: Option<String>,
        /// Restore from this generation (default: the generation with the latest data).
        #[arg(long, value_name = "NAME")]
        generation: Option<String>,
        /// Restore up to this WAL index (hexadecimal, inclusive).
        #[arg(long, value_name = "NUM")]
        index: Option<String>,
        /// Restore the state at this moment (RFC 3339).
        #[arg(long, value_name = "TIMESTAMP")]
        timestamp: Option<String>,
        /// How many WAL indexes download at once (v0.3.13's flag). walship fetches at least 64
        /// ahead of the one being applied, within 256 MiB of stored objects, and up to 16
        /// segments of each at once; a larger value raises the first bound.
        #[arg(long, default_value_t = 8, value_name = "NUM")]
        parallelism: i64,
        /// Exit 0 without restoring when the output database already exists.
        #[arg(long = "if-db-not-exists")]
        if_db_not_exists: bool,
        /// Exit 0 without restoring when the replica holds no backup.
        #[arg(long = "if-replica-exists")]
        if_replica_exists: bool,
        /// Check the restored database before it reaches the output path: none, quick or full
        /// (v0.3.13 checks nothing).
        #[arg(
            long = "integrity-check",
            default_value = "quick",
            value_name = "LEVEL"
        )]
        integrity_check: verify::IntegrityCheck,
        /// Follow: after restoring, keep applying the replica's new WAL segments to the output
        /// until SIGINT or SIGTERM. The output is then a read replica that any process may open
        /// (read-only) while it follows; readers only ever see whole transactions of the primary.
        #[arg(short = 'f', conflicts_with_all = ["index", "timestamp", "generation", "if_db_not_exists"])]
        follow: bool,
        /// With -f: how long to wait between polls of the replica when nothing was new.
        #[arg(
            long = "follow-interval",
            default_value = "1s",
            value_name = "DURATION"
        )]
        follow_interval: String,
        /// With -f: serve the follower's Prometheus metrics (its lag, position, commits applied)
        /// on this address, as `replicate`'s `addr:` does (`:9091` binds every interface).
        #[arg(long = "addr", value_name = "ADDR", requires = "follow")]
        addr: Option<String>,
        /// Restore every database of a directory entry into OUT_DIR (each at its relative
        /// path): the target is then the entry's `dir`, or a replica URL of its location.
        #[arg(long = "dir", value_name = "OUT_DIR", conflicts_with_all = ["output", "generation", "index"])]
        dir: Option<PathBuf>,
        /// With -dir: how many databases restore at once.
        #[arg(long, default_value_t = 4, value_name = "NUM")]
        concurrency: usize,
        /// The configured database to restore, or a replica URL.
        #[arg(value_name = "DB_PATH|REPLICA_URL")]
        target: String,
    },
    /// Take a snapshot of one configured database on every replica now.
    #[command(after_help = "Examples:
  # Before maintenance: everything shipped, and a fresh snapshot to restore from.
  $ walship snapshot /var/lib/app/db.sqlite
  (When the service is running, the running replicate takes the snapshot and this command waits
  for it; run it as the service's user or root. `replicate -once -force-snapshot` does every
  database while the service is stopped.)")]
    Snapshot {
        #[command(flatten)]
        c: ConfigFlags,
        /// The configured database.
        #[arg(value_name = "DB_PATH")]
        target: String,
    },
    /// Prove every replica of one database restores it: a restore drill now.
    #[command(after_help = "Examples:
  # The runbook's monthly check (exit 0 only when every replica matches):
  $ walship verify /var/lib/app/db.sqlite
  $ walship verify -json -replica s3 /var/lib/app/db.sqlite
  Each replica is restored into a private file in the database's meta directory (as much free
  space as the database is needed there) at a position walship also knows locally, and compared
  with the database page by page; nothing is checkpointed or locked for the application. When
  the service is running, the running replicate runs the drill and this command waits for it
  (run it as the service's user or root); otherwise it ships what is pending first, as
  `replicate -once` would. `validation-interval` in a replica's config runs the same drill on a
  schedule.")]
    Verify {
        #[command(flatten)]
        c: ConfigFlags,
        /// Print a JSON array instead of one line per replica.
        #[arg(long)]
        json: bool,
        /// Only this replica (default: every replica of the database).
        #[arg(long, value_name = "NAME")]
        replica: Option<String>,
        /// The configured database.
        #[arg(value_name = "DB_PATH")]
        target: String,
    },
    /// List snapshots.
    #[command(after_help = "Examples:
  $ walship snapshots /var/lib/app/db.sqlite
  $ walship snapshots -replica s3 /var/lib/app/db.sqlite
  $ walship snapshots s3://mybkt/db")]
    Snapshots {
        #[command(flatten)]
        c: ConfigFlags,
        /// Print a JSON array instead of the table (field names in the README).
        #[arg(long)]
        json: bool,
        /// Only this replica (default: every replica of the database).
        #[arg(long, value_name = "NAME")]
        replica: Option<String>,
        /// The configured database, or a replica URL.
        #[arg(value_name = "DB_PATH|REPLICA_URL")]
        target: String,
    },
    /// List generations.
    #[command(after_help = "Examples:
  $ walship generations /var/lib/app/db.sqlite
  $ walship generations s3://mybkt/db")]
    Generations {
        #[command(flatten)]
        c: ConfigFlags,
        /// Print a JSON array instead of the table (field names in the README).
        #[arg(long)]
        json: bool,
        /// Only this replica (default: every replica of the database).
        #[arg(long, value_name = "NAME")]
        replica: Option<String>,
        /// The configured database, or a replica URL.
        #[arg(value_name = "DB_PATH|REPLICA_URL")]
        target: String,
    },
    /// List WAL segments.
    #[command(after_help = "Examples:
  $ walship wal /var/lib/app/db.sqlite
  $ walship wal -replica s3 -generation 0123456789abcdef /var/lib/app/db.sqlite")]
    Wal {
        #[command(flatten)]
        c: ConfigFlags,
        /// Print a JSON array instead of the table (field names in the README).
        #[arg(long)]
        json: bool,
        /// Only this replica (default: every replica of the database).
        #[arg(long, value_name = "NAME")]
        replica: Option<String>,
        /// Only this generation (default: every generation).
        #[arg(long, value_name = "NAME")]
        generation: Option<String>,
        /// The configured database, or a replica URL.
        #[arg(value_name = "DB_PATH|REPLICA_URL")]
        target: String,
    },
    /// Show every replica's position, the database's own position and the lag between them.
    #[command(after_help = "Examples:
  $ walship replicas
  $ walship replicas -json /var/lib/app/db.sqlite")]
    Replicas {
        #[command(flatten)]
        c: ConfigFlags,
        /// Only this replica (default: every replica).
        #[arg(long, value_name = "NAME")]
        replica: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Only this database (default: every configured database).
        #[arg(value_name = "DB_PATH")]
        target: Option<String>,
    },
    /// List configured databases.
    #[command(after_help = "Examples:
  $ walship databases
  $ walship databases -config /etc/litestream.yml")]
    Databases {
        #[command(flatten)]
        c: ConfigFlags,
        /// Print a JSON array instead of the table (field names in the README).
        #[arg(long)]
        json: bool,
    },
    /// Print a shell completion script.
    #[command(after_help = "Examples:
  $ walship completion bash > /etc/bash_completion.d/walship
  $ walship completion fish > ~/.config/fish/completions/walship.fish
  (the release package installs them for bash, zsh and fish)")]
    Completion {
        /// The shell: bash, zsh, fish, elvish or powershell.
        #[arg(value_enum, value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
    /// Write the man pages (walship.1 and one per command) into a directory.
    #[command(after_help = "Examples:
  $ walship man /usr/local/share/man/man1
  (the release package installs them)")]
    Man {
        /// The directory to write them into (created if missing).
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
    /// Print the version and the commit it was built from.
    #[command(after_help = "Examples:
  $ walship version
  $ walship -version")]
    Version {
        /// Also list the linked backend types.
        #[arg(short = 'v')]
        verbose: bool,
    },
}

const VALUE_FLAGS: &[&str] = &[
    "config",
    "exec",
    "o",
    "replica",
    "generation",
    "index",
    "timestamp",
    "parallelism",
    "integrity-check",
    "dir",
    "concurrency",
    "follow-interval",
    "addr",
];

/// walship's own crates: the configured level applies to them. Libraries log at warnings and
/// above, as v0.3.13's debug level shows no SDK internals: at debug the AWS SDK printed the
/// access key id with the resolved identity, and its signer the canonical request.
const OWN_CRATES: &[&str] = &[
    "walship",
    "walship_core",
    "walship_config",
    "walship_file",
    "walship_s3",
    "walship_sftp",
    "walship_objstore",
    "walship_gcs",
    "walship_abs",
];

/// Capped even when `WALSHIP_LOG` asks for more: these targets print credentials or signatures.
const SECRET_TARGETS: &[&str] = &[
    "aws_smithy_runtime=info",
    "aws_smithy_runtime_api=info",
    "aws_sigv4=info",
    "aws_runtime=info",
    "aws_config=info",
    "aws_credential_types=info",
    "aws_sdk_s3=info",
    "aws_sdk_sts=info",
    "aws_sdk_sso=info",
    "aws_sdk_ssooidc=info",
    // GCS and Azure: a SAS token travels in the request URL.
    "object_store=info",
    "reqwest=info",
    "hyper_util=info",
];

fn log_directives(level: &str) -> String {
    let mut d = String::from("warn");
    for c in OWN_CRATES {
        d.push_str(&format!(",{c}={level}"));
    }
    d
}

fn init_logging(level: &str, json: bool, stderr: bool) {
    let mut filter = tracing_subscriber::EnvFilter::try_from_env("WALSHIP_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(log_directives(level)));
    for d in SECRET_TARGETS {
        if let Ok(d) = d.parse() {
            filter = filter.add_directive(d);
        }
    }
    let ansi = colour_ok();
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(ansi);
    let _ = match (json, stderr) {
        // Fields at the top level, as v0.3.13's slog JSON lines (`"db"`, `"replica"`, ...).
        (true, true) => b
            .json()
            .flatten_event(true)
            .with_writer(std::io::stderr)
            .try_init(),
        (true, false) => b
            .json()
            .flatten_event(true)
            .with_writer(std::io::stdout)
            .try_init(),
        (false, true) => b.with_writer(std::io::stderr).try_init(),
        (false, false) => b.with_writer(std::io::stdout).try_init(),
    };
}

/// Colours only on a terminal (both streams: either may be the log) and never with `NO_COLOR`
/// set to anything but the empty string (no-color.org).
fn colour_ok() -> bool {
    colour_wanted(
        std::env::var_os("NO_COLOR").as_deref(),
        std::io::IsTerminal::is_terminal(&std::io::stdout()),
        std::io::IsTerminal::is_terminal(&std::io::stderr()),
    )
}

fn colour_wanted(no_color: Option<&std::ffi::OsStr>, stdout_tty: bool, stderr_tty: bool) -> bool {
    no_color.is_none_or(|v| v.is_empty()) && stdout_tty && stderr_tty
}

/// Raises the soft limit on open files to the hard limit, as Go's runtime does for v0.3.13.
/// Each database costs about 9 descriptors (its connections, `-wal`, `-shm`, the shadow WAL,
/// the lock, the change watch) plus one per replica connection in use: 150 databases under
/// systemd's default soft limit of 1024 failed their syncs with "Too many open files".
fn raise_nofile_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid, owned struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// `walship version`: the version and the commit it was built from.
pub fn version_line() -> String {
    format!(
        "walship {} (commit {}, litestream v0.3.13 compatible)",
        env!("CARGO_PKG_VERSION"),
        env!("WALSHIP_COMMIT")
    )
}

fn main() {
    // glibc gives every thread that allocates an arena of its own and keeps what each one freed;
    // with tokio's workers and blocking threads that was megabytes resident for buffers used once.
    // walship's threads allocate little and rarely at once: two arenas are plenty.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: called first, before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        // A fixed threshold (glibc raises a dynamic one to the largest block freed): part and
        // snapshot buffers of a burst of uploads stay separate mappings, returned when freed,
        // instead of heap that fragmentation keeps resident after the burst.
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
    }
    walship_core::sqlite::lean_memory();
    raise_nofile_limit();
    // Arguments that are not UTF-8 (a path in another encoding) get one line and exit 1;
    // `std::env::args` would panic on them.
    let raw: Vec<String> = match std::env::args_os()
        .enumerate()
        .map(|(i, a)| a.into_string().map_err(|a| (i, a)))
        .collect()
    {
        Ok(v) => v,
        Err((i, a)) => {
            eprintln!(
                "error: argument {i} ({}) is not valid UTF-8; walship needs paths and values in UTF-8",
                a.to_string_lossy()
            );
            std::process::exit(1);
        }
    };
    // `-version` and `--version` are `version`, as users try all three.
    let mut raw = raw;
    if raw.len() > 1 && matches!(raw[1].as_str(), "-version" | "--version") {
        raw[1] = "version".into();
    }
    let args = if raw.len() > 1 {
        let mut v = vec![raw[0].clone(), raw[1].clone()];
        v.extend(
            args::go_style(raw[1..].to_vec(), VALUE_FLAGS)
                .into_iter()
                .skip(1),
        );
        v
    } else {
        raw
    };
    let cli = match Cli::try_parse_from(&args) {
        Ok(c) => c,
        Err(e) => {
            // Usage errors (an unknown flag, a missing argument) exit 2 as Unix tools do, so a
            // script tells "called wrongly" from "failed" (v0.3.13 exits 1 for both); help
            // exits 0. Printed plain, in the single-dash form.
            // A bad value of a known flag is bad input (exit 1, like `-parallelism -1`).
            let text = args::single_dash(&e.render().to_string());
            if e.use_stderr() {
                eprint!("{text}");
                let bad_value = matches!(
                    e.kind(),
                    clap::error::ErrorKind::InvalidValue | clap::error::ErrorKind::ValueValidation
                );
                std::process::exit(if bad_value { 1 } else { 2 });
            }
            print!("{text}");
            std::process::exit(0);
        }
    };
    // Logging: the config's `logging` section applies to replicate; others log to stderr.
    let (level, json, stderr) = match &cli.cmd {
        // A dry run prints its verdicts on stdout; its log lines go to stderr.
        Cmd::Replicate { dry_run: true, .. } => ("info".to_string(), false, true),
        Cmd::Replicate { c, positional, .. } if positional.is_empty() => {
            match walship_config::Config::load(
                &walship_config::resolve_config_path(c.config.as_deref()),
                !c.no_expand_env,
            ) {
                Ok((cfg, _)) => (
                    format!("{:?}", cfg.logging.level).to_lowercase(),
                    cfg.logging.json,
                    cfg.logging.stderr,
                ),
                Err(_) => ("info".to_string(), false, false),
            }
        }
        Cmd::Replicate { .. } => ("info".to_string(), false, false),
        _ => ("info".to_string(), false, true),
    };
    init_logging(&level, json, stderr);
    // Replication waits on I/O; blocking work has its own pool. More workers than this only add
    // threads (and their stacks) on a large server.
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get().clamp(1, 4));
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = rt.block_on(run(cli));
    drop(rt);
    std::process::exit(code);
}

async fn run(cli: Cli) -> i32 {
    let is_replicate = matches!(cli.cmd, Cmd::Replicate { .. });
    let res: anyhow::Result<i32> = async {
        match cli.cmd {
            Cmd::Replicate {
                c,
                exec,
                dry_run,
                once,
                force_snapshot,
                restore_if_db_not_exists,
                positional,
            } => {
                replicate::run(replicate::ReplicateArgs {
                    config: c.config.as_deref(),
                    no_expand_env: c.no_expand_env,
                    exec,
                    dry_run,
                    once,
                    force_snapshot,
                    restore_if_db_not_exists,
                    positional: &positional,
                })
                .await
            }
            Cmd::Snapshot { c, target } => {
                replicate::snapshot_one(c.config.as_deref(), c.no_expand_env, &target).await
            }
            Cmd::Verify {
                c,
                json,
                replica,
                target,
            } => {
                drill::run(
                    c.config.as_deref(),
                    c.no_expand_env,
                    &target,
                    replica.as_deref(),
                    json,
                )
                .await
            }
            Cmd::Check { c, positional } => {
                replicate::run(replicate::ReplicateArgs {
                    config: c.config.as_deref(),
                    no_expand_env: c.no_expand_env,
                    exec: None,
                    dry_run: true,
                    once: false,
                    force_snapshot: false,
                    restore_if_db_not_exists: false,
                    positional: &positional,
                })
                .await
            }
            Cmd::Restore { parallelism, .. } if parallelism < 0 => Err(anyhow::anyhow!(
                "invalid -parallelism {parallelism}: must not be negative (it is how many WAL indexes download at once)"
            )),
            Cmd::Restore {
                follow: true, dir: Some(_), ..
            } => Err(anyhow::anyhow!(
                "-f follows one database: it cannot be used with -dir"
            )),
            Cmd::Restore {
                c,
                follow: true,
                output,
                replica,
                parallelism,
                follow_interval,
                addr,
                target,
                ..
            } => {
                let interval = walship_core::duration::parse_duration(&follow_interval)
                    .map_err(|e| anyhow::anyhow!("invalid -follow-interval {follow_interval:?}: {e}"))?;
                follow::run(follow::FollowArgs {
                    config: c.config.as_deref(),
                    no_expand_env: c.no_expand_env,
                    output,
                    replica: replica.as_deref(),
                    interval,
                    parallelism: parallelism.max(1) as usize,
                    target: &target,
                    addr: addr.as_deref(),
                })
                .await
            }
            Cmd::Restore {
                c,
                dir: Some(out_dir),
                replica,
                timestamp,
                parallelism,
                if_db_not_exists,
                integrity_check,
                concurrency,
                target,
                ..
            } => {
                restore_dir::run(restore_dir::DirRestoreArgs {
                    config: c.config.as_deref(),
                    no_expand_env: c.no_expand_env,
                    out_dir,
                    replica: replica.as_deref(),
                    timestamp: timestamp.as_deref(),
                    parallelism: parallelism.max(1) as usize,
                    concurrency,
                    if_db_not_exists,
                    integrity_check,
                    target: &target,
                })
                .await
            }
            Cmd::Restore {
                c,
                output,
                replica,
                generation,
                index,
                timestamp,
                parallelism,
                if_db_not_exists,
                if_replica_exists,
                integrity_check,
                target,
                ..
            } => restore::run(restore::RestoreArgs {
                config: c.config.as_deref(),
                no_expand_env: c.no_expand_env,
                output,
                replica: replica.as_deref(),
                generation: generation.as_deref(),
                index: index.as_deref(),
                timestamp: timestamp.as_deref(),
                parallelism: parallelism.max(1) as usize,
                if_db_not_exists,
                if_replica_exists,
                integrity_check,
                target: &target,
            })
            .await
            .map(|_| 0),
            Cmd::Snapshots {
                c,
                replica,
                json,
                target,
            } => list::snapshots(c.listing(&replica, &target, json))
                .await
                .map(|_| 0),
            Cmd::Generations {
                c,
                replica,
                json,
                target,
            } => list::generations(c.listing(&replica, &target, json))
                .await
                .map(|_| 0),
            Cmd::Wal {
                c,
                replica,
                json,
                generation,
                target,
            } => list::wal(c.listing(&replica, &target, json), generation.as_deref())
                .await
                .map(|_| 0),
            Cmd::Replicas {
                c,
                replica,
                json,
                target,
            } => {
                replicas::run(replicas::Args {
                    config: c.config.as_deref(),
                    no_expand_env: c.no_expand_env,
                    replica: replica.as_deref(),
                    target: target.as_deref(),
                    json,
                })
                .await
            }
            Cmd::Databases { c, json } => {
                list::databases(c.config.as_deref(), c.no_expand_env, json).map(|_| 0)
            }
            Cmd::Completion { shell } => {
                use clap::CommandFactory;
                clap_complete::generate(shell, &mut Cli::command(), "walship", &mut std::io::stdout());
                Ok(0)
            }
            Cmd::Man { dir } => {
                use clap::CommandFactory;
                std::fs::create_dir_all(&dir)
                    .and_then(|()| clap_mangen::generate_to(Cli::command(), &dir))
                    .map_err(|e| anyhow::anyhow!("cannot write man pages into {}: {e}", dir.display()))?;
                Ok(0)
            }
            Cmd::Version { verbose } => {
                println!("{}", version_line());
                if verbose {
                    println!("backends: {}", walship_core::registry::kinds().join(", "));
                }
                Ok(0)
            }
        }
    }
    .await;
    match res {
        Ok(c) => c,
        Err(e) => {
            // One line on stderr; `replicate` logs to stdout (v0.3), so it also logs the error.
            let (text, code) = describe(&e);
            if is_replicate {
                tracing::error!(error = %text, "failed to run");
            }
            eprintln!("error: {text}");
            code
        }
    }
}

/// The line and exit code of a failed command. The chain is walked down to walship's own error,
/// whose text already ends with its cause's (see `walship_core::Error`), so no cause is printed
/// twice; the exit code is that error's.
fn describe(e: &anyhow::Error) -> (String, i32) {
    let mut parts = Vec::new();
    for cause in e.chain() {
        parts.push(cause.to_string());
        if let Some(w) = cause.downcast_ref::<walship_core::Error>() {
            return (parts.join(": "), w.exit_code());
        }
    }
    (parts.join(": "), 1)
}

#[cfg(test)]
mod tests {
    use super::{colour_wanted, describe};

    /// Before, the CLI turned walship's errors into text (`anyhow!("{e}")`), dropping kind and
    /// source; now it keeps them, and the cause an I/O error already names is printed once.
    #[test]
    fn a_walship_error_is_printed_once_with_its_context() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory");
        let e: anyhow::Error = walship_core::Error::io("open /data/app.db", io)
            .with_replica("spaces")
            .into();
        let e = e.context("restore /data/app.db");
        let (text, code) = describe(&e);
        assert_eq!(
            text,
            "restore /data/app.db: replica \"spaces\": open /data/app.db: No such file or directory"
        );
        assert_eq!(code, 1);
        assert_eq!(
            describe(&anyhow::anyhow!("plain")),
            ("plain".to_string(), 1)
        );
    }
    use std::ffi::OsStr;

    #[test]
    fn colours_only_on_a_terminal_without_no_color() {
        assert!(colour_wanted(None, true, true));
        assert!(
            colour_wanted(Some(OsStr::new("")), true, true),
            "empty NO_COLOR is unset"
        );
        assert!(!colour_wanted(Some(OsStr::new("1")), true, true));
        assert!(!colour_wanted(None, false, true), "stdout piped");
        assert!(!colour_wanted(None, true, false), "stderr piped");
    }
}
