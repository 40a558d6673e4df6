//! walship: continuous streaming backup of SQLite databases, a drop-in successor to Litestream
//! v0.3.13 (same config, commands, flags and replica format).

mod args;
mod check;
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
mod setup;
mod table;
mod verify;

// Name every backend crate: the linker drops a crate nothing references, and its registration.
use walship_file as _;
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
    /// Path to the configuration file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Use the configuration file verbatim, without expanding $VARIABLES.
    #[arg(long = "no-expand-env")]
    no_expand_env: bool,
}

impl ConfigFlags {
    /// The arguments every listing command shares.
    fn listing<'a>(&'a self, replica: &'a Option<String>, target: &'a str) -> list::Common<'a> {
        list::Common {
            config: self.config.as_deref(),
            no_expand_env: self.no_expand_env,
            replica: replica.as_deref(),
            target,
        }
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Replicate databases continuously.
    Replicate {
        #[command(flatten)]
        c: ConfigFlags,
        /// Run this command as a subprocess; stop replicating when it exits.
        #[arg(long)]
        exec: Option<String>,
        /// Check the configuration and every replica (probe put/list/get/delete), then exit.
        #[arg(long = "dry-run")]
        dry_run: bool,
        /// Sync every database to every replica once (snapshot where none exists, retention),
        /// then exit; exit code 1 if anything failed.
        #[arg(long)]
        once: bool,
        /// DB_PATH REPLICA_URL...
        positional: Vec<String>,
    },
    /// Check the configuration and every replica, like `replicate -dry-run`.
    Check {
        #[command(flatten)]
        c: ConfigFlags,
        /// DB_PATH REPLICA_URL...
        positional: Vec<String>,
    },
    /// Restore a database from a replica.
    Restore {
        #[command(flatten)]
        c: ConfigFlags,
        #[arg(short = 'o')]
        output: Option<PathBuf>,
        #[arg(long)]
        replica: Option<String>,
        #[arg(long)]
        generation: Option<String>,
        /// Restore up to this WAL index (hexadecimal, inclusive).
        #[arg(long)]
        index: Option<String>,
        /// Restore the state at this moment (RFC 3339).
        #[arg(long)]
        timestamp: Option<String>,
        #[arg(long, default_value_t = 8)]
        parallelism: i64,
        #[arg(long = "if-db-not-exists")]
        if_db_not_exists: bool,
        #[arg(long = "if-replica-exists")]
        if_replica_exists: bool,
        /// Check the restored database before it reaches the output path: none, quick or full
        /// (v0.3.13 checks nothing).
        #[arg(long = "integrity-check", default_value = "quick")]
        integrity_check: verify::IntegrityCheck,
        /// DB_PATH or REPLICA_URL
        target: String,
    },
    /// List snapshots.
    Snapshots {
        #[command(flatten)]
        c: ConfigFlags,
        #[arg(long)]
        replica: Option<String>,
        target: String,
    },
    /// List generations.
    Generations {
        #[command(flatten)]
        c: ConfigFlags,
        #[arg(long)]
        replica: Option<String>,
        target: String,
    },
    /// List WAL segments.
    Wal {
        #[command(flatten)]
        c: ConfigFlags,
        #[arg(long)]
        replica: Option<String>,
        #[arg(long)]
        generation: Option<String>,
        target: String,
    },
    /// Show every replica's position, the database's own position and the lag between them.
    Replicas {
        #[command(flatten)]
        c: ConfigFlags,
        #[arg(long)]
        replica: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Only this database (default: every configured database).
        target: Option<String>,
    },
    /// List configured databases.
    Databases {
        #[command(flatten)]
        c: ConfigFlags,
    },
    /// Print the version.
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
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::io::IsTerminal::is_terminal(&std::io::stdout());
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

fn main() {
    // glibc gives every thread that allocates an arena of its own and keeps what each one freed;
    // with tokio's workers and blocking threads that was megabytes resident for buffers used once.
    // walship's threads allocate little and rarely at once: two arenas are plenty.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: called first, before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
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
            let code = if e.use_stderr() { 1 } else { 0 };
            let _ = e.print();
            std::process::exit(code);
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
                positional,
            } => {
                replicate::run(replicate::ReplicateArgs {
                    config: c.config.as_deref(),
                    no_expand_env: c.no_expand_env,
                    exec,
                    dry_run,
                    once,
                    positional: &positional,
                })
                .await
            }
            Cmd::Check { c, positional } => {
                replicate::run(replicate::ReplicateArgs {
                    config: c.config.as_deref(),
                    no_expand_env: c.no_expand_env,
                    exec: None,
                    dry_run: true,
                    once: false,
                    positional: &positional,
                })
                .await
            }
            Cmd::Restore { parallelism, .. } if parallelism < 0 => Err(anyhow::anyhow!(
                "invalid -parallelism {parallelism}: must not be negative (it is how many WAL indexes download at once)"
            )),
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
            Cmd::Snapshots { c, replica, target } => list::snapshots(c.listing(&replica, &target))
                .await
                .map(|_| 0),
            Cmd::Generations { c, replica, target } => {
                list::generations(c.listing(&replica, &target))
                    .await
                    .map(|_| 0)
            }
            Cmd::Wal {
                c,
                replica,
                generation,
                target,
            } => list::wal(c.listing(&replica, &target), generation.as_deref())
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
            Cmd::Databases { c } => {
                list::databases(c.config.as_deref(), c.no_expand_env).map(|_| 0)
            }
            Cmd::Version { verbose } => {
                println!(
                    "walship {} (litestream v0.3.13 compatible)",
                    env!("CARGO_PKG_VERSION")
                );
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
            if is_replicate {
                tracing::error!(error = %format!("{e:#}"), "failed to run");
            }
            eprintln!("error: {e:#}");
            1
        }
    }
}
