//! The broker: configuration, the shared state, the accept loop and the embedding API.

use crate::auth::{PasswordHash, Permissions, User, Users};
use crate::connection;
use crate::durable::{Definitions, Durable, DurableError, record};
use crate::handle::{BrokerHandle, ConnectionEntry};
use crate::message::MemoryGauge;
use crate::paging::Spilled;
use crate::vhost::{QueueCell, Vhost};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use warren_amqp_codec::connection::{ServerConfig, server_properties};

/// Errors of starting or administering a broker.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// A permission pattern is not a valid regular expression.
    #[error("invalid permission pattern: {0}")]
    Pattern(#[from] regex::Error),
    /// A user or virtual host named in a call does not exist.
    #[error("no {kind} '{name}'")]
    NotFound {
        /// `user` or `vhost`.
        kind: &'static str,
        /// The name.
        name: String,
    },
    /// A password hash that is not RabbitMQ's base64 SHA-256 form.
    #[error("invalid password hash for user '{0}'")]
    PasswordHash(String),
    /// The data directory could not be opened or recovered, or a backup written.
    #[error(transparent)]
    Durable(#[from] DurableError),
    /// The broker keeps nothing on disk (no data directory).
    #[error("the broker has no data directory")]
    NoStorage,
    /// A definitions file that cannot be imported: the entry and what is wrong with it, e.g.
    /// `queues[3]: PRECONDITION_FAILED - invalid arg 'x-max-length' for queue 'q' ...`.
    #[error("definitions: {0}")]
    Definitions(String),
    /// A policy that cannot be set, with RabbitMQ's validation text, e.g. `-1 is not a valid
    /// message TTL`.
    #[error("validation failed: {0}")]
    Policy(String),
}

/// Global counters, readable through [`BrokerHandle::counters`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) published: AtomicU64,
    pub(crate) routed: AtomicU64,
    pub(crate) unroutable: AtomicU64,
    pub(crate) delivered: AtomicU64,
    pub(crate) acked: AtomicU64,
    pub(crate) confirmed: AtomicU64,
    pub(crate) returned: AtomicU64,
    pub(crate) connections_opened: AtomicU64,
    pub(crate) connections_refused: AtomicU64,
}

/// Settings of a broker.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) listen: Vec<SocketAddr>,
    pub(crate) server: ServerConfig,
    /// Memory (message octets) above which publishers are blocked; `None`: never.
    pub(crate) memory_high_watermark: Option<u64>,
    /// Connections accepted at once; more are refused (closed at once).
    pub(crate) max_connections: usize,
    pub(crate) default_vhost: String,
    /// Where durable definitions and persistent messages are kept (`None`: in memory only).
    pub(crate) data_dir: Option<std::path::PathBuf>,
    /// Or the storage they go through, given by an embedder (tests inject faults this way).
    pub(crate) storage: Option<Arc<dyn warren_store::Backend>>,
    /// Message memory past which queue backlogs page out to the store (with storage only).
    pub(crate) paging_budget: Option<u64>,
}

/// State every connection shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: Config,
    /// The protocol settings every connection shares.
    pub(crate) server: Arc<ServerConfig>,
    pub(crate) users: RwLock<Users>,
    pub(crate) vhosts: RwLock<HashMap<String, Arc<Vhost>>>,
    pub(crate) connections: Mutex<HashMap<u64, Arc<ConnectionEntry>>>,
    pub(crate) open_connections: AtomicUsize,
    next_id: AtomicU64,
    pub(crate) gauge: Arc<MemoryGauge>,
    pub(crate) counters: Counters,
    pub(crate) shutdown: watch::Sender<bool>,
    /// True while the memory alarm is raised.
    pub(crate) alarm: watch::Sender<bool>,
    /// Direct reply-to consumers by the key in their `reply_to` addresses.
    pub(crate) reply_to: Mutex<HashMap<Vec<u8>, connection::ReplyTarget>>,
    /// The durable state, with a data directory.
    pub(crate) durable: Option<Arc<Durable>>,
    /// Dead letters waiting to be routed.
    pub(crate) dead_letters: Arc<crate::deadletter::Inbox>,
    seed: u64,
}

impl Shared {
    pub(crate) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn vhost(&self, name: &str) -> Option<Arc<Vhost>> {
        self.vhosts
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    pub(crate) fn add_vhost(&self, name: &str) -> Arc<Vhost> {
        let mut vhosts = self.vhosts.write().unwrap_or_else(|e| e.into_inner());
        let seed = self.seed ^ crate::random_u64();
        vhosts
            .entry(name.to_string())
            .or_insert_with(|| {
                Arc::new(Vhost::new(
                    name,
                    seed,
                    self.durable.clone(),
                    self.dead_letters.clone(),
                ))
            })
            .clone()
    }

    /// Whether message memory is past the paging budget (backlogs page out).
    pub(crate) fn over_paging_budget(&self) -> bool {
        if self.durable.is_none() {
            return false;
        }
        let budget = self.config.paging_budget.unwrap_or_else(|| {
            self.config
                .memory_high_watermark
                .map_or(256 << 20, |w| w / 2)
        });
        // Messages page out past half the budget: the other half is for everything else a
        // server holds (connections, buffers, read-ahead, allocator overhead).
        self.gauge.used() > budget / 2
    }

    /// Records definition changes, if the broker keeps them; a failure is logged.
    pub(crate) fn persist(&self, changes: &[warren_store::Change]) {
        if let Some(d) = &self.durable {
            let _ = d.apply(changes);
        }
    }

    /// Raises or clears the memory alarm from the current gauge.
    pub(crate) fn check_memory(&self) -> bool {
        let Some(limit) = self.config.memory_high_watermark else {
            return false;
        };
        let over = self.gauge.used() > limit;
        self.alarm.send_if_modified(|a| {
            if *a != over {
                if over {
                    tracing::warn!(
                        used = self.gauge.used(),
                        limit,
                        "memory alarm raised: blocking publishers"
                    );
                } else {
                    tracing::info!(used = self.gauge.used(), limit, "memory alarm cleared");
                }
                *a = over;
                true
            } else {
                false
            }
        });
        over
    }
}

/// Builds a [`Broker`].
///
/// With no user configured, the broker has RabbitMQ's default: user `guest` (password
/// `guest`, allowed only from loopback addresses) with full permissions on the virtual host
/// `/`.
#[derive(Debug)]
pub struct BrokerBuilder {
    config: Config,
    users: Vec<(User, bool)>,
    vhosts: Vec<String>,
    permissions: Vec<(String, String, String, String, String)>,
    plain_passwords: Vec<(String, String)>,
    hashes: Vec<(String, String)>,
    definitions: Option<String>,
}

impl BrokerBuilder {
    fn new() -> Self {
        Self {
            config: Config {
                listen: Vec::new(),
                server: ServerConfig {
                    server_properties: server_properties(
                        "Warren",
                        env!("CARGO_PKG_VERSION"),
                        "warren",
                    ),
                    ..ServerConfig::default()
                },
                memory_high_watermark: None,
                max_connections: usize::MAX,
                default_vhost: "/".into(),
                data_dir: None,
                storage: None,
                paging_budget: None,
            },
            users: Vec::new(),
            vhosts: Vec::new(),
            permissions: Vec::new(),
            plain_passwords: Vec::new(),
            hashes: Vec::new(),
            definitions: None,
        }
    }

    /// Listens for AMQP connections on `addr` (port 0 picks a free port; see
    /// [`Broker::local_addrs`]). Without a listener, connections come only through
    /// [`Broker::serve_connection`].
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.config.listen.push(addr);
        self
    }

    /// Adds a user with a password (hashed at once; the plain text is not kept).
    pub fn user(mut self, name: &str, password: &str, tags: &[&str]) -> Self {
        self.plain_passwords
            .push((name.to_string(), password.to_string()));
        self.push_user(name, tags)
    }

    /// Adds a user with a RabbitMQ password hash (base64 of salt and SHA-256, as in exported
    /// definitions).
    pub fn user_with_hash(mut self, name: &str, password_hash: &str, tags: &[&str]) -> Self {
        self.hashes
            .push((name.to_string(), password_hash.to_string()));
        self.push_user(name, tags)
    }

    fn push_user(mut self, name: &str, tags: &[&str]) -> Self {
        self.users.push((
            User {
                name: name.to_string(),
                password_hash: None,
                tags: tags.iter().map(|t| t.to_string()).collect(),
            },
            false,
        ));
        self
    }

    /// Imports definitions in RabbitMQ's JSON format at start, after the data directory is
    /// recovered and before any listener accepts a connection, as RabbitMQ's
    /// `load_definitions` does (see [`BrokerHandle::import_definitions`]; its notes are
    /// logged as warnings). A malformed file fails [`BrokerBuilder::start`] with nothing
    /// changed.
    pub fn load_definitions(mut self, json: impl Into<String>) -> Self {
        self.definitions = Some(json.into());
        self
    }

    /// Restricts a user to loopback connections (RabbitMQ's `loopback_users`; `guest` is by
    /// default).
    pub fn loopback_only(mut self, name: &str) -> Self {
        if let Some(u) = self.users.iter_mut().find(|(u, _)| u.name == name) {
            u.1 = true;
        }
        self
    }

    /// Creates a virtual host.
    pub fn vhost(mut self, name: &str) -> Self {
        self.vhosts.push(name.to_string());
        self
    }

    /// Grants `user` the configure, write and read patterns on `vhost`.
    pub fn permissions(
        mut self,
        user: &str,
        vhost: &str,
        configure: &str,
        write: &str,
        read: &str,
    ) -> Self {
        self.permissions.push((
            user.into(),
            vhost.into(),
            configure.into(),
            write.into(),
            read.into(),
        ));
        self
    }

    /// Keeps durable definitions and persistent messages in `dir` (created if missing), and
    /// recovers them from it at start. Without it, nothing survives the broker.
    pub fn data_dir(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.config.data_dir = Some(dir.into());
        self
    }

    /// Keeps durable definitions and persistent messages in `backend` instead of a directory
    /// (see `warren_store::Backend`: any storage with positional I/O and `fdatasync`).
    pub fn storage(mut self, backend: Arc<dyn warren_store::Backend>) -> Self {
        self.config.storage = Some(backend);
        self
    }

    /// The memory a backlog may make the server use: past half of it in messages, queue
    /// backlogs page out to the store (the other half is headroom for everything else the
    /// server holds): each queue keeps a head in memory and the rest of its messages
    /// (transient ones too) live only on disk, read back ahead of its consumers. Only with a
    /// data directory (or storage). Default: half the memory high watermark, or 256 MiB
    /// without one.
    pub fn paging_budget(mut self, bytes: u64) -> Self {
        self.config.paging_budget = Some(bytes);
        self
    }

    /// Blocks publishers (`connection.blocked`) while messages hold more than `bytes`.
    pub fn memory_high_watermark(mut self, bytes: u64) -> Self {
        self.config.memory_high_watermark = Some(bytes);
        self
    }

    /// Connections served at once; further ones are closed as soon as they are accepted.
    pub fn max_connections(mut self, n: usize) -> Self {
        self.config.max_connections = n;
        self
    }

    /// The `frame_max` offered to clients.
    pub fn frame_max(mut self, n: u32) -> Self {
        self.config.server.frame_max = n;
        self
    }

    /// The `channel_max` offered to clients.
    pub fn channel_max(mut self, n: u16) -> Self {
        self.config.server.channel_max = n;
        self
    }

    /// The heartbeat interval offered to clients, in seconds (0: none).
    pub fn heartbeat(mut self, seconds: u16) -> Self {
        self.config.server.heartbeat = seconds;
        self
    }

    /// The largest message body accepted.
    pub fn max_message_size(mut self, bytes: u64) -> Self {
        self.config.server.max_message_size = bytes;
        self
    }

    /// Starts the broker: recovers the data directory (if any), creates users and virtual
    /// hosts and binds the listeners.
    ///
    /// With a data directory, what it holds comes first; the users, virtual hosts and
    /// permissions given here are added (or replace those of the same name) and kept. The
    /// default `guest` user and `/` virtual host are created only on the first start.
    pub async fn start(self) -> Result<Broker, Error> {
        let gauge = Arc::new(MemoryGauge::default());
        let backend: Option<Arc<dyn warren_store::Backend>> =
            match (&self.config.storage, &self.config.data_dir) {
                (Some(b), _) => Some(b.clone()),
                (None, Some(dir)) => Some(Arc::new(warren_store::FileBackend::new(dir).map_err(
                    |source| DurableError::Directory {
                        path: dir.display().to_string(),
                        source,
                    },
                )?)),
                (None, None) => None,
            };
        let (durable, stored, mut recovered) = match backend {
            Some(b) => {
                let (d, defs, messages) = Durable::open(b, &gauge)?;
                (Some(d), defs, messages)
            }
            None => (None, Definitions::default(), Default::default()),
        };
        let first_start = stored.is_empty();
        let mut users = Users::default();
        let mut vhosts = self.vhosts.clone();
        let mut permissions = self.permissions.clone();
        let mut defined = self.users.clone();
        if defined.is_empty() && first_start {
            defined.push((
                User {
                    name: "guest".into(),
                    password_hash: None,
                    tags: vec!["administrator".into()],
                },
                true,
            ));
            if !vhosts.iter().any(|v| v == "/") {
                vhosts.push("/".into());
            }
            permissions.push((
                "guest".into(),
                "/".into(),
                ".*".into(),
                ".*".into(),
                ".*".into(),
            ));
        }
        let mut plain = self.plain_passwords.clone();
        if self.users.is_empty() {
            plain.push(("guest".into(), "guest".into()));
        }
        let mut changes = Vec::new();
        for (user, loopback) in &stored.users {
            if *loopback {
                users.loopback_only.push(user.name.clone());
            }
            users.add(user.clone());
        }
        for (mut user, loopback) in defined {
            if let Some((_, p)) = plain.iter().find(|(n, _)| *n == user.name) {
                user.password_hash = Some(PasswordHash::new(p));
            } else if let Some((_, h)) = self.hashes.iter().find(|(n, _)| *n == user.name) {
                user.password_hash = Some(
                    PasswordHash::from_base64(h)
                        .ok_or_else(|| Error::PasswordHash(user.name.clone()))?,
                );
            }
            if loopback {
                users.loopback_only.push(user.name.clone());
            }
            changes.push(record::user(&user, loopback));
            users.add(user);
        }
        if vhosts.is_empty() && first_start {
            vhosts.push(self.config.default_vhost.clone());
        }
        for (u, v, c, w, r) in &stored.permissions {
            users.set_permissions(u, v, Permissions::new(c, w, r)?);
        }
        for (u, v, c, w, r) in &permissions {
            users.set_permissions(u, v, Permissions::new(c, w, r)?);
            changes.push(record::permissions(u, v, c, w, r));
        }
        changes.extend(vhosts.iter().map(|v| record::vhost(v)));
        let shared = Arc::new(Shared {
            server: Arc::new(self.config.server.clone()),
            config: self.config.clone(),
            users: RwLock::new(users),
            vhosts: RwLock::new(HashMap::new()),
            connections: Mutex::new(HashMap::new()),
            open_connections: AtomicUsize::new(0),
            next_id: AtomicU64::new(1),
            gauge,
            counters: Counters::default(),
            shutdown: watch::channel(false).0,
            alarm: watch::channel(false).0,
            reply_to: Mutex::new(HashMap::new()),
            durable: durable.clone(),
            dead_letters: Arc::default(),
            seed: crate::random_u64(),
        });
        shared.persist(&changes);
        for v in stored.vhosts.iter().chain(vhosts.iter()) {
            shared.add_vhost(v);
        }
        for (kind, p) in &stored.policies {
            match (shared.vhost(&p.vhost), p.check(&p.vhost, *kind)) {
                (Some(v), Ok(p)) => v.restore_policy(p),
                (None, _) => {}
                (_, Err(e)) => {
                    tracing::error!(vhost = %p.vhost, policy = %p.name, error = %e, "a stored policy is invalid: skipped")
                }
            }
        }
        if let Some(d) = &durable {
            restore_topology(&shared, d, &stored, &mut recovered);
        }
        // The built-in exchanges are not stored: the policies reach them here.
        for v in shared
            .vhosts
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
        {
            v.apply_policies();
        }
        if let Some(json) = &self.definitions {
            let handle = BrokerHandle {
                shared: shared.clone(),
            };
            match handle.import_definitions(json) {
                Ok(report) => {
                    for note in &report.notes {
                        tracing::warn!("definitions: {note}");
                    }
                    tracing::info!(
                        users = report.users,
                        vhosts = report.vhosts,
                        queues = report.queues,
                        exchanges = report.exchanges,
                        bindings = report.bindings,
                        "definitions imported"
                    );
                }
                Err(e) => {
                    if let Some(d) = &durable {
                        d.close();
                    }
                    return Err(e);
                }
            }
        }
        let mut listeners = Vec::new();
        let mut addrs = Vec::new();
        for addr in &self.config.listen {
            let l = TcpListener::bind(addr)
                .await
                .map_err(|source| Error::Listen {
                    addr: *addr,
                    source,
                })?;
            let local = l.local_addr().unwrap_or(*addr);
            tracing::info!(%local, "listening for AMQP 0-9-1 connections");
            addrs.push(local);
            listeners.push(l);
        }
        let mut tasks = Vec::new();
        for l in listeners {
            tasks.push(tokio::spawn(accept_loop(shared.clone(), l)));
        }
        if shared.config.memory_high_watermark.is_some() {
            tasks.push(tokio::spawn(memory_monitor(shared.clone())));
        }
        tasks.push(tokio::spawn(expiry_sweeper(shared.clone())));
        tasks.push(tokio::spawn(crate::deadletter::run(shared.clone())));
        Ok(Broker {
            handle: BrokerHandle {
                shared: shared.clone(),
            },
            addrs,
            tasks,
        })
    }
}

/// A running broker. Dropping it does not stop it; call [`Broker::shutdown`].
#[derive(Debug)]
pub struct Broker {
    handle: BrokerHandle,
    addrs: Vec<SocketAddr>,
    tasks: Vec<JoinHandle<()>>,
}

impl Broker {
    /// Starts configuring a broker.
    pub fn builder() -> BrokerBuilder {
        BrokerBuilder::new()
    }

    /// The addresses the listeners are bound to.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// A handle for listing and administering the broker.
    pub fn handle(&self) -> BrokerHandle {
        self.handle.clone()
    }

    /// Serves one AMQP connection over any byte stream (a TLS stream, an in-memory duplex).
    /// `peer` is the client's address if it has one (loopback-only users need it). Returns
    /// when the connection ends.
    pub async fn serve_connection<IO>(&self, io: IO, peer: Option<SocketAddr>)
    where
        IO: AsyncRead + AsyncWrite + Send + 'static,
    {
        self.handle.serve_connection(io, peer).await
    }

    /// Stops accepting connections, closes every open one with 320 CONNECTION_FORCED and waits
    /// (up to `grace`) for them to finish.
    pub async fn shutdown(self, grace: Duration) {
        for t in &self.tasks {
            t.abort();
        }
        let shared = &self.handle.shared;
        let _ = shared.shutdown.send(true);
        let deadline = tokio::time::Instant::now() + grace;
        while shared.open_connections.load(Ordering::Acquire) > 0
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if let Some(d) = &shared.durable {
            d.close();
        }
        tracing::info!("broker stopped");
    }
}

impl BrokerHandle {
    /// Serves one AMQP connection over any byte stream; see [`Broker::serve_connection`].
    pub async fn serve_connection<IO>(&self, io: IO, peer: Option<SocketAddr>)
    where
        IO: AsyncRead + AsyncWrite + Send + 'static,
    {
        connection::serve(self.shared.clone(), io, peer, false).await
    }
}

/// Declares the stored exchanges, queues (with their messages, marked redelivered) and
/// bindings.
fn restore_topology(
    shared: &Shared,
    durable: &Arc<Durable>,
    stored: &Definitions,
    recovered: &mut std::collections::BTreeMap<u64, crate::durable::RecoveredQueue>,
) {
    for (vhost, spec) in &stored.exchanges {
        let Some(v) = shared.vhost(vhost) else {
            continue;
        };
        let mut state = v.write();
        match state.topology.declare_exchange(spec.clone()) {
            Ok(d) => {
                crate::vhost::apply_exchange_policy(&mut state.topology, &v.policies(), d.id);
            }
            Err(e) => {
                tracing::error!(vhost, exchange = %spec.name, error = %e.exception(), "a stored exchange cannot be declared");
            }
        }
    }
    for q in &stored.queues {
        let Some(v) = shared.vhost(&q.vhost) else {
            continue;
        };
        let decl = warren_queue::declare::QueueDecl {
            durable: true,
            exclusive: false,
            auto_delete: q.auto_delete,
            arguments: q.arguments.clone(),
        };
        let cell = Arc::new(QueueCell::new(
            q.name.clone(),
            &v,
            decl,
            None,
            Some((durable.clone(), Some(q.id))),
        ));
        // Recovered messages start paged out; consumers read them back as they reach them.
        if let Some(messages) = recovered.remove(&q.id) {
            let mut s = cell.lock();
            for m in messages {
                let e = Spilled {
                    at: m.at,
                    len: m.len,
                    redelivered: true,
                    transient: false,
                };
                if !cell.spill_entry(&mut s, durable, e) {
                    break;
                }
            }
            // A queue whose rules need every message (a TTL, a length limit, priorities)
            // has them back in memory, their TTL counting from their first publication.
            if !cell.pages(&s) {
                cell.page_in_all(&mut s);
                cell.deliver(&mut s);
            }
        }
        v.write().insert_queue(cell);
    }
    for (vhost, spec) in &stored.bindings {
        let Some(v) = shared.vhost(vhost) else {
            continue;
        };
        if let Err(e) = v.write().topology.bind(spec) {
            tracing::error!(vhost, source = %spec.source, error = %e.exception(), "a stored binding cannot be restored");
        }
    }
}

async fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((socket, peer)) => {
                if shared.open_connections.load(Ordering::Acquire) >= shared.config.max_connections
                {
                    shared
                        .counters
                        .connections_refused
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%peer, limit = shared.config.max_connections, "connection refused: connection limit reached");
                    drop(socket);
                    continue;
                }
                let _ = socket.set_nodelay(true);
                shared.open_connections.fetch_add(1, Ordering::AcqRel);
                let shared = shared.clone();
                tokio::spawn(
                    async move { connection::serve(shared, socket, Some(peer), true).await },
                );
            }
            Err(e) => {
                // Out of file descriptors (or another transient failure): the pending
                // connection stays in the backlog; try again shortly rather than spin.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Expired messages go promptly even from queues nobody reads: every 50 ms, the queues whose
/// next expiry has come are advanced (one atomic read per queue otherwise); queues unused
/// for their `x-expires` are deleted (their messages are not dead-lettered, as in RabbitMQ).
async fn expiry_sweeper(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = crate::now_ms();
        let vhosts: Vec<Arc<Vhost>> = shared
            .vhosts
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        for v in vhosts {
            let due: Vec<Arc<QueueCell>> = v
                .read()
                .queues()
                .filter(|q| {
                    q.next_expiry.load(Ordering::Acquire) < now
                        || q.expires.load(Ordering::Acquire) != u64::MAX
                })
                .cloned()
                .collect();
            for q in due {
                let mut s = q.lock();
                if s.deleted {
                    continue;
                }
                if q.unused_for_too_long(&s, now) {
                    drop(s);
                    tracing::debug!(queue = %q.name, vhost = %v.name, "queue expired (x-expires)");
                    v.delete_queue(&q);
                    continue;
                }
                if q.next_expiry.load(Ordering::Acquire) < now {
                    q.deliver(&mut s);
                }
            }
        }
    }
}

async fn memory_monitor(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tick.tick().await;
        shared.check_memory();
    }
}
