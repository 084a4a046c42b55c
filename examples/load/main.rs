//! `load`: a PerfTest-style load generator for any AMQP 0-9-1 broker (RabbitMQ, Warren, …).
//!
//! ```sh
//! cargo build --release -p warren-examples --example load
//! # 1 producer -> 1 queue -> 1 consumer, flat out, 16-octet bodies, for 30 s:
//! target/release/examples/load -z 30
//! # confirms (window 1000), persistent messages, 2 producers, 4 consumers:
//! target/release/examples/load -x 2 -y 4 -c 1000 -f persistent -z 30
//! # fanout to 10 queues; topic with 1,000 bindings per queue, half the messages routed:
//! target/release/examples/load -t fanout --queues 10 -z 30
//! target/release/examples/load -t topic --bindings 1000 --topic-match 0.5 -z 30
//! # a fixed rate of 10,000 msg/s per producer; stop after 100,000 messages each:
//! target/release/examples/load -r 10000 -C 100000
//! # a backlog: publish 1,000,000 persistent messages with no consumer and leave them queued,
//! # then drain them with one consumer (the run ends when it has received all of them):
//! target/release/examples/load -f persistent -c 1000 -y 0 -C 1000000 --keep
//! target/release/examples/load -f persistent -x 0 -D 1000000 --keep
//! # dead-lettering: a source queue whose messages expire at once into `dlq` (declared and
//! # consumed by the first command, started first), and one whose consumer rejects them:
//! target/release/examples/load -x 0 -u dlq -z 30
//! target/release/examples/load -y 0 -u src --queue-arg x-message-ttl=0 \
//!     --queue-arg x-dead-letter-exchange= --queue-arg x-dead-letter-routing-key=dlq -z 25
//! target/release/examples/load -u src2 --reject --queue-arg x-dead-letter-exchange= \
//!     --queue-arg x-dead-letter-routing-key=dlq -z 25
//! # hold 1,000 idle connections for 30 s and report the broker's memory per connection:
//! target/release/examples/load --idle-connections 1000 -z 30 --broker-pid "$(pidof beam.smp)"
//! # the summary as one JSON object on stdout (per-second lines go to stderr):
//! target/release/examples/load -z 10 --json > result.json
//! ```
//!
//! Every second it prints the elapsed time, the publish, confirm and delivery rates, and the
//! latency percentiles (p50, p75, p95, p99, max, in µs) of the messages received in that
//! second; at the end, totals, average rates and whole-run percentiles. Latency is measured
//! end to end in this one process: a producer writes the time (nanoseconds since a
//! process-wide clock origin), a tag for the run, its id and a sequence number into the first
//! 16 octets of each body (so bodies are at least 16 octets), and a consumer reads it on
//! delivery. Messages from another run (left in a queue with `--keep`) are counted but have
//! no latency.
//!
//! The exit status is 0 for a clean run, 1 if the broker closed a connection or channel
//! (the reply code and text are printed), a connection failed or the set-up failed, and 2
//! for bad arguments.
//!
//! # How it is built to stay out of the way
//!
//! The client side is not a general AMQP library but a lean pipelined writer and reader on
//! `warren-amqp-codec`'s frame encoders and decoder (module `client`): one connection with one
//! channel per producer or consumer, each driven by a single task with no internal queues.
//! Producers encode a batch of messages (about 64 KiB) into one buffer and write it with one
//! syscall; the method and header frames are encoded once per routing key at start and copied
//! per message. Consumers decode every complete frame of a read before waking anyone, take
//! one clock reading per read, and write the batch's acks at once. Shared counters are
//! updated once per batch. The runtime has one thread unless `--threads` says otherwise.
//!
//! # Topology
//!
//! Queues are named `-u` (default `load-q`), or `load-q-0` .. with `--queues N`; they are
//! declared at start (durable when messages are persistent, `--auto-delete` on request) and
//! deleted at the end unless `--keep`. Producers and consumers are spread over the queues
//! (every queue gets at least one of each, if there are any). `-t direct` (the default)
//! publishes through the default exchange, or through `-e NAME` with each queue bound by its
//! name; `-t fanout` binds every queue to one exchange (`load-fanout`); `-t topic` gives each
//! queue `--bindings N` patterns (`load.q{q}.k{b}.#` and `*.q{q}.k{b}` alternately) on
//! `load-topic`, and `--topic-match F` is the fraction of messages whose key matches one.
//! Exchanges named `amq.*` are used as they are, never declared or deleted.
//! `--queue-arg KEY=VALUE` (repeatable) adds an argument to every queue's `queue.declare`:
//! a value that reads as a whole number is sent as a signed 64-bit integer (`l`), `true` and
//! `false` as booleans, anything else (the empty string included) as a long string.
//!
//! # Acknowledging
//!
//! Consumers acknowledge each message (`basic.ack`), or every `-A N` messages with
//! `multiple`, or not at all with `--autoack`. With `--reject` they refuse every message
//! instead, without requeueing it: `basic.reject` with `requeue=false` per message, or
//! `basic.nack` with `multiple` and `requeue=false` every `-A N`; on a queue with a
//! dead-letter exchange every message is then dead-lettered, otherwise dropped.
//!
//! # Defaults that differ from PerfTest
//!
//! `-q/--qos` (prefetch) defaults to 1000, not unlimited; bodies default to (and are at
//! least) 16 octets; queues are named, not server-named; `-z` 0, `-C` 0 and `-D` 0 (the
//! defaults) run until Ctrl-C.

mod client;
mod consumer;
mod idle;
mod producer;
mod rate;
mod stats;
mod topology;
mod uri;

use crate::client::{CH, Conn, ConnConfig};
use crate::producer::{Producer, ProducerConfig, STAMP_LEN};
use crate::stats::{Reporter, Stats};
use crate::topology::{ExchangeType, Topology, queue_names};
use clap::{Parser, ValueEnum};
use serde::Serialize;
use std::process::ExitCode;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinSet;
use warren_amqp_codec::{
    ExchangeDeclare, ExchangeDelete, FieldTable, FieldValue, Method, QueueBind, QueueDeclare,
    QueueDelete, ShortStr,
};

/// The process-wide clock origin that message stamps count from.
static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Nanoseconds since the clock origin.
pub(crate) fn now_ns() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// A tag for this run's message stamps, so that messages left by another run (whose clock
/// origin differs) are not taken for this run's: derived from the wall clock and process id,
/// which is unique enough for telling runs apart, and needs no random source.
pub(crate) fn run_tag() -> u16 {
    static TAG: OnceLock<u16> = OnceLock::new();
    *TAG.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let mixed = (nanos ^ u64::from(std::process::id()).rotate_left(32))
            .wrapping_mul(0x9e37_79b9_7f4a_7c15);
        (mixed >> 48) as u16
    })
}

/// The instant `ns` nanoseconds after the clock origin.
pub(crate) fn instant_at(ns: u64) -> Instant {
    *EPOCH.get_or_init(Instant::now) + Duration::from_nanos(ns)
}

/// Message flags, as PerfTest's `-f`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Flag {
    /// Delivery mode 2 (and durable queues and exchange).
    Persistent,
    /// The mandatory flag: unroutable messages come back as `basic.return`.
    Mandatory,
}

/// A load generator for AMQP 0-9-1 brokers, in the spirit of RabbitMQ's PerfTest.
#[derive(Debug, Parser)]
#[command(name = "load", version)]
struct Args {
    /// Broker URI: amqp://user:password@host:port/vhost (vhost percent-encoded: %2f is "/").
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    uri: String,
    /// Producers, one connection each.
    #[arg(short = 'x', long, default_value_t = 1)]
    producers: usize,
    /// Consumers, one connection each.
    #[arg(short = 'y', long, default_value_t = 1)]
    consumers: usize,
    /// Queue name (with --queues N: NAME-0 .. NAME-{N-1}).
    #[arg(short = 'u', long, default_value = "load-q")]
    queue: String,
    /// Number of queues.
    #[arg(long, default_value_t = 1)]
    queues: usize,
    /// Body size in octets (at least 16: the latency stamp).
    #[arg(short = 's', long, default_value_t = 16)]
    size: usize,
    /// Publisher confirms with this many messages outstanding at most (0: no confirms).
    #[arg(short = 'c', long, default_value_t = 0)]
    confirm: u64,
    /// Message flags (repeatable): persistent, mandatory.
    #[arg(short = 'f', long = "flag", value_enum)]
    flags: Vec<Flag>,
    /// Same as -f persistent.
    #[arg(long)]
    persistent: bool,
    /// Exchange name (default: the default exchange for direct, load-fanout, load-topic).
    #[arg(short = 'e', long)]
    exchange: Option<String>,
    /// Exchange type.
    #[arg(short = 't', long = "type", value_enum, default_value_t = ExchangeType::Direct)]
    kind: ExchangeType,
    /// Topic bindings per queue.
    #[arg(long, default_value_t = 1)]
    bindings: usize,
    /// Fraction of topic messages whose key matches a binding (0 to 1).
    #[arg(long, default_value_t = 1.0)]
    topic_match: f64,
    /// Messages per second per producer (0: as fast as possible).
    #[arg(short = 'r', long, default_value_t = 0.0)]
    rate: f64,
    /// Run time in seconds (0: until -C is reached or Ctrl-C). With --idle-connections,
    /// opening them counts.
    #[arg(short = 'z', long = "time", default_value_t = 0.0)]
    time: f64,
    /// Messages per producer (0: no limit); the run ends when all are sent, confirmed and
    /// consumed.
    #[arg(short = 'C', long, default_value_t = 0)]
    pmessages: u64,
    /// Messages per consumer (0: no limit): a consumer acknowledges what it has and stops
    /// once it received this many (a read that passes the count is taken whole); the run
    /// then ends when every consumer stopped (and, with -C, every producer is done).
    #[arg(short = 'D', long, default_value_t = 0)]
    cmessages: u64,
    /// Consumer prefetch count, basic.qos (0: unlimited).
    #[arg(short = 'q', long, default_value_t = 1000)]
    qos: u16,
    /// Consume without acknowledgements.
    #[arg(short = 'a', long)]
    autoack: bool,
    /// Refuse every message without requeueing it (basic.reject requeue=false; with -A N,
    /// basic.nack multiple requeue=false every N) instead of acknowledging it.
    #[arg(long, conflicts_with = "autoack")]
    reject: bool,
    /// A queue argument for every queue.declare (repeatable), e.g. x-message-ttl=0 or
    /// x-dead-letter-exchange= ; whole numbers are sent as 64-bit integers, true/false as
    /// booleans, anything else as a string.
    #[arg(long = "queue-arg", value_name = "KEY=VALUE")]
    queue_args: Vec<String>,
    /// Acknowledge with `multiple` every N messages (1: each message on its own).
    #[arg(short = 'A', long, default_value_t = 1)]
    multi_ack_every: u64,
    /// Print the summary as one JSON object on stdout (other output goes to stderr).
    #[arg(long)]
    json: bool,
    /// Only open N idle connections (one channel each) and hold them for -z seconds.
    #[arg(long, value_name = "N")]
    idle_connections: Option<usize>,
    /// With --idle-connections: the broker's process id, to report its memory per
    /// connection (Linux /proc).
    #[arg(long, value_name = "PID")]
    broker_pid: Option<u32>,
    /// Declare queues auto-delete.
    #[arg(long)]
    auto_delete: bool,
    /// Leave queues and exchange in place at the end.
    #[arg(long)]
    keep: bool,
    /// Runtime worker threads (1: a single-threaded runtime, the leanest).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Heartbeat interval to ask for, in seconds (0: none).
    #[arg(long, default_value_t = 0)]
    heartbeat: u16,
}

/// What the run does, stated in the summary.
#[derive(Debug, Clone, Serialize)]
struct Scenario {
    uri: String,
    producers: usize,
    consumers: usize,
    queues: usize,
    size: usize,
    confirm: u64,
    persistent: bool,
    mandatory: bool,
    exchange: String,
    exchange_type: ExchangeType,
    bindings_per_queue: usize,
    topic_match: f64,
    rate: f64,
    time_s: f64,
    pmessages: u64,
    cmessages: u64,
    qos: u16,
    autoack: bool,
    reject: bool,
    queue_args: Vec<String>,
    multi_ack_every: u64,
    threads: usize,
}

/// Validated arguments.
#[derive(Debug)]
struct Plan {
    args: Args,
    conn: ConnConfig,
    topology: Topology,
    /// Arguments of every queue.declare (`--queue-arg`).
    queue_args: FieldTable,
    persistent: bool,
    mandatory: bool,
}

impl Plan {
    fn new(mut args: Args) -> Result<Self, String> {
        let uri = uri::parse(&args.uri)?;
        if args.size < STAMP_LEN {
            eprintln!(
                "load: -s {} is below the {STAMP_LEN}-octet latency stamp; using {STAMP_LEN}",
                args.size
            );
            args.size = STAMP_LEN;
        }
        if args.queues == 0 {
            return Err("--queues must be at least 1".into());
        }
        if !(args.rate.is_finite() && args.rate >= 0.0) {
            return Err("-r must be a non-negative number".into());
        }
        if !(args.time.is_finite() && args.time >= 0.0) {
            return Err("-z must be a non-negative number".into());
        }
        if !(0.0..=1.0).contains(&args.topic_match) {
            return Err("--topic-match must be between 0 and 1".into());
        }
        if args.kind == ExchangeType::Topic && args.bindings == 0 {
            return Err("--bindings must be at least 1".into());
        }
        if args.threads == 0 {
            return Err("--threads must be at least 1".into());
        }
        if args.multi_ack_every == 0 {
            return Err("--multi-ack-every must be at least 1".into());
        }
        if args.queue.is_empty() || args.queue.len() > 200 {
            return Err("-u must be 1 to 200 octets".into());
        }
        let exchange = args
            .exchange
            .clone()
            .unwrap_or_else(|| args.kind.default_exchange().to_owned());
        if exchange.is_empty() && args.kind != ExchangeType::Direct {
            return Err(format!(
                "-t {} needs an exchange; the default exchange is direct",
                args.kind.as_str()
            ));
        }
        if exchange.len() > 255 {
            return Err("-e is longer than 255 octets".into());
        }
        let topology = Topology {
            exchange,
            kind: args.kind,
            queues: queue_names(&args.queue, args.queues),
            bindings_per_queue: args.bindings,
        };
        let queue_args = parse_queue_args(&args.queue_args)?;
        let conn = ConnConfig {
            uri,
            heartbeat: args.heartbeat,
            name: "load".into(),
            idle: false,
        };
        Ok(Self {
            persistent: args.persistent || args.flags.contains(&Flag::Persistent),
            mandatory: args.flags.contains(&Flag::Mandatory),
            args,
            conn,
            topology,
            queue_args,
        })
    }

    fn scenario(&self) -> Scenario {
        let a = &self.args;
        Scenario {
            uri: self.conn.uri.to_string(),
            producers: a.producers,
            consumers: a.consumers,
            queues: a.queues,
            size: a.size,
            confirm: a.confirm,
            persistent: self.persistent,
            mandatory: self.mandatory,
            exchange: self.topology.exchange.clone(),
            exchange_type: a.kind,
            bindings_per_queue: a.bindings,
            topic_match: a.topic_match,
            rate: a.rate,
            time_s: a.time,
            pmessages: a.pmessages,
            cmessages: a.cmessages,
            qos: a.qos,
            autoack: a.autoack,
            reject: a.reject,
            queue_args: a.queue_args.clone(),
            multi_ack_every: a.multi_ack_every,
            threads: a.threads,
        }
    }

    /// Progress output: stdout, or stderr when stdout is for JSON.
    fn say(&self, line: &str) {
        if self.args.json {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    }

    fn conn(&self, name: String) -> ConnConfig {
        ConnConfig {
            name,
            ..self.conn.clone()
        }
    }
}

/// `--queue-arg KEY=VALUE`s as a field table: whole numbers as `l`, `true`/`false` as `t`,
/// anything else as `S`.
fn parse_queue_args(args: &[String]) -> Result<FieldTable, String> {
    let mut table = FieldTable::default();
    for a in args {
        let Some((key, value)) = a.split_once('=') else {
            return Err(format!("--queue-arg {a:?} is not KEY=VALUE"));
        };
        if key.is_empty() || key.len() > 255 {
            return Err(format!(
                "--queue-arg {a:?}: the key must be 1 to 255 octets"
            ));
        }
        let value = if let Ok(n) = value.parse::<i64>() {
            FieldValue::I64(n)
        } else if let Ok(b) = value.parse::<bool>() {
            FieldValue::Bool(b)
        } else {
            FieldValue::from(value.to_owned())
        };
        table.insert(key.to_owned(), value);
    }
    Ok(table)
}

fn main() -> ExitCode {
    let _ = now_ns();
    let plan = match Plan::new(Args::parse()) {
        Ok(plan) => plan,
        Err(e) => {
            eprintln!("load: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = if plan.args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(plan.args.threads)
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("load: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let ok = if let Some(n) = plan.args.idle_connections {
        runtime.block_on(run_idle(&plan, n))
    } else {
        runtime.block_on(run(&plan))
    };
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Fires `stop` after `time_s` seconds (0: never) or on Ctrl-C.
fn spawn_stopper(time_s: f64, stop: Arc<watch::Sender<bool>>) {
    tokio::spawn(async move {
        let timer = async {
            if time_s > 0.0 {
                tokio::time::sleep(Duration::from_secs_f64(time_s)).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            () = timer => {}
            _ = tokio::signal::ctrl_c() => {}
            _ = stop.closed() => return,
        }
        stop.send_replace(true);
    });
}

async fn run_idle(plan: &Plan, n: usize) -> bool {
    let (stop_tx, stop_rx) = watch::channel(false);
    let stop_tx = Arc::new(stop_tx);
    if plan.args.time == 0.0 {
        plan.say("load: holding the connections until Ctrl-C");
    }
    spawn_stopper(plan.args.time, stop_tx.clone());
    // One descriptor per connection, plus a few: raise the soft limit toward the hard one
    // (a common soft limit is 1024).
    let want = n as u64 + 64;
    match rlimit::increase_nofile_limit(want) {
        Ok(got) if got < want => plan.say(&format!(
            "load: warning: only {got} open files allowed; some connections will fail"
        )),
        _ => {}
    }
    let cfg = ConnConfig {
        idle: true,
        ..plan.conn("load-idle".into())
    };
    plan.say(&format!(
        "load: opening {n} idle connections to {}",
        plan.conn.uri
    ));
    let stats = Arc::new(Stats::new());
    let summary = idle::run(n, cfg, plan.args.broker_pid, stats, stop_rx, |l| {
        plan.say(&l)
    })
    .await;
    drop(stop_tx);
    print_summary(plan, &summary.text(), &summary);
    summary.errors.is_empty()
}

fn print_summary(plan: &Plan, text: &str, json: &impl Serialize) {
    if plan.args.json {
        eprint!("{text}");
        match serde_json::to_string(json) {
            Ok(s) => println!("{s}"),
            Err(e) => eprintln!("load: cannot write JSON: {e}"),
        }
    } else {
        print!("{text}");
    }
}

/// A producer/consumer run.
async fn run(plan: &Plan) -> bool {
    let stats = Arc::new(Stats::new());
    let (stop_tx, stop_rx) = watch::channel(false);
    let stop_tx = Arc::new(stop_tx);
    let mut tasks = JoinSet::new();
    let a = &plan.args;
    plan.say(&describe(plan));
    // Ctrl-C from now on ends the run cleanly; -z counts from the producers' start.
    spawn_stopper(0.0, stop_tx.clone());

    let mut declared = false;
    let started = match start(plan, &stats, &stop_tx, &stop_rx, &mut tasks, &mut declared).await {
        Ok(producers) => producers,
        Err(e) => {
            stats.error(e);
            None
        }
    };
    let mut elapsed = Duration::ZERO;
    let mut reporter = Reporter::new(&stats);
    if let Some((start, producers)) = started {
        if a.time == 0.0 && a.pmessages == 0 && a.cmessages == 0 {
            plan.say("load: running until Ctrl-C");
        }
        elapsed = watch_run(plan, &stats, &mut reporter, start, producers, stop_rx).await;
    }
    stop_tx.send_replace(true);
    while tasks.join_next().await.is_some() {}
    if declared && !a.keep {
        if let Err(e) = cleanup(plan).await {
            stats.error(format!("cleanup: {e}"));
        }
    }
    let summary = reporter.summary(
        &stats,
        elapsed,
        serde_json::to_value(plan.scenario()).unwrap_or_default(),
    );
    print_summary(plan, &summary.text(), &summary);
    summary.errors.is_empty()
}

fn describe(plan: &Plan) -> String {
    let a = &plan.args;
    let t = &plan.topology;
    let mut s = format!(
        "load: {} producer(s) -> {} queue(s) via {} exchange {:?}{} -> {} consumer(s); \
         {}-octet bodies{}{}, ",
        a.producers,
        t.queues.len(),
        t.kind.as_str(),
        t.exchange,
        match t.kind {
            ExchangeType::Topic => format!(
                " ({} bindings per queue, {:.0}% of keys match)",
                a.bindings,
                a.topic_match * 100.0
            ),
            _ => String::new(),
        },
        a.consumers,
        a.size,
        if plan.persistent { ", persistent" } else { "" },
        if plan.mandatory { ", mandatory" } else { "" },
    );
    s.push_str(&match a.confirm {
        0 => "no confirms, ".to_owned(),
        w => format!("confirm window {w}, "),
    });
    s.push_str(&match a.rate {
        r if r > 0.0 => format!("{r} msg/s per producer, "),
        _ => "flat out, ".to_owned(),
    });
    s.push_str(&if a.autoack {
        "autoack".to_owned()
    } else {
        format!(
            "qos {}, {} every {}",
            a.qos,
            if a.reject { "reject" } else { "ack" },
            a.multi_ack_every
        )
    });
    if !a.queue_args.is_empty() {
        s.push_str(&format!("; queue arguments {}", a.queue_args.join(" ")));
    }
    s.push_str(&format!("; broker {}", plan.conn.uri));
    s
}

/// Declares the topology (setting `declared` once it may have declared anything), starts the consumers, waits until
/// they consume, then starts the producers. Returns when the producers started (with no
/// producers: when the consumers began to start, so that draining a backlog is timed whole)
/// and how many there are, or `None` if a consumer failed (it has reported why).
async fn start(
    plan: &Plan,
    stats: &Arc<Stats>,
    stop_tx: &Arc<watch::Sender<bool>>,
    stop_rx: &watch::Receiver<bool>,
    tasks: &mut JoinSet<()>,
    declared: &mut bool,
) -> Result<Option<(Instant, usize)>, String> {
    let a = &plan.args;
    let t = &plan.topology;
    declare(plan, declared)
        .await
        .map_err(|e| format!("set-up: {e}"))?;

    let consumers_start = Instant::now();
    let mut readies = Vec::new();
    for i in 0..a.consumers {
        let conn = Conn::open(&plan.conn(format!("load-consumer-{i}")))
            .await
            .map_err(|e| format!("consumer {i}: {e}"))?;
        let cfg = consumer::ConsumerConfig {
            id: i,
            queues: topology::assigned(i, a.consumers, t.queues.len())
                .into_iter()
                .map(|q| t.queues[q].clone())
                .collect(),
            qos: a.qos,
            autoack: a.autoack,
            reject: a.reject,
            ack_every: a.multi_ack_every,
            limit: a.cmessages,
        };
        let (ready_tx, ready_rx) = oneshot::channel();
        readies.push(ready_rx);
        let (stats, stop_tx, stop_rx) = (stats.clone(), stop_tx.clone(), stop_rx.clone());
        tasks.spawn(async move {
            if let Err(e) = consumer::run(cfg, conn, stats.clone(), ready_tx, stop_rx).await {
                stats.error(format!("consumer {i}: {e}"));
                stop_tx.send_replace(true);
            }
        });
    }
    for (i, ready) in readies.into_iter().enumerate() {
        match tokio::time::timeout(Duration::from_secs(30), ready).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Ok(None), // the consumer failed and said why
            Err(_) => return Err(format!("consumer {i}: no basic.consume-ok within 30 s")),
        }
    }

    let mut producers = Vec::new();
    for i in 0..a.producers {
        let conn = Conn::open(&plan.conn(format!("load-producer-{i}")))
            .await
            .map_err(|e| format!("producer {i}: {e}"))?;
        let (hits, misses, copies) = t.producer_keys(i, a.producers);
        let cfg = ProducerConfig {
            id: i as u32,
            size: a.size,
            confirm: a.confirm,
            persistent: plan.persistent,
            mandatory: plan.mandatory,
            rate: a.rate,
            limit: a.pmessages,
            exchange: t.exchange.clone(),
            hits,
            misses,
            copies,
            match_fraction: a.topic_match,
        };
        let p = Producer::new(cfg, conn, stats.clone())
            .await
            .map_err(|e| format!("producer {i}: {e}"))?;
        producers.push(p);
    }
    let n = producers.len();
    let start = if n == 0 {
        consumers_start
    } else {
        Instant::now()
    };
    for (i, p) in producers.into_iter().enumerate() {
        let (stats, stop_tx, stop_rx) = (stats.clone(), stop_tx.clone(), stop_rx.clone());
        tasks.spawn(async move {
            if let Err(e) = p.run(stop_rx).await {
                stats.error(format!("producer {i}: {e}"));
                stop_tx.send_replace(true);
            }
        });
    }
    Ok(Some((start, n)))
}

/// With `-C` and no `-D`: how long deliveries may stall, once everything is published, before
/// the run ends without them (a queue limit dropped messages, a binding is missing, ...). With
/// `-D` the run waits for the count (`-z` bounds it).
const DRAIN_IDLE: Duration = Duration::from_secs(5);

/// Prints a line a second until the run ends; returns its length.
async fn watch_run(
    plan: &Plan,
    stats: &Stats,
    reporter: &mut Reporter,
    start: Instant,
    producers: usize,
    mut stop: watch::Receiver<bool>,
) -> Duration {
    let a = &plan.args;
    let second = Duration::from_secs(1);
    let mut tick = tokio::time::interval_at((start + second).into(), second);
    let mut check = tokio::time::interval(Duration::from_millis(50));
    // With -C and no -D: the last time deliveries grew (see DRAIN_IDLE).
    let mut last_received = (0, Instant::now());
    let end = async {
        if a.time > 0.0 {
            tokio::time::sleep_until((start + Duration::from_secs_f64(a.time)).into()).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::pin!(end);
    loop {
        tokio::select! {
            () = &mut end => break,
            _ = tick.tick() => {
                let s = reporter.sample(stats, start.elapsed());
                plan.say(&s.line(a.confirm > 0));
            }
            _ = check.tick(), if a.pmessages > 0 || a.cmessages > 0 => {
                let received = stats.received.load(Relaxed);
                if received != last_received.0 {
                    last_received = (received, Instant::now());
                }
                let all_sent =
                    a.pmessages == 0 || stats.producers_done.load(Relaxed) >= producers as u64;
                let all_received = if a.cmessages > 0 {
                    stats.consumers_done.load(Relaxed) >= a.consumers as u64
                } else {
                    a.consumers == 0
                        || received >= stats.routed.load(Relaxed)
                        || last_received.1.elapsed() > DRAIN_IDLE
                };
                if all_sent && all_received {
                    break;
                }
            }
            _ = stop.changed() => break,
        }
    }
    start.elapsed()
}

/// Declares the exchange, queues and bindings on a connection of its own; sets `opened`
/// once the connection is open (from then on there may be something to clean up).
async fn declare(plan: &Plan, opened: &mut bool) -> client::Result<()> {
    let t = &plan.topology;
    let mut c = Conn::open(&plan.conn("load-setup".into())).await?;
    *opened = true;
    let result = async {
        if t.owns_exchange() {
            let declare = ExchangeDeclare {
                exchange: ShortStr::from(t.exchange.clone()),
                kind: ShortStr::from(t.kind.as_str()),
                durable: plan.persistent,
                ..Default::default()
            };
            c.rpc(CH, declare.into(), "exchange.declare-ok", |m| {
                matches!(m, Method::ExchangeDeclareOk(_))
            })
            .await?;
        }
        let queues: Vec<Method> = t
            .queues
            .iter()
            .map(|q| {
                QueueDeclare {
                    queue: ShortStr::from(q.clone()),
                    durable: plan.persistent,
                    auto_delete: plan.args.auto_delete,
                    arguments: plan.queue_args.clone(),
                    ..Default::default()
                }
                .into()
            })
            .collect();
        c.rpc_many(&queues, "queue.declare-ok", |m| {
            matches!(m, Method::QueueDeclareOk(_))
        })
        .await?;
        let binds: Vec<Method> = t
            .bindings()
            .into_iter()
            .map(|(q, key)| {
                QueueBind {
                    queue: ShortStr::from(t.queues[q].clone()),
                    exchange: ShortStr::from(t.exchange.clone()),
                    routing_key: ShortStr::from(key),
                    ..Default::default()
                }
                .into()
            })
            .collect();
        c.rpc_many(&binds, "queue.bind-ok", |m| {
            matches!(m, Method::QueueBindOk(_))
        })
        .await
    }
    .await;
    c.shutdown(result.as_ref().err(), client::CLOSE_TIMEOUT)
        .await;
    result
}

/// Deletes the queues and the exchange the run declared.
async fn cleanup(plan: &Plan) -> client::Result<()> {
    let t = &plan.topology;
    let mut c = Conn::open(&plan.conn("load-cleanup".into())).await?;
    let result = async {
        let deletes: Vec<Method> = t
            .queues
            .iter()
            .map(|q| {
                QueueDelete {
                    queue: ShortStr::from(q.clone()),
                    ..Default::default()
                }
                .into()
            })
            .collect();
        c.rpc_many(&deletes, "queue.delete-ok", |m| {
            matches!(m, Method::QueueDeleteOk(_))
        })
        .await?;
        if t.owns_exchange() {
            let delete = ExchangeDelete {
                exchange: ShortStr::from(t.exchange.clone()),
                ..Default::default()
            };
            c.rpc(CH, delete.into(), "exchange.delete-ok", |m| {
                matches!(m, Method::ExchangeDeleteOk(_))
            })
            .await?;
        }
        Ok(())
    }
    .await;
    c.shutdown(result.as_ref().err(), client::CLOSE_TIMEOUT)
        .await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(args: &[&str]) -> Result<Plan, String> {
        let args = Args::try_parse_from(std::iter::once("load").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        Plan::new(args)
    }

    #[test]
    fn defaults_and_flags() {
        let p = plan(&[]).unwrap();
        assert_eq!(p.conn.uri.vhost, "/");
        assert_eq!(p.topology.exchange, "");
        assert_eq!(p.topology.queues, ["load-q"]);
        assert_eq!(p.args.qos, 1000);
        assert!(!p.persistent);

        let p = plan(&[
            "-f",
            "persistent",
            "-f",
            "mandatory",
            "-t",
            "fanout",
            "--queues",
            "3",
        ])
        .unwrap();
        assert!(p.persistent && p.mandatory);
        assert_eq!(p.topology.exchange, "load-fanout");
        assert_eq!(p.topology.queues.len(), 3);

        // Bodies are at least the stamp.
        assert_eq!(plan(&["-s", "4"]).unwrap().args.size, STAMP_LEN);
    }

    #[test]
    fn bad_arguments() {
        assert!(plan(&["--uri", "http://x"]).is_err());
        assert!(plan(&["--queues", "0"]).is_err());
        assert!(plan(&["-r", "-1"]).is_err());
        assert!(plan(&["--topic-match", "1.5"]).is_err());
        assert!(plan(&["-t", "fanout", "-e", ""]).is_err());
        assert!(plan(&["-q", "70000"]).is_err());
        assert!(plan(&["-A", "0"]).is_err());
        assert!(plan(&["--queue-arg", "x-message-ttl"]).is_err());
        assert!(plan(&["--queue-arg", "=1"]).is_err());
        assert!(plan(&["--reject", "--autoack"]).is_err());
    }

    #[test]
    fn queue_arguments() {
        let p = plan(&[
            "--queue-arg",
            "x-message-ttl=0",
            "--queue-arg",
            "x-dead-letter-exchange=",
            "--queue-arg",
            "x-dead-letter-routing-key=dlq",
            "--queue-arg",
            "x-single-active-consumer=true",
            "--queue-arg",
            "x-overflow=drop-head",
        ])
        .unwrap();
        let t = &p.queue_args;
        assert_eq!(t.len(), 5);
        assert_eq!(t.get("x-message-ttl"), Some(&FieldValue::I64(0)));
        assert_eq!(t.get("x-dead-letter-exchange"), Some(&FieldValue::from("")));
        assert_eq!(
            t.get("x-dead-letter-routing-key"),
            Some(&FieldValue::from("dlq"))
        );
        assert_eq!(
            t.get("x-single-active-consumer"),
            Some(&FieldValue::Bool(true))
        );
        assert_eq!(t.get("x-overflow"), Some(&FieldValue::from("drop-head")));
        assert!(plan(&[]).unwrap().queue_args.is_empty());
    }

    #[test]
    fn clock() {
        let a = now_ns();
        let b = now_ns();
        assert!(b >= a);
        assert!(instant_at(b) >= instant_at(a));
    }
}
