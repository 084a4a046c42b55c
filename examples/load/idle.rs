//! `--idle-connections N`: open N connections with one channel each and hold them, to
//! measure what an idle connection costs a broker.
//!
//! Connections are opened [`OPEN_CONCURRENCY`] at a time. Each then waits in a task of its
//! own with a drained (released) read buffer, answering only heartbeats (if enabled) and
//! reporting a close from the broker. With `--broker-pid`, the broker's resident memory
//! (`VmRSS` from `/proc/PID/status`) is read before opening and once all are open.

use crate::client::{CLOSE_TIMEOUT, ClientError, Conn, ConnConfig, Result};
use crate::stats::Stats;
use serde::Serialize;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

/// Handshakes in flight at once.
pub(crate) const OPEN_CONCURRENCY: usize = 32;

/// The result of an idle-connections run.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct IdleSummary {
    /// Connections asked for.
    pub(crate) connections: usize,
    /// Connections that opened.
    pub(crate) opened: u64,
    /// Seconds it took to open them.
    pub(crate) open_s: f64,
    /// Connections opened per second.
    pub(crate) open_rate: f64,
    /// Seconds they were held open.
    pub(crate) held_s: f64,
    /// Broker RSS before opening, KiB (with `--broker-pid`).
    pub(crate) broker_rss_before_kib: Option<u64>,
    /// Broker RSS with all connections open, KiB.
    pub(crate) broker_rss_after_kib: Option<u64>,
    /// (after - before) / opened, KiB.
    pub(crate) broker_kib_per_connection: Option<f64>,
    /// Errors; non-empty means exit status 1.
    pub(crate) errors: Vec<String>,
}

impl IdleSummary {
    /// The human form.
    pub(crate) fn text(&self) -> String {
        let mut s = format!(
            "summary: {} of {} idle connections opened in {:.3}s ({:.0}/s), held {:.3}s\n",
            self.opened, self.connections, self.open_s, self.open_rate, self.held_s
        );
        if let (Some(b), Some(a)) = (self.broker_rss_before_kib, self.broker_rss_after_kib) {
            s.push_str(&format!(
                "broker RSS: {b} KiB before, {a} KiB with the connections open, {:.1} KiB per connection\n",
                self.broker_kib_per_connection.unwrap_or(0.0)
            ));
        }
        for e in &self.errors {
            s.push_str(&format!("error: {e}\n"));
        }
        s
    }
}

/// Resident memory of a process in KiB, from `/proc/PID/status` (Linux).
pub(crate) fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_vm_rss(&status)
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Opens `n` idle connections, holds them until `stop`, then closes them.
pub(crate) async fn run(
    n: usize,
    cfg: ConnConfig,
    broker_pid: Option<u32>,
    stats: Arc<Stats>,
    mut stop: watch::Receiver<bool>,
    report: impl Fn(String),
) -> IdleSummary {
    let before = broker_pid.and_then(rss_kib);
    let opened = Arc::new(AtomicU64::new(0));
    let gate = Arc::new(Semaphore::new(OPEN_CONCURRENCY));
    let (all_open_tx, mut all_open) = watch::channel(false);
    // The connections' own stop signal: fired at the end whatever ended the run.
    let (close_tx, close_rx) = watch::channel(false);
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for i in 0..n {
        let cfg = ConnConfig {
            name: format!("{}-{i}", cfg.name),
            ..cfg.clone()
        };
        let (gate, opened, stats, mut close) = (
            gate.clone(),
            opened.clone(),
            stats.clone(),
            close_rx.clone(),
        );
        let all_open_tx = all_open_tx.clone();
        tasks.spawn(async move {
            let conn = {
                let Ok(_permit) = gate.acquire().await else {
                    return;
                };
                if close.has_changed().unwrap_or(true) {
                    return;
                }
                match Conn::open(&cfg).await {
                    Ok(c) => c,
                    Err(e) => {
                        stats.error(format!("idle connection {i}: {e}"));
                        return;
                    }
                }
            };
            if opened.fetch_add(1, Relaxed) + 1 == n as u64 {
                all_open_tx.send_replace(true);
            }
            hold(conn, &mut close, &stats, i).await;
        });
    }
    drop(all_open_tx);

    // Progress once a second until all are open (or every task has ended: some failed).
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let open_s = loop {
        tokio::select! {
            _ = all_open.wait_for(|&all| all) => break started.elapsed(),
            _ = tick.tick() => report(format!(
                "time {:7.3}s  open connections {}",
                started.elapsed().as_secs_f64(),
                opened.load(Relaxed)
            )),
            _ = stop.wait_for(|&stopped| stopped) => break started.elapsed(),
        }
        if !stats.errors().is_empty() {
            break started.elapsed();
        }
    };
    let count = opened.load(Relaxed);
    report(format!(
        "time {:7.3}s  open connections {count} (all {})",
        started.elapsed().as_secs_f64(),
        if count == n as u64 {
            "open"
        } else {
            "that opened"
        }
    ));
    // Let the broker settle (lazy allocations, GC) before measuring it.
    let after = match broker_pid {
        Some(pid) if stats.errors().is_empty() => {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                _ = stop.wait_for(|&stopped| stopped) => {}
            }
            rss_kib(pid)
        }
        _ => None,
    };
    let hold_start = Instant::now();
    if stats.errors().is_empty() {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        loop {
            tokio::select! {
                _ = stop.wait_for(|&stopped| stopped) => break,
                _ = tick.tick() => report(format!(
                    "time {:7.3}s  open connections {}",
                    started.elapsed().as_secs_f64(),
                    opened.load(Relaxed)
                )),
            }
            if !stats.errors().is_empty() {
                break;
            }
        }
    }
    let held_s = hold_start.elapsed().as_secs_f64();
    close_tx.send_replace(true);
    while tasks.join_next().await.is_some() {}
    let per_connection = match (before, after) {
        (Some(b), Some(a)) if count > 0 => Some((a as f64 - b as f64) / count as f64),
        _ => None,
    };
    let open_s = open_s.as_secs_f64();
    IdleSummary {
        connections: n,
        opened: count,
        open_s,
        open_rate: if open_s > 0.0 {
            count as f64 / open_s
        } else {
            0.0
        },
        held_s,
        broker_rss_before_kib: before,
        broker_rss_after_kib: after,
        broker_kib_per_connection: per_connection,
        errors: stats.errors(),
    }
}

/// Waits on an idle connection until `stop`, then closes it.
async fn hold(mut conn: Conn, stop: &mut watch::Receiver<bool>, stats: &Stats, i: usize) {
    let result: Result<()> = async {
        loop {
            tokio::select! {
                _ = stop.wait_for(|&stopped| stopped) => return Ok(()),
                r = conn.wait(None, true) => r?,
            }
            if conn.try_fill()? {
                while let Some(frame) = conn.decode()? {
                    if !conn.common(&frame)? {
                        return Err(ClientError::Protocol(format!(
                            "unexpected {frame:?} on an idle connection"
                        )));
                    }
                }
            }
            conn.try_flush()?;
            conn.shrink();
        }
    }
    .await;
    if let Err(e) = &result {
        stats.error(format!("idle connection {i}: {e}"));
    }
    conn.shutdown(result.as_ref().err(), CLOSE_TIMEOUT).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_rss() {
        let status = "Name:\tbeam.smp\nVmPeak:\t 1 kB\nVmRSS:\t  133896 kB\nThreads: 3\n";
        assert_eq!(parse_vm_rss(status), Some(133_896));
        assert_eq!(parse_vm_rss("Name: x\n"), None);
        assert_eq!(rss_kib(u32::MAX), None);
    }
}
