//! `cargo xtask crash [--cycles N] [--seed S] [--port P] [--server PATH]`: a process-level
//! `kill -9` test of durability.
//!
//! Each cycle, against the reference server (release build) on one data directory kept across
//! cycles (`target/crash/data`, emptied when the run starts):
//!
//! 1. with the server up, `xtask/scripts/crash_pika.py load` declares the durable queue
//!    `crash-test` (dead-lettering to the durable queue `crash-dead`) and runs 1–3 producer
//!    connections publishing persistent messages with publisher confirms (a window of 1–256
//!    unconfirmed each), and in some cycles a consumer that acks part of what it gets and
//!    rejects (dead-letters) another part;
//! 2. after a delay of 200–1500 ms the server gets SIGKILL; the clients see the connection die
//!    and report which ids they attempted, which were confirmed and which acks they may have
//!    written;
//! 3. the server is restarted on the same data directory (the restart time is from spawn until
//!    the port accepts), and `crash_pika.py drain` consumes and acks both queues until they are
//!    empty.
//!
//! The checks keep a running record across cycles: every id ever attempted, and the
//! *outstanding* ids, confirmed and not yet consumed-and-acked. A cycle fails if
//! - an outstanding id is not in the drain (confirmed, then lost),
//! - the drain has an id that was never attempted, or a body not exactly as sent,
//! - the drain delivers one id twice from one queue, or from both queues when it was never
//!   rejected (a rejected one may be in both: dead-lettering is at least once, the dead letter
//!   being stored before the original is dropped),
//! - `crash-dead` holds an id that was never rejected,
//! - a durable queue itself is gone after the restart,
//! - a client saw an error that a kill does not explain (a channel or connection closed by the
//!   broker).
//!
//! An id whose ack may have been written (by the consumer, or by an earlier drain) is allowed to
//! come back, since the broker may have died before processing the ack; these are counted as
//! "reappeared". Attempted ids that were never confirmed may or may not come back.
//!
//! The seed fixes each cycle's plan (producers, window, body size, consumer, kill delay), not
//! the thread timing, so `--seed` replays the same schedule, not the same interleaving.
//! Defaults: 5 cycles (CI), a seed from the clock, a free port, and
//! `target/release/examples/server`, built first; a soak is `--cycles 200`.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

/// How long a server may take from spawn to accepting connections.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the load script may take to report `ready`, and to finish after the kill.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);
/// How many lines of the server's log a failure shows.
const LOG_TAIL: usize = 40;

struct Options {
    cycles: u32,
    seed: u64,
    port: Option<u16>,
    server: Option<PathBuf>,
}

fn parse(args: &[String]) -> Result<Options, String> {
    const USAGE: &str =
        "usage: cargo xtask crash [--cycles N] [--seed S] [--port P] [--server PATH]";
    let mut o = Options {
        cycles: 5,
        seed: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1),
        port: None,
        server: None,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| format!("{flag} needs a value; {USAGE}"))
        };
        match flag.as_str() {
            "--cycles" => o.cycles = value()?.parse().map_err(|e| format!("--cycles: {e}"))?,
            "--seed" => o.seed = value()?.parse().map_err(|e| format!("--seed: {e}"))?,
            "--port" => o.port = Some(value()?.parse().map_err(|e| format!("--port: {e}"))?),
            "--server" => o.server = Some(PathBuf::from(value()?)),
            _ => return Err(format!("unknown argument {flag:?}; {USAGE}")),
        }
    }
    Ok(o)
}

/// SplitMix64: enough randomness for a test plan, and no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[(self.next() % items.len() as u64) as usize]
    }
}

/// What one cycle does, drawn from the seed.
struct Plan {
    producers: u64,
    window: u64,
    pad: u64,
    consumer: bool,
    kill_after: Duration,
    client_seed: u64,
}

impl Plan {
    fn draw(rng: &mut Rng) -> Plan {
        Plan {
            producers: rng.range(1, 3),
            window: rng.pick(&[1, 8, 64, 256]),
            pad: rng.pick(&[0, 0, 100, 4000]),
            consumer: rng.range(0, 1) == 1,
            kill_after: Duration::from_millis(rng.range(200, 1500)),
            client_seed: rng.next() >> 11,
        }
    }
}

/// A child process killed (SIGKILL) and reaped when dropped.
struct Guard(Option<Child>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The server under test: one binary, address and data directory, (re)started many times, its
/// stdout and stderr appended to one log.
struct Server {
    binary: PathBuf,
    addr: String,
    data: PathBuf,
    log: PathBuf,
    process: Guard,
    spawns: u32,
}

impl Server {
    /// Starts the server and waits until its port accepts; returns how long that took.
    fn start(&mut self) -> Result<Duration, String> {
        self.spawns += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| format!("{}: {e}", self.log.display()))?;
        writeln!(log, "===== xtask crash: start #{} =====", self.spawns)
            .map_err(|e| format!("{}: {e}", self.log.display()))?;
        let err = log
            .try_clone()
            .map_err(|e| format!("{}: {e}", self.log.display()))?;
        let start = Instant::now();
        let child = Command::new(&self.binary)
            .args(["--listen", &self.addr, "--data-dir"])
            .arg(&self.data)
            .args(["--log-level", "info"])
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("{}: {e}", self.binary.display()))?;
        self.process = Guard(Some(child));
        loop {
            if TcpStream::connect(&self.addr).is_ok() {
                return Ok(start.elapsed());
            }
            if let Some(c) = self.process.0.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    self.process.0 = None;
                    return Err(format!("the server exited ({status}) before listening"));
                }
            }
            if start.elapsed() > STARTUP_TIMEOUT {
                return Err(format!(
                    "the server did not accept connections on {} within {} s",
                    self.addr,
                    STARTUP_TIMEOUT.as_secs()
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// `kill -9`, and reaps the process. Fails if it had already exited by itself.
    fn kill(&mut self) -> Result<(), String> {
        let Some(mut c) = self.process.0.take() else {
            return Err("the server is not running".into());
        };
        if let Ok(Some(status)) = c.try_wait() {
            return Err(format!("the server exited by itself ({status})"));
        }
        c.kill().map_err(|e| format!("kill -9 {}: {e}", c.id()))?;
        c.wait().map_err(|e| format!("wait: {e}"))?;
        Ok(())
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(LOG_TAIL)..].join("\n")
    }
}

/// Waits for a child with a timeout; kills it if it overstays.
fn wait_timeout(child: &mut Child, what: &str, timeout: Duration) -> Result<(), String> {
    let start = Instant::now();
    loop {
        match child.try_wait().map_err(|e| format!("wait {what}: {e}"))? {
            Some(s) if s.success() => return Ok(()),
            Some(s) => return Err(format!("{what} failed ({s})")),
            None if start.elapsed() > timeout => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{what} did not finish within {} s",
                    timeout.as_secs()
                ));
            }
            None => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

fn read_json(path: &Path) -> Result<Value, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

fn strings(v: &Value, key: &str) -> Result<Vec<String>, String> {
    v.get(key)
        .and_then(Value::as_array)
        .ok_or_else(|| format!("client output lacks {key:?}"))?
        .iter()
        .map(|s| {
            s.as_str()
                .map(str::to_owned)
                .ok_or_else(|| format!("{key}: not a string: {s}"))
        })
        .collect()
}

/// What the clients saw in a cycle's load phase.
struct Load {
    attempted: Vec<String>,
    confirmed: Vec<String>,
    nacked: usize,
    acked: Vec<String>,
    rejected: Vec<String>,
    delivered: u64,
    unexpected: Vec<String>,
}

/// Runs the load script against the running server, kills the server `kill_after` once the
/// script is publishing, and collects what the script recorded.
fn load(
    python: &Path,
    script: &Path,
    server: &mut Server,
    port: u16,
    cycle: u32,
    plan: &Plan,
    out: &Path,
) -> Result<Load, String> {
    let _ = std::fs::remove_file(out);
    let mut child = Command::new(python)
        .arg(script)
        .args(["load", &port.to_string()])
        .arg(out)
        .args(["--cycle", &cycle.to_string()])
        .args(["--producers", &plan.producers.to_string()])
        .args(["--window", &plan.window.to_string()])
        .args(["--pad", &plan.pad.to_string()])
        .args(["--consumer", if plan.consumer { "1" } else { "0" }])
        .args(["--seed", &plan.client_seed.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{}: {e}", python.display()))?;
    let stdout = child
        .stdout
        .take()
        .ok_or("no stdout from the load script")?;
    let mut guard = Guard(Some(child));
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    match rx.recv_timeout(CLIENT_TIMEOUT) {
        Ok(line) if line == "ready" => {}
        Ok(line) => return Err(format!("the load script printed {line:?}, not \"ready\"")),
        Err(mpsc::RecvTimeoutError::Timeout) => {
            return Err("the load script was not ready within 60 s".into());
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            return Err("the load script exited before it was ready".into());
        }
    }
    std::thread::sleep(plan.kill_after);
    server.kill()?;
    let Some(child) = guard.0.as_mut() else {
        return Err("load script handle lost".into());
    };
    wait_timeout(child, "the load script", CLIENT_TIMEOUT)?;
    guard.0 = None;
    let v = read_json(out)?;
    Ok(Load {
        attempted: strings(&v, "attempted")?,
        confirmed: strings(&v, "confirmed")?,
        nacked: strings(&v, "nacked")?.len(),
        acked: strings(&v, "acked")?,
        rejected: strings(&v, "rejected")?,
        delivered: v.get("delivered").and_then(Value::as_u64).unwrap_or(0),
        unexpected: strings(&v, "unexpected")?,
    })
}

/// What a drain after the restart found.
struct Drain {
    queue_existed: bool,
    /// Id, redelivered, and whether it came from the dead-letter queue.
    messages: Vec<(String, bool, bool)>,
    corrupt: Vec<String>,
    left: u64,
}

fn drain(python: &Path, script: &Path, port: u16, out: &Path) -> Result<Drain, String> {
    let _ = std::fs::remove_file(out);
    let mut child = Command::new(python)
        .arg(script)
        .args(["drain", &port.to_string()])
        .arg(out)
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| format!("{}: {e}", python.display()))?;
    wait_timeout(&mut child, "the drain script", CLIENT_TIMEOUT)?;
    let v = read_json(out)?;
    let messages = v
        .get("messages")
        .and_then(Value::as_array)
        .ok_or("drain output lacks \"messages\"")?
        .iter()
        .map(|m| {
            match (
                m.get(0).and_then(Value::as_str),
                m.get(1),
                m.get(2).and_then(Value::as_str),
            ) {
                (Some(id), Some(r), Some(q)) => Ok((
                    id.to_owned(),
                    r.as_bool().unwrap_or(false),
                    q == "crash-dead",
                )),
                _ => Err(format!("drain output: bad message {m}")),
            }
        })
        .collect::<Result<_, String>>()?;
    Ok(Drain {
        queue_existed: v
            .get("queue_existed")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        messages,
        corrupt: strings(&v, "corrupt")?,
        left: v.get("left").and_then(Value::as_u64).unwrap_or(0),
    })
}

/// At most `n` items of a list, for a message.
fn sample<'a>(items: impl IntoIterator<Item = &'a String>, n: usize) -> String {
    let mut v: Vec<&str> = items.into_iter().map(String::as_str).collect();
    v.sort_unstable();
    let more = v.len().saturating_sub(n);
    v.truncate(n);
    let mut s = v.join(", ");
    if more > 0 {
        s.push_str(&format!(", … ({more} more)"));
    }
    s
}

pub(crate) fn run(root: &Path, args: &[String]) -> Result<(), String> {
    let o = parse(args)?;
    let binary = match &o.server {
        Some(path) => path.clone(),
        None => {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            crate::run(
                root,
                &cargo,
                &["build", "--release", "--example", "server", "--locked"],
                &[],
            )?;
            root.join("target/release/examples/server")
        }
    };
    let python = crate::interop::pika_python(root)?;
    let script = root.join("xtask/scripts/crash_pika.py");
    let work = root.join("target/crash");
    let data = work.join("data");
    let _ = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(&data).map_err(|e| format!("{}: {e}", data.display()))?;
    let log = work.join("server.log");
    File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
    let port = match o.port {
        Some(p) => p,
        None => crate::interop::free_port()?,
    };
    let mut server = Server {
        binary,
        addr: format!("127.0.0.1:{port}"),
        data,
        log,
        process: Guard(None),
        spawns: 0,
    };
    eprintln!(
        "crash: seed {} ({} cycles, server {} on {}, data {}, log {})",
        o.seed,
        o.cycles,
        server.binary.display(),
        server.addr,
        server.data.display(),
        server.log.display()
    );
    let replay = match &o.server {
        Some(path) => format!(
            "cargo xtask crash --seed {} --cycles {} --server {}",
            o.seed,
            o.cycles,
            path.display()
        ),
        None => format!("cargo xtask crash --seed {} --cycles {}", o.seed, o.cycles),
    };
    eprintln!("crash: replay this schedule with `{replay}`");

    let result = cycles(&o, &python, &script, &work, &mut server, port);
    if let Err(e) = &result {
        eprintln!(
            "---- last {LOG_TAIL} lines of {} ----\n{}\n----",
            server.log.display(),
            server.log_tail()
        );
        eprintln!("crash: FAILED: {e}\ncrash: reproduce with `{replay}`");
        return Err("crash test failed".into());
    }
    result
}

fn cycles(
    o: &Options,
    python: &Path,
    script: &Path,
    work: &Path,
    server: &mut Server,
    port: u16,
) -> Result<(), String> {
    let mut rng = Rng(o.seed);
    let load_out = work.join("load.json");
    let drain_out = work.join("drain.json");
    // Every id ever attempted; ids confirmed and not yet consumed-and-acked; ids whose ack may
    // have been written.
    let mut attempted: HashSet<String> = HashSet::new();
    let mut outstanding: HashSet<String> = HashSet::new();
    let mut acked: HashSet<String> = HashSet::new();
    // Ids whose rejection (a dead-lettering) may have been written.
    let mut rejected: HashSet<String> = HashSet::new();
    let mut total_dead = 0usize;
    let mut restarts: Vec<Duration> = Vec::new();
    let (mut total_confirmed, mut total_attempted, mut total_recovered) = (0usize, 0usize, 0usize);
    let (mut total_redelivered, mut total_reappeared) = (0usize, 0usize);

    let first = server.start()?;
    eprintln!("crash: first start {} ms", first.as_millis());
    for cycle in 1..=o.cycles {
        let plan = Plan::draw(&mut rng);
        let l = load(python, script, server, port, cycle, &plan, &load_out)?;
        let restart = server.start()?;
        restarts.push(restart);
        let d = drain(python, script, port, &drain_out)?;

        // Book-keeping from the load phase.
        attempted.extend(l.attempted.iter().cloned());
        for id in &l.confirmed {
            if !attempted.contains(id) {
                return Err(format!("cycle {cycle}: {id} confirmed but never attempted"));
            }
            outstanding.insert(id.clone());
        }
        for id in &l.acked {
            outstanding.remove(id);
            acked.insert(id.clone());
        }
        rejected.extend(l.rejected.iter().cloned());

        // Checks of the drain.
        let mut failures = Vec::new();
        if !l.unexpected.is_empty() {
            failures.push(format!(
                "clients saw errors a kill does not explain: {}",
                l.unexpected.join("; ")
            ));
        }
        if !d.queue_existed {
            failures
                .push("a durable queue (crash-test, crash-dead) was gone after the restart".into());
        }
        let mut seen: HashSet<&str> = HashSet::new();
        let mut seen_in: HashSet<(&str, bool)> = HashSet::new();
        let mut duplicates = Vec::new();
        let mut unknown = Vec::new();
        let mut never_rejected = Vec::new();
        let (mut redelivered, mut reappeared, mut dead) = (0usize, 0usize, 0usize);
        for (id, redelivered_flag, from_dead) in &d.messages {
            if *from_dead {
                dead += 1;
                if !rejected.contains(id) {
                    never_rejected.push(id.clone());
                }
            }
            // Twice from one queue is a duplicate; once from each, only if it was rejected
            // (the dead letter is stored before the original goes: at least once).
            if !seen_in.insert((id.as_str(), *from_dead))
                || (!seen.insert(id) && !rejected.contains(id))
            {
                duplicates.push(id.clone());
            }
            if !attempted.contains(id) {
                unknown.push(id.clone());
            }
            if *redelivered_flag {
                redelivered += 1;
            }
            if acked.contains(id) {
                reappeared += 1;
            }
        }
        let missing: Vec<&String> = outstanding
            .iter()
            .filter(|id| !seen.contains(id.as_str()))
            .collect();
        if !missing.is_empty() {
            failures.push(format!(
                "{} confirmed messages missing after the restart: {}",
                missing.len(),
                sample(missing.iter().copied(), 10)
            ));
        }
        if !unknown.is_empty() {
            failures.push(format!(
                "{} messages never published: {}",
                unknown.len(),
                sample(&unknown, 10)
            ));
        }
        if !duplicates.is_empty() {
            failures.push(format!(
                "{} messages delivered twice in one drain: {}",
                duplicates.len(),
                sample(&duplicates, 10)
            ));
        }
        if !never_rejected.is_empty() {
            failures.push(format!(
                "{} messages in crash-dead that were never rejected: {}",
                never_rejected.len(),
                sample(&never_rejected, 10)
            ));
        }
        if !d.corrupt.is_empty() {
            failures.push(format!(
                "{} bodies not as sent: {}",
                d.corrupt.len(),
                sample(&d.corrupt, 5)
            ));
        }
        if d.left > 0 {
            failures.push(format!(
                "the queue still counted {} messages it would not deliver",
                d.left
            ));
        }

        eprintln!(
            "cycle {cycle}/{}: producers {} window {} pad {} consumer {} kill after {} ms | \
             attempted {} confirmed {} nacked {} delivered {} acked {} rejected {} | \
             recovered {} (dead-lettered {}) redelivered {} reappeared {} missing {} | \
             restart {} ms | {}",
            o.cycles,
            plan.producers,
            plan.window,
            plan.pad,
            if plan.consumer { "yes" } else { "no" },
            plan.kill_after.as_millis(),
            l.attempted.len(),
            l.confirmed.len(),
            l.nacked,
            l.delivered,
            l.acked.len(),
            l.rejected.len(),
            d.messages.len(),
            dead,
            redelivered,
            reappeared,
            missing.len(),
            restart.as_millis(),
            if failures.is_empty() { "ok" } else { "FAIL" }
        );
        if !failures.is_empty() {
            return Err(format!("cycle {cycle}: {}", failures.join("; ")));
        }

        // The drain acked everything it got: the queue starts the next cycle empty.
        for (id, _, _) in &d.messages {
            outstanding.remove(id);
            acked.insert(id.clone());
        }
        total_dead += dead;
        total_attempted += l.attempted.len();
        total_confirmed += l.confirmed.len();
        total_recovered += d.messages.len();
        total_redelivered += redelivered;
        total_reappeared += reappeared;
    }

    restarts.sort_unstable();
    let ms = |d: Option<&Duration>| d.map_or(0, Duration::as_millis);
    eprintln!(
        "crash: {} cycles passed (seed {}): attempted {total_attempted} confirmed \
         {total_confirmed} recovered {total_recovered} (dead-lettered {total_dead}) redelivered \
         {total_redelivered} reappeared {total_reappeared}; restart ms min {} median {} max {}",
        o.cycles,
        o.seed,
        ms(restarts.first()),
        ms(restarts.get(restarts.len() / 2)),
        ms(restarts.last()),
    );
    Ok(())
}
