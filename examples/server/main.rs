//! The reference Warren server: an AMQP 0-9-1 broker that RabbitMQ clients use unchanged.
//!
//! ```text
//! cargo run --release --example server -- --listen 127.0.0.1:5672 --data-dir ./data
//! ```
//!
//! Settings come from flags, and from a TOML file given with `--config` (flags win):
//!
//! ```toml
//! listen = ["127.0.0.1:5672"]
//! data_dir = "./data"
//! log_level = "info"                 # or a tracing filter, e.g. "warren_broker=debug"
//! memory_high_watermark = "0.4"      # a fraction of RAM, or "512MiB", "2GB", a byte count
//! max_connections = 10000            # default: the open-files limit, less a reserve
//! load_definitions = "./definitions.json"   # RabbitMQ JSON definitions imported at start
//!
//! [[users]]
//! name = "app"
//! password = "secret"                # or password_hash = "<RabbitMQ base64 SHA-256 hash>"
//! tags = ["administrator"]
//! loopback_only = false
//!
//! [[vhosts]]
//! name = "/"
//!
//! [[permissions]]
//! user = "app"
//! vhost = "/"
//! configure = ".*"
//! write = ".*"
//! read = ".*"
//! ```
//!
//! Definitions exported from RabbitMQ (`rabbitmqctl export_definitions`, or the management
//! API's `/api/definitions`) load at start with `--import-definitions FILE` (or
//! `load_definitions = "FILE"` in the configuration file, as RabbitMQ's `load_definitions`),
//! after the data directory is recovered and before clients are accepted: users, virtual
//! hosts, permissions, policies, queues, exchanges and bindings, as RabbitMQ imports them
//! (existing ones are left or replaced as RabbitMQ does; what Warren does not support is
//! logged and ignored). A malformed file stops the server before it changes anything.
//! Exporting is `BrokerHandle::export_definitions`, for embedders and tools; the server has
//! no flag to export a data directory offline, since nothing keeps a running server off the
//! same directory meanwhile.
//!
//! Backups: SIGUSR1 writes an online backup of the data directory (definitions and persistent
//! messages, consistent at one instant, taken while clients go on) into a new directory under
//! `--backup-dir` (default `<data-dir>.backups`). `--restore-backup DIR` copies a backup into
//! an empty data directory and starts on it:
//!
//! ```text
//! kill -USR1 $(pidof server)                  # -> ./data.backups/1763720000000
//! server --data-dir ./fresh --restore-backup ./data.backups/1763720000000
//! ```
//!
//! With no users configured it has RabbitMQ's default: `guest`/`guest`, from loopback only,
//! with full rights on `/`. It raises its open-files limit to the hard limit at start, and at
//! its connection limit closes new connections at once. SIGTERM and Ctrl-C shut it down
//! cleanly: clients get `connection.close` with 320 CONNECTION_FORCED.

use clap::Parser;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use warren_broker::Broker;

/// Command-line flags.
#[derive(Debug, Parser)]
#[command(name = "server", about = "The Warren AMQP 0-9-1 broker")]
struct Args {
    /// Address to listen on (repeatable). Default 127.0.0.1:5672.
    #[arg(long)]
    listen: Vec<SocketAddr>,
    /// Data directory. Default ./data.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// TOML configuration file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Log level or tracing filter (default info; RUST_LOG also works).
    #[arg(long)]
    log_level: Option<String>,
    /// Memory high watermark: a fraction of RAM ("0.4"), or a size ("512MiB", "2GB", bytes).
    #[arg(long)]
    memory_high_watermark: Option<String>,
    /// A user as name:password (repeatable); replaces the default guest user.
    #[arg(long = "user")]
    users: Vec<String>,
    /// A virtual host to create (repeatable); `/` always exists.
    #[arg(long = "vhost")]
    vhosts: Vec<String>,
    /// Connections served at once (default: open-files limit less a reserve).
    #[arg(long)]
    max_connections: Option<usize>,
    /// A definitions file in RabbitMQ's JSON format to import at start.
    #[arg(long, value_name = "FILE")]
    import_definitions: Option<PathBuf>,
    /// The memory queue backlogs may make the server use: past half of it in messages, they
    /// page out to disk (a size, as for the watermark; default: half the memory high
    /// watermark).
    #[arg(long)]
    paging_budget: Option<String>,
    /// Where SIGUSR1 writes an online backup (a new directory per backup, named by the time).
    /// Default: `<data-dir>.backups`.
    #[arg(long, value_name = "DIR")]
    backup_dir: Option<PathBuf>,
    /// Restore a backup before starting: its files are copied into the data directory, which
    /// must be empty or missing.
    #[arg(long, value_name = "DIR")]
    restore_backup: Option<PathBuf>,
}

/// The configuration file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    listen: Vec<SocketAddr>,
    data_dir: Option<PathBuf>,
    log_level: Option<String>,
    memory_high_watermark: Option<Watermark>,
    max_connections: Option<usize>,
    /// A definitions file to import at start (`--import-definitions` wins).
    load_definitions: Option<PathBuf>,
    #[serde(default)]
    users: Vec<UserConfig>,
    #[serde(default)]
    vhosts: Vec<VhostConfig>,
    #[serde(default)]
    permissions: Vec<PermissionConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Watermark {
    Number(f64),
    Text(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserConfig {
    name: String,
    password: Option<String>,
    password_hash: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    loopback_only: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VhostConfig {
    name: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PermissionConfig {
    user: String,
    vhost: String,
    configure: String,
    write: String,
    read: String,
}

/// Reads a watermark: a fraction of `total` (at most 1.0), or a size with an optional unit.
fn parse_watermark(s: &str, total: u64) -> Result<u64, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("invalid memory watermark '{s}'"))?;
    let unit = unit.trim().to_ascii_lowercase();
    let factor: f64 = match unit.as_str() {
        // A bare number up to 1 is a fraction of RAM, as in the configuration file.
        "" if n <= 1.0 => return Ok((n * total as f64) as u64),
        "" | "b" => 1.0,
        "kb" => 1e3,
        "kib" | "k" => 1024.0,
        "mb" => 1e6,
        "mib" | "m" => 1024.0 * 1024.0,
        "gb" => 1e9,
        "gib" | "g" => 1024.0 * 1024.0 * 1024.0,
        _ => return Err(format!("invalid memory watermark unit in '{s}'")),
    };
    Ok((n * factor) as u64)
}

/// Total RAM in octets, from /proc/meminfo (0 if unknown).
fn total_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Raises the open-files soft limit to the hard limit; returns the limit now in force.
fn raise_open_files() -> u64 {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("warning: cannot raise the open-files limit: {e}");
            rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(soft, _)| soft)
        }
    }
}

/// Connections that fit under an open-files limit, keeping a reserve for listeners, files
/// and the runtime.
fn connections_for(open_files: u64) -> usize {
    open_files.saturating_sub(64).max(16) as usize
}

fn load_config(path: &std::path::Path) -> Result<FileConfig, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| format!("invalid configuration {}: {e}", path.display()))
}

fn main() -> ExitCode {
    let args = Args::parse();
    let file = match args.config.as_deref().map(load_config).transpose() {
        Ok(f) => f.unwrap_or_default(),
        Err(e) => {
            eprintln!("server: {e}");
            return ExitCode::FAILURE;
        }
    };
    let level = args
        .log_level
        .clone()
        .or(file.log_level.clone())
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| "info".into());
    let filter = match tracing_subscriber::EnvFilter::try_new(&level) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("server: invalid log level '{level}': {e}");
            return ExitCode::FAILURE;
        }
    };
    tracing_subscriber::fmt().with_env_filter(filter).init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("server: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args, file)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args, file: FileConfig) -> Result<(), String> {
    let data_dir = args
        .data_dir
        .or(file.data_dir)
        .unwrap_or_else(|| PathBuf::from("./data"));
    if let Some(backup) = &args.restore_backup {
        restore(backup, &data_dir)?;
    }
    std::fs::create_dir_all(&data_dir)
        .map_err(|e| format!("cannot create data directory {}: {e}", data_dir.display()))?;
    let open_files = raise_open_files();
    let max_connections = args
        .max_connections
        .or(file.max_connections)
        .unwrap_or_else(|| connections_for(open_files));
    let mut listen = if args.listen.is_empty() {
        file.listen
    } else {
        args.listen
    };
    if listen.is_empty() {
        listen.push(SocketAddr::from(([127, 0, 0, 1], 5672)));
    }
    let total = total_memory();
    let watermark = match (args.memory_high_watermark, file.memory_high_watermark) {
        (Some(s), _) | (None, Some(Watermark::Text(s))) => parse_watermark(&s, total)?,
        (None, Some(Watermark::Number(n))) if n <= 1.0 => (n * total as f64) as u64,
        (None, Some(Watermark::Number(n))) => n as u64,
        (None, None) => (0.4 * total as f64) as u64,
    };
    let mut b = Broker::builder()
        .max_connections(max_connections)
        .data_dir(&data_dir);
    if watermark > 0 {
        b = b.memory_high_watermark(watermark);
    }
    if let Some(budget) = &args.paging_budget {
        b = b.paging_budget(parse_watermark(budget, total)?);
    }
    for a in &listen {
        b = b.listen(*a);
    }
    for v in file
        .vhosts
        .iter()
        .map(|v| v.name.clone())
        .chain(args.vhosts)
    {
        b = b.vhost(&v);
    }
    b = b.vhost("/");
    for u in &file.users {
        let tags: Vec<&str> = u.tags.iter().map(String::as_str).collect();
        b = match (&u.password, &u.password_hash) {
            (Some(p), _) => b.user(&u.name, p, &tags),
            (None, Some(h)) => b.user_with_hash(&u.name, h, &tags),
            (None, None) => return Err(format!("user '{}' has no password", u.name)),
        };
        if u.loopback_only {
            b = b.loopback_only(&u.name);
        }
    }
    for spec in &args.users {
        let (name, password) = spec
            .split_once(':')
            .ok_or_else(|| format!("--user wants name:password, got '{spec}'"))?;
        b = b
            .user(name, password, &["administrator"])
            .permissions(name, "/", ".*", ".*", ".*");
    }
    for p in &file.permissions {
        b = b.permissions(&p.user, &p.vhost, &p.configure, &p.write, &p.read);
    }
    let definitions = args.import_definitions.or(file.load_definitions);
    if let Some(path) = &definitions {
        let json = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        b = b.load_definitions(json);
    }
    let broker = b.start().await.map_err(|e| match (&e, &definitions) {
        (warren_broker::Error::Definitions(_), Some(path)) => format!("{}: {e}", path.display()),
        _ => e.to_string(),
    })?;
    tracing::info!(
        data_dir = %data_dir.display(),
        open_files,
        max_connections,
        memory_high_watermark = watermark,
        "Warren {} started", env!("CARGO_PKG_VERSION")
    );
    let backups = args.backup_dir.unwrap_or_else(|| {
        let mut name = data_dir.clone().into_os_string();
        name.push(".backups");
        PathBuf::from(name)
    });
    wait_for_signal(&broker, &backups).await;
    tracing::info!("shutting down");
    broker.shutdown(Duration::from_secs(5)).await;
    Ok(())
}

/// Waits for SIGTERM or Ctrl-C; SIGUSR1 meanwhile writes an online backup under `backups`.
async fn wait_for_signal(broker: &Broker, backups: &std::path::Path) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::user_defined1()),
        ) {
            (Ok(mut term), Ok(mut usr1)) => loop {
                tokio::select! {
                    _ = term.recv() => break,
                    _ = tokio::signal::ctrl_c() => break,
                    _ = usr1.recv() => {
                        let stamp = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map(|d| d.as_millis())
                            .unwrap_or_default();
                        let target = backups.join(stamp.to_string());
                        let handle = broker.handle();
                        let done = tokio::task::spawn_blocking(move || {
                            handle.backup(&target).map(|r| (target, r))
                        })
                        .await;
                        match done {
                            Ok(Ok((target, r))) => tracing::info!(
                                target = %target.display(), files = r.files, bytes = r.bytes,
                                "backup written; restore with --restore-backup"
                            ),
                            Ok(Err(e)) => tracing::error!(error = %e, "backup failed"),
                            Err(e) => tracing::error!(error = %e, "backup failed"),
                        }
                    }
                }
            },
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (broker, backups);
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Copies a backup into an empty (or missing) data directory.
fn restore(backup: &std::path::Path, data_dir: &std::path::Path) -> Result<(), String> {
    let used = std::fs::read_dir(data_dir)
        .map(|mut d| d.next().is_some())
        .unwrap_or(false);
    if used {
        return Err(format!(
            "cannot restore into {}: the data directory is not empty",
            data_dir.display()
        ));
    }
    fn copy(from: &std::path::Path, to: &std::path::Path) -> std::io::Result<u64> {
        std::fs::create_dir_all(to)?;
        let mut n = 0;
        for e in std::fs::read_dir(from)? {
            let e = e?;
            let dest = to.join(e.file_name());
            if e.file_type()?.is_dir() {
                n += copy(&e.path(), &dest)?;
            } else {
                std::fs::copy(e.path(), &dest)?;
                std::fs::File::open(&dest)?.sync_all()?;
                n += 1;
            }
        }
        std::fs::File::open(to)?.sync_all()?;
        Ok(n)
    }
    let n =
        copy(backup, data_dir).map_err(|e| format!("cannot restore {}: {e}", backup.display()))?;
    tracing::info!(from = %backup.display(), to = %data_dir.display(), files = n, "backup restored");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watermarks() {
        assert_eq!(parse_watermark("0.5", 1000), Ok(500));
        assert_eq!(parse_watermark("512MiB", 0), Ok(512 * 1024 * 1024));
        assert_eq!(parse_watermark("2GB", 0), Ok(2_000_000_000));
        assert_eq!(parse_watermark("4096", 0), Ok(4096));
        assert_eq!(parse_watermark("1", 1000), Ok(1000));
        assert!(parse_watermark("lots", 0).is_err());
        assert!(parse_watermark("5 parsecs", 0).is_err());
    }

    #[test]
    fn config_file_parses() {
        let c: FileConfig = toml::from_str(
            r#"
            listen = ["127.0.0.1:5673"]
            memory_high_watermark = "1GiB"
            [[users]]
            name = "app"
            password = "pw"
            [[permissions]]
            user = "app"
            vhost = "/"
            configure = ".*"
            write = ".*"
            read = ".*"
            "#,
        )
        .unwrap();
        assert_eq!(c.users.len(), 1);
        assert_eq!(c.listen[0].port(), 5673);
        assert!(toml::from_str::<FileConfig>("bogus = 1").is_err());
    }

    #[test]
    fn connection_limit_keeps_a_reserve() {
        assert_eq!(connections_for(1024), 960);
        assert_eq!(connections_for(10), 16);
    }
}
