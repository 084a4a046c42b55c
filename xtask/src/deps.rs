//! `cargo xtask check-deps`: the dependency rules of `docs/ARCHITECTURE.md`, checked with
//! `cargo tree` and a scan of the sources.

use std::path::Path;
use std::process::Command;

/// Crates that must stay sans-IO: no runtime, no sockets, no files, no clock, no randomness.
const SANS_IO: &[(&str, &str)] = &[
    ("warren-amqp-codec", "crates/amqp-codec/src"),
    ("warren-routing", "crates/routing/src"),
    ("warren-queue", "crates/queue/src"),
];

/// Synchronous, runtime-agnostic crates: no async runtime.
const SYNC: &[&str] = &["warren-store", "warren-raft-log"];

/// Packages that bring a runtime, sockets or randomness.
const RUNTIME_PACKAGES: &[&str] = &["tokio", "mio", "socket2", "async-std", "smol", "async-io"];
const RANDOM_PACKAGES: &[&str] = &["rand", "getrandom"];

/// Source patterns that mean I/O, the clock or randomness (`HashMap::new` seeds its hasher
/// from a random source: sans-IO crates use `BTreeMap` or an explicit hasher).
const FORBIDDEN_SOURCE: &[&str] = &[
    "std::fs",
    "std::net",
    "std::process",
    "std::thread",
    "Instant::now",
    "SystemTime::now",
    "UNIX_EPOCH",
    ".elapsed()",
    "RandomState",
    "HashMap::new",
    "HashSet::new",
    "thread_rng",
    "tokio",
];

pub(crate) fn check(root: &Path) -> Result<(), String> {
    let mut problems = Vec::new();
    for (pkg, src) in SANS_IO {
        let deps = tree(root, pkg)?;
        for bad in RUNTIME_PACKAGES.iter().chain(RANDOM_PACKAGES) {
            if deps.iter().any(|d| d == bad) {
                problems.push(format!("{pkg} depends on {bad} (it must stay sans-IO)"));
            }
        }
        scan_sources(&root.join(src), &mut problems)?;
    }
    for pkg in SYNC {
        let deps = tree(root, pkg)?;
        for bad in RUNTIME_PACKAGES {
            if deps.iter().any(|d| d == bad) {
                problems.push(format!(
                    "{pkg} depends on {bad} (it must stay runtime-agnostic)"
                ));
            }
        }
    }
    let cluster = tree(root, "warren-cluster")?;
    if cluster.iter().any(|d| d == "warren-amqp-codec") {
        problems.push(
            "warren-cluster depends on warren-amqp-codec (it must know nothing of AMQP)".into(),
        );
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "dependency rules broken:\n  {}",
            problems.join("\n  ")
        ))
    }
}

/// Names of the normal (non-dev, non-build) dependencies of `pkg`, transitively.
fn tree(root: &Path, pkg: &str) -> Result<Vec<String>, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "tree", "--locked", "-p", pkg, "-e", "normal", "--prefix", "none", "--format", "{p}",
        ])
        .current_dir(root)
        .output()
        .map_err(|e| format!("cargo tree: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cargo tree -p {pkg}: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect())
}

fn scan_sources(dir: &Path, problems: &mut Vec<String>) -> Result<(), String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for entry in entries {
        let path = entry.map_err(|e| e.to_string())?.path();
        if path.is_dir() {
            scan_sources(&path, problems)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text =
                std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            for (n, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or("");
                for pat in FORBIDDEN_SOURCE {
                    if code.contains(pat) {
                        problems.push(format!("{}:{}: uses `{pat}`", path.display(), n + 1));
                    }
                }
            }
        }
    }
    Ok(())
}
