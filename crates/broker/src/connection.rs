//! One client connection: the task that moves bytes between the socket and the codec's
//! state machine, and carries out each command against routing and the queues.
//!
//! The task owns the connection's channels outright (no locks): delivery tags, unsettled
//! deliveries, consumers, confirm and transaction state. What it shares is the virtual host
//! (read-locked to route, write-locked to declare), the queues it touches (each behind its own
//! lock), and its [`Outbox`], where queues run by other tasks leave deliveries for it.

use crate::auth::{self, Access, Permissions, ResourceKind};
use crate::broker::Shared;
use crate::durable::record;
use crate::handle::{ChannelStats, ConnectionEntry};
use crate::message::Message;
use crate::outbox::{ConsumerLink, Outbox, Outgoing};
use crate::staging::{Batch, Staging};
use crate::vhost::{QueueCell, Vhost};
use bytes::{Buf, Bytes};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use warren_amqp_codec::connection::{
    ChannelCloseReason, CloseReason, Content, Event, ServerConnection,
};
use warren_amqp_codec::{
    AmqpException, BasicAck, BasicCancel, BasicCancelOk, BasicConsumeOk, BasicDeliver,
    BasicGetEmpty, BasicGetOk, BasicNack, BasicQosOk, BasicRecoverOk, BasicReturn, ChannelFlowOk,
    ConfirmSelectOk, ConnectionUpdateSecretOk, ExchangeBindOk, ExchangeDeclareOk, ExchangeDeleteOk,
    ExchangeUnbindOk, Method, QueueBindOk, QueueDeclareOk, QueueDeleteOk, QueuePurgeOk,
    QueueUnbindOk, ReplyCode, ShortStr, TxCommitOk, TxRollbackOk, TxSelectOk,
};
use warren_queue::channel::{self, ChannelCredit, Mode, Pending, REPLY_TO, Unacked, check_qos};
use warren_queue::declare::{self, QueueDecl};
use warren_queue::{ConsumeError, ConsumerId, ConsumerSpec, Entry, Outcome, Settlement};
use warren_routing::{BindingSpec, DestinationName, ExchangeSpec, Routed, strip_bcc, strip_cr_lf};
use warren_store::MessageRef;

/// Octets of output past which the connection stops taking deliveries from its outbox.
const WRITE_HIGH: usize = 256 * 1024;
/// Largest single read.
const READ_MAX: usize = 64 * 1024;
/// How often a publisher paused by a congested queue checks that its consumers still make
/// progress.
pub(crate) const FLOW_RECHECK: std::time::Duration = std::time::Duration::from_millis(50);
/// How long a finished connection may take to flush its last octets.
const FLUSH_GRACE: std::time::Duration = std::time::Duration::from_secs(5);
/// Smallest read: what an idle connection keeps reserved. Reads grow with what arrives.
const READ_MIN: usize = 256;

/// Where a direct reply-to key leads.
#[derive(Debug, Clone)]
pub(crate) struct ReplyTarget {
    outbox: Arc<Outbox>,
    channel: u16,
    tag: ShortStr,
}

type Delivery = Pending<Arc<QueueCell>, Arc<Message>>;

/// A publish held by a transaction until commit.
#[derive(Debug)]
struct TxPublish {
    queues: Vec<Arc<QueueCell>>,
    message: Arc<Message>,
    /// Mandatory and unroutable: returned at commit.
    returned: bool,
}

/// Settlements held by a transaction until commit.
#[derive(Debug)]
struct TxSettle {
    deliveries: Vec<(u64, Delivery)>,
    outcome: Outcome,
}

#[derive(Debug)]
struct ChannelConsumer {
    queue: Arc<QueueCell>,
    id: ConsumerId,
}

/// One open channel.
#[derive(Debug)]
struct Channel {
    unacked: Unacked<Arc<QueueCell>, Arc<Message>>,
    credit: Arc<ChannelCredit>,
    /// Prefetch for consumers created from now on (`basic.qos`, global=false).
    prefetch: u16,
    consumers: HashMap<ShortStr, ChannelConsumer>,
    mode: Mode<TxPublish, TxSettle>,
    /// The queue this channel declared last, for commands that name the queue `""`.
    last_queue: Option<ShortStr>,
    /// The direct reply-to consumer: its tag and key.
    reply_consumer: Option<(ShortStr, Vec<u8>)>,
    /// Resources this channel was allowed to touch (RabbitMQ caches per channel too).
    allowed: Vec<(Access, ResourceKind, ShortStr)>,
    /// The last publish sequence number answered in confirm mode.
    confirmed_upto: u64,
    /// Confirms held until their messages are enqueued (a queue may refuse them) and, if
    /// they need it, until the store's sync covers them: (sequence number, message, whether
    /// it waits for a sync), in order.
    awaiting_sync: VecDeque<(u64, Arc<Message>, bool)>,
    /// Figures for listings.
    stats: Arc<ChannelStats>,
    /// Where the next resumption of the channel's consumers starts, so that a channel-wide
    /// prefetch shares its credit among the channel's queues.
    resume_cursor: std::cell::Cell<usize>,
}

impl Channel {
    fn new() -> Self {
        Self {
            unacked: Unacked::new(),
            credit: Arc::new(ChannelCredit::new()),
            prefetch: 0,
            consumers: HashMap::new(),
            mode: Mode::Plain,
            last_queue: None,
            reply_consumer: None,
            allowed: Vec::new(),
            confirmed_upto: 0,
            awaiting_sync: VecDeque::new(),
            stats: Arc::new(ChannelStats::default()),
            resume_cursor: std::cell::Cell::new(0),
        }
    }

    /// Publishes the channel's figures for listings.
    fn publish_stats(&self) {
        let s = &self.stats;
        let consumers = self.consumers.len() + usize::from(self.reply_consumer.is_some());
        s.consumers.store(consumers as u32, Ordering::Relaxed);
        s.unacked
            .store(self.unacked.len() as u32, Ordering::Relaxed);
        s.prefetch
            .store(u32::from(self.prefetch), Ordering::Relaxed);
        s.global_prefetch
            .store(self.credit.limit(), Ordering::Relaxed);
        s.confirm
            .store(matches!(self.mode, Mode::Confirm(_)), Ordering::Relaxed);
        s.transactional
            .store(matches!(self.mode, Mode::Tx(_)), Ordering::Relaxed);
    }
}

/// Everything of a connection but its channels, so that a handler can hold a channel and
/// the rest at once.
struct Ctx {
    shared: Arc<Shared>,
    id: u64,
    peer: Option<SocketAddr>,
    codec: ServerConnection,
    user: String,
    permissions: Option<Permissions>,
    vhost: Option<Arc<Vhost>>,
    entry: Option<Arc<ConnectionEntry>>,
    outbox: Arc<Outbox>,
    /// Queues declared exclusive by this connection.
    exclusive: Vec<Arc<QueueCell>>,
    routed: Routed,
    /// Publishes routed and waiting to be enqueued, each with whether the store holds it for
    /// that queue (written for it, persistent or paged out).
    batch: Batch,
    /// What of the batch goes to the store first.
    staging: Staging,
    /// A `tx.commit` whose messages await the store's sync: its channel, and the last message
    /// id it wrote. Nothing more is read until it is answered.
    commit_pending: Option<(u16, u64)>,
    /// The client published during the memory alarm: reading is paused until it clears.
    blocked: bool,
    /// A queue this connection publishes to is congested, or too many dead letters wait:
    /// reading is paused until that clears.
    throttled: Option<Throttle>,
    /// When to check next whether the congested queue's consumers still make progress.
    throttle_recheck: tokio::time::Instant,
    /// Still counted in `Shared::open_connections` (which the connection limit and shutdown
    /// watch): uncounted once the connection is over, even if the socket lingers until the
    /// client closes it.
    counted: bool,
    /// Counts not yet added to the broker's totals (added once per batch: the totals are
    /// shared by every connection's thread).
    tally: Tally,
    /// Scratch space for settlements.
    settle_items: Vec<(Delivery, Outcome)>,
}

/// Per-batch counts, added to the shared [`crate::broker::Counters`] at once.
#[derive(Debug, Default)]
struct Tally {
    published: u64,
    confirmed: u64,
    delivered: u64,
    routed: u64,
    unroutable: u64,
}

impl Tally {
    fn flush(&mut self, c: &crate::broker::Counters) {
        for (n, total) in [
            (&mut self.published, &c.published),
            (&mut self.confirmed, &c.confirmed),
            (&mut self.delivered, &c.delivered),
            (&mut self.routed, &c.routed),
            (&mut self.unroutable, &c.unroutable),
        ] {
            if *n > 0 {
                total.fetch_add(std::mem::take(n), Ordering::Relaxed);
            }
        }
    }
}

/// A connection: the context and its channels.
struct Conn {
    ctx: Ctx,
    /// Boxed: a map node holds eleven entries, most of them empty.
    channels: BTreeMap<u16, Box<Channel>>,
    settle_buf: Vec<Delivery>,
    incoming: VecDeque<Outgoing>,
}

fn now() -> Instant {
    Instant::now()
}

fn random_name(prefix: &str) -> ShortStr {
    use base64::Engine;
    let mut raw = [0u8; 16];
    let _ = getrandom::fill(&mut raw);
    let s = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
    ShortStr::from(format!("{prefix}{s}"))
}

/// Serves one connection until it ends.
///
/// `counted`: the caller already counted it in `Shared::open_connections` (the accept loop
/// does, before spawning, so that a burst of connections cannot overrun the limit).
pub(crate) async fn serve<IO>(shared: Arc<Shared>, io: IO, peer: Option<SocketAddr>, counted: bool)
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    if !counted {
        shared.open_connections.fetch_add(1, Ordering::AcqRel);
    }
    let (mut rd, mut wr) = tokio::io::split(io);
    let mut conn = Conn {
        ctx: Ctx {
            id: shared.next_id(),
            codec: ServerConnection::new(shared.server.clone(), now()),
            shared: shared.clone(),
            peer,
            user: String::new(),
            permissions: None,
            vhost: None,
            entry: None,
            outbox: Arc::new(Outbox::default()),
            exclusive: Vec::new(),
            routed: Routed::new(),
            batch: Vec::new(),
            staging: Staging::default(),
            commit_pending: None,
            blocked: false,
            throttled: None,
            throttle_recheck: tokio::time::Instant::now(),
            settle_items: Vec::new(),
            tally: Tally::default(),
            counted: true,
        },
        channels: BTreeMap::new(),
        settle_buf: Vec::new(),
        incoming: VecDeque::new(),
    };
    let outbox = conn.ctx.outbox.clone();
    let mut shutdown = shared.shutdown.subscribe();
    let mut alarm = shared.alarm.subscribe();
    let mut close_request: Option<watch::Receiver<Option<String>>> = None;
    let mut out = Bytes::new();
    let mut read_hint = READ_MIN;
    let mut finished_at: Option<tokio::time::Instant> = None;
    tracing::debug!(id = conn.ctx.id, ?peer, "connection accepted");
    loop {
        conn.process(out.len());
        if close_request.is_none() {
            close_request = conn.ctx.entry.as_ref().map(|e| e.close_request.subscribe());
        }
        if out.is_empty() {
            let w = conn.ctx.codec.write_buffer();
            if !w.is_empty() {
                out = w.split().freeze();
            }
        }
        if conn.ctx.codec.is_finished() {
            // Flush what is left, for a little while: a peer that stopped reading must not
            // hold the socket (and its buffers) for ever.
            let at = *finished_at.get_or_insert_with(tokio::time::Instant::now);
            if out.is_empty() || at.elapsed() > FLUSH_GRACE {
                break;
            }
        }
        match &conn.ctx.throttled {
            Some(Throttle::Queue(q)) => {
                let now = tokio::time::Instant::now();
                let recheck = now >= conn.ctx.throttle_recheck;
                if recheck {
                    conn.ctx.throttle_recheck = now + FLOW_RECHECK;
                }
                if q.lock().releases(recheck) {
                    conn.ctx.throttled = None;
                }
            }
            Some(Throttle::DeadLetters) => {
                let now = tokio::time::Instant::now();
                if now >= conn.ctx.throttle_recheck {
                    conn.ctx.throttle_recheck = now + FLOW_RECHECK;
                }
                if shared.dead_letters.len() <= crate::deadletter::Inbox::LOW {
                    conn.ctx.throttled = None;
                }
            }
            None => {}
        }
        let throttled = conn.ctx.throttled.is_some();
        conn.ctx.codec.pause_reading(throttled || conn.ctx.blocked);
        let want_read = conn.ctx.codec.wants_read()
            && !conn.ctx.blocked
            && !throttled
            && out.len() < shared.config.server.max_write_backlog;
        let mut deadline = conn
            .ctx
            .codec
            .poll_timeout()
            .map(tokio::time::Instant::from_std);
        if let Some(at) = finished_at {
            let d = at + FLUSH_GRACE;
            deadline = Some(deadline.map_or(d, |x| x.min(d)));
        }
        if throttled {
            // Woken when the queue drains; checked again now and then in case its consumers
            // stopped instead.
            let recheck = conn.ctx.throttle_recheck;
            deadline = Some(deadline.map_or(recheck, |d| d.min(recheck)));
        }
        let mut rbuf = std::mem::take(conn.ctx.codec.read_buffer());
        if want_read && rbuf.capacity() - rbuf.len() < read_hint / 2 {
            rbuf.reserve(read_hint);
        }
        let waiting_alarm = conn.ctx.blocked;
        let closing_requested = async {
            match close_request.as_mut() {
                Some(rx) => rx.changed().await.is_ok(),
                None => std::future::pending().await,
            }
        };
        enum Wake {
            Wrote(std::io::Result<usize>),
            Read(std::io::Result<usize>),
            Outbox,
            Timer,
            Shutdown,
            Alarm,
            CloseRequest(bool),
        }
        let wake = tokio::select! {
            r = wr.write(&out), if !out.is_empty() => Wake::Wrote(r),
            r = rd.read_buf(&mut rbuf), if want_read => Wake::Read(r),
            _ = outbox.notify.notified() => Wake::Outbox,
            _ = async { if let Some(d) = deadline { tokio::time::sleep_until(d).await } }, if deadline.is_some() => Wake::Timer,
            _ = shutdown.changed() => Wake::Shutdown,
            _ = alarm.changed(), if waiting_alarm => Wake::Alarm,
            ok = closing_requested => Wake::CloseRequest(ok),
        };
        *conn.ctx.codec.read_buffer() = rbuf;
        match wake {
            Wake::Wrote(Ok(n)) if n > 0 => out.advance(n),
            Wake::Wrote(_) => break,
            Wake::Read(Ok(0)) | Wake::Read(Err(_)) => break,
            Wake::Read(Ok(n)) => {
                read_hint = (n * 2).clamp(READ_MIN, READ_MAX);
                conn.ctx.codec.handle_read(now());
            }
            Wake::Outbox => {}
            Wake::Timer => conn.ctx.codec.handle_timeout(now()),
            Wake::Shutdown => {
                let e = AmqpException::connection(
                    ReplyCode::ConnectionForced,
                    "broker forced connection closure with reason 'shutdown'",
                );
                conn.ctx.codec.close(e, now());
            }
            Wake::Alarm => {
                if !*alarm.borrow_and_update() {
                    conn.ctx.blocked = false;
                    conn.ctx.codec.unblock();
                }
            }
            Wake::CloseRequest(ok) => {
                let reason = close_request
                    .as_ref()
                    .and_then(|rx| rx.borrow().clone())
                    .unwrap_or_default();
                if !ok {
                    close_request = None;
                }
                let e = AmqpException::connection(
                    ReplyCode::ConnectionForced,
                    if reason.is_empty() {
                        "Closed via management plugin".to_string()
                    } else {
                        reason
                    },
                );
                conn.ctx.codec.close(e, now());
            }
        }
    }
    conn.teardown();
    let _ = tokio::time::timeout(FLUSH_GRACE, wr.shutdown()).await;
}

impl Conn {
    /// Handles every event the codec has, then delivers and confirms.
    /// Handles every event the codec has, then delivers and confirms. `unsent`: octets
    /// already taken from the codec but not yet written. While the output backlog is over
    /// the limit, frames stay undecoded in the read buffer: a client that does not read cannot
    /// make the server buffer replies without bound.
    fn process(&mut self, unsent: usize) {
        let limit = self.ctx.shared.config.server.max_write_backlog;
        self.finish_commit();
        while unsent + self.ctx.codec.write_buffer().len() < limit
            && self.ctx.commit_pending.is_none()
        {
            let Some(event) = self.ctx.codec.poll_event() else {
                break;
            };
            match event {
                Event::Command {
                    channel,
                    method: Method::BasicPublish(p),
                    mut content,
                } => {
                    if let Some(ch) = self.channels.get_mut(&channel) {
                        // Worked on in place: the properties are large, and moving them per
                        // message shows in profiles.
                        let content = content.get_or_insert_with(|| Content {
                            header: Default::default(),
                            body: Bytes::new(),
                        });
                        if let Err(e) = self.ctx.publish(channel, ch, &p, content) {
                            self.ctx.codec.close_channel(channel, e.caused_by(60, 40));
                        }
                    }
                }
                Event::Command {
                    channel,
                    method,
                    content: _,
                } => {
                    self.flush_publishes();
                    let (class_id, method_id) = (method.class_id(), method.method_id());
                    if let Err(e) = self.command(channel, method) {
                        tracing::debug!(id = self.ctx.id, channel, error = %e, "channel exception");
                        self.ctx
                            .codec
                            .close_channel(channel, e.caused_by(class_id, method_id));
                    }
                    if let Some(ch) = self.channels.get(&channel) {
                        ch.publish_stats();
                    }
                }
                other => {
                    self.flush_publishes();
                    self.event(other);
                }
            }
        }
        self.flush_publishes();
        // RabbitMQ blocks a connection once it publishes during the memory alarm.
        if self.ctx.tally.published > 0 && self.ctx.shared.check_memory() && !self.ctx.blocked {
            self.ctx.blocked = true;
            self.ctx.codec.block("low on memory");
        }
        self.drain_outbox(false);
        self.send_confirms();
        self.ctx.tally.flush(&self.ctx.shared.counters);
        self.shrink_scratch();
    }

    /// Gives back scratch memory after a burst: an idle connection should cost a few KiB.
    fn shrink_scratch(&mut self) {
        if self.settle_buf.is_empty() && self.settle_buf.capacity() > 1024 {
            self.settle_buf = Vec::new();
        }
        if self.ctx.settle_items.is_empty() && self.ctx.settle_items.capacity() > 1024 {
            self.ctx.settle_items = Vec::new();
        }
        if self.incoming.is_empty() && self.incoming.capacity() > 1024 {
            self.incoming = VecDeque::new();
        }
        if self.ctx.batch.is_empty() && self.ctx.batch.capacity() > 4096 {
            self.ctx.batch = Vec::new();
        }
    }

    fn event(&mut self, event: Event) {
        let ctx = &mut self.ctx;
        match event {
            Event::Authenticate {
                username,
                password,
                mechanism,
                ..
            } => {
                let verdict = ctx
                    .shared
                    .users
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .authenticate(&username, &password, ctx.peer.map(|p| p.ip()));
                match verdict {
                    Ok(user) => {
                        ctx.user = user.name;
                        ctx.codec.accept_login(now());
                    }
                    Err(why) => {
                        tracing::warn!(id = ctx.id, peer = ?ctx.peer, mechanism = mechanism.name(), "login refused: {why}");
                        ctx.codec.refuse_login(now());
                    }
                }
            }
            Event::OpenVhost { vhost } => {
                let Some(v) = ctx.shared.vhost(&vhost) else {
                    let e = AmqpException::connection(
                        ReplyCode::NotAllowed,
                        format!("vhost {vhost} not found"),
                    );
                    tracing::warn!(id = ctx.id, user = %ctx.user, %vhost, "connection refused: {e}");
                    ctx.codec.close(e, now());
                    return;
                };
                let access = ctx
                    .shared
                    .users
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .vhost_access(&ctx.user, &vhost);
                match access {
                    Ok(p) => {
                        ctx.permissions = Some(p);
                        ctx.vhost = Some(v);
                        ctx.codec.accept_vhost(now());
                    }
                    Err(e) => {
                        tracing::warn!(id = ctx.id, user = %ctx.user, %vhost, "connection refused: {e}");
                        ctx.codec.close(e, now());
                    }
                }
            }
            Event::Opened { tuning } => {
                let client_name = ctx
                    .codec
                    .client_properties()
                    .get("connection_name")
                    .and_then(|v| v.as_str())
                    .map(str::to_string);
                let entry = Arc::new(ConnectionEntry {
                    id: ctx.id,
                    peer: ctx.peer,
                    user: ctx.user.clone(),
                    vhost: ctx
                        .vhost
                        .as_ref()
                        .map(|v| v.name.clone())
                        .unwrap_or_default(),
                    client_name,
                    connected_at: SystemTime::now(),
                    channels: Default::default(),
                    close_request: watch::channel(None).0,
                });
                ctx.shared
                    .connections
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(ctx.id, entry.clone());
                ctx.entry = Some(entry);
                ctx.shared
                    .counters
                    .connections_opened
                    .fetch_add(1, Ordering::Relaxed);
                tracing::info!(id = ctx.id, peer = ?ctx.peer, user = %ctx.user, vhost = %ctx.vhost.as_ref().map(|v| v.name.as_str()).unwrap_or(""), channel_max = tuning.channel_max, frame_max = tuning.frame_max, heartbeat = tuning.heartbeat, "connection opened");
            }
            Event::ChannelOpened { channel } => {
                let ch = Box::new(Channel::new());
                if let Some(e) = &ctx.entry {
                    e.channels
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(channel, ch.stats.clone());
                }
                self.channels.insert(channel, ch);
            }
            Event::UpdateSecret { .. } => {
                ctx.codec
                    .send_method(0, &ConnectionUpdateSecretOk::default().into());
            }
            Event::ChannelClosed { channel, reason } => {
                if let ChannelCloseReason::ByServer(e) = &reason {
                    tracing::info!(id = ctx.id, channel, "channel closed: {e}");
                }
                if let Some(ch) = self.channels.remove(&channel) {
                    self.close_channel(channel, ch);
                }
            }
            Event::Closed { reason } => {
                match &reason {
                    CloseReason::ByClient { .. } => {
                        tracing::info!(id = ctx.id, user = %ctx.user, "connection closed by client")
                    }
                    CloseReason::ByServer(e) => {
                        tracing::info!(id = ctx.id, user = %ctx.user, "connection closed: {e}")
                    }
                    other => {
                        tracing::info!(id = ctx.id, peer = ?ctx.peer, "connection ended: {other:?}")
                    }
                }
                self.release_all();
            }
            Event::Command { .. } => {}
        }
    }

    /// Releases everything the connection holds: channels (requeueing their unsettled
    /// deliveries), consumers, exclusive queues, the listing entry.
    fn release_all(&mut self) {
        let channels = std::mem::take(&mut self.channels);
        for (n, ch) in channels {
            self.close_channel(n, ch);
        }
        // Deliveries still on their way.
        self.drain_outbox(true);
        for q in std::mem::take(&mut self.ctx.exclusive) {
            if let Some(v) = &self.ctx.vhost {
                v.delete_queue(&q);
            }
        }
        if let Some(e) = self.ctx.entry.take() {
            self.ctx
                .shared
                .connections
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&e.id);
        }
        if std::mem::take(&mut self.ctx.counted) {
            self.ctx
                .shared
                .open_connections
                .fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// The socket is gone: release whatever the close handshake did not.
    fn teardown(&mut self) {
        self.flush_publishes();
        self.release_all();
        self.ctx.tally.flush(&self.ctx.shared.counters);
        tracing::debug!(id = self.ctx.id, "connection finished");
    }

    /// A channel is gone: its consumers are cancelled, its unsettled deliveries requeued.
    fn close_channel(&mut self, number: u16, mut ch: Box<Channel>) {
        if let Some(e) = &self.ctx.entry {
            e.channels
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&number);
        }
        for (_, c) in ch.consumers.drain() {
            self.ctx.cancel_in_queue(&c);
        }
        if let Some((_, key)) = ch.reply_consumer.take() {
            self.ctx
                .shared
                .reply_to
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&key);
        }
        let mut pending = Vec::new();
        ch.unacked.drain(&mut pending);
        if let Mode::Tx(tx) = &mut ch.mode {
            for s in tx.settlements.drain(..) {
                pending.extend(s.deliveries.into_iter().map(|(_, d)| d));
            }
        }
        let mut items: Vec<_> = pending.into_iter().map(|d| (d, Outcome::Requeue)).collect();
        settle_by_queue(&mut items);
        // Deliveries in the outbox for this channel go back too.
        self.requeue_outbox_for(number);
    }

    /// Gives back to their queues the deliveries on their way to a channel that closed (in
    /// the outbox or already taken from it); drops its other items.
    fn requeue_outbox_for(&mut self, number: u16) {
        let mut items = std::mem::take(&mut self.incoming);
        self.ctx.outbox.take(usize::MAX, &mut items);
        let mut done = 0;
        for item in items {
            match item {
                Outgoing::Deliver {
                    channel,
                    consumer,
                    no_ack,
                    queue,
                    entry,
                    ..
                } if channel == number => {
                    give_back(&queue, consumer, entry, no_ack);
                    done += 1;
                }
                Outgoing::Cancelled { channel, .. } | Outgoing::Reply { channel, .. }
                    if channel == number =>
                {
                    done += 1;
                }
                other => self.incoming.push_back(other),
            }
        }
        self.ctx.outbox.done(done);
    }

    /// Moves deliveries from the outbox to the socket's write buffer, as room allows
    /// (`force`: all of them, for a cancel or close that must come after them).
    fn drain_outbox(&mut self, force: bool) {
        loop {
            if !force && self.ctx.codec.write_buffer().len() > WRITE_HIGH {
                break;
            }
            if self.incoming.is_empty() {
                self.ctx.outbox.take(256, &mut self.incoming);
            }
            let Some(item) = self.incoming.pop_front() else {
                break;
            };
            self.emit(item);
            self.ctx.outbox.done(1);
        }
        if self.ctx.outbox.len() < Outbox::LIMIT / 2 && self.ctx.outbox.take_starved() {
            // Queues held deliveries back while the outbox was full: ask again.
            for ch in self.channels.values() {
                for c in ch.consumers.values() {
                    let mut s = c.queue.lock();
                    s.queue.resume(c.id);
                    c.queue.deliver(&mut s);
                }
            }
        }
    }

    fn emit(&mut self, item: Outgoing) {
        match item {
            Outgoing::Deliver {
                channel,
                consumer,
                tag,
                no_ack,
                queue,
                entry,
            } => {
                let live = self.ctx.codec.is_channel_open(channel)
                    && self.channels.get(&channel).is_some_and(|ch| {
                        ch.consumers
                            .get(&tag)
                            .is_some_and(|c| c.id == consumer && Arc::ptr_eq(&c.queue, &queue))
                    });
                let Some(ch) = self.channels.get_mut(&channel).filter(|_| live) else {
                    // The consumer went while this was on its way: back to the queue, and the
                    // channel credit it took back to the channel.
                    if let Some(ch) = self.channels.get(&channel) {
                        if !no_ack && ch.credit.release(1) {
                            resume_channel(ch);
                        }
                    }
                    give_back(&queue, consumer, entry, no_ack);
                    return;
                };
                let message = entry.message.clone();
                let redelivered = entry.redelivered();
                let delivery_tag = if no_ack {
                    queue.forget([&*message]);
                    ch.unacked.next_untracked()
                } else {
                    ch.unacked.track(Pending {
                        queue,
                        consumer: Some(consumer),
                        entry,
                    })
                };
                let deliver = BasicDeliver {
                    consumer_tag: tag,
                    delivery_tag,
                    redelivered,
                    exchange: message.exchange.clone(),
                    routing_key: message.routing_key.clone(),
                };
                self.ctx.codec.send_content_raw(
                    channel,
                    &deliver.into(),
                    &message.properties,
                    &message.body,
                );
                ch.stats
                    .unacked
                    .store(ch.unacked.len() as u32, Ordering::Relaxed);
                self.ctx.tally.delivered += 1;
            }
            Outgoing::Cancelled {
                channel,
                tag,
                consumer,
                queue,
            } => {
                if let Some(ch) = self.channels.get_mut(&channel) {
                    let ours = ch
                        .consumers
                        .get(&tag)
                        .is_some_and(|c| c.id == consumer && Arc::ptr_eq(&c.queue, &queue));
                    if ours && ch.consumers.remove(&tag).is_some() {
                        ch.publish_stats();
                        if self
                            .ctx
                            .codec
                            .client_has_capability("consumer_cancel_notify")
                        {
                            let cancel = BasicCancel {
                                consumer_tag: tag,
                                nowait: true,
                            };
                            self.ctx.codec.send_method(channel, &cancel.into());
                        }
                    }
                }
            }
            Outgoing::Reply {
                channel,
                tag,
                message,
            } => {
                if let Some(ch) = self.channels.get_mut(&channel) {
                    if ch.reply_consumer.as_ref().is_some_and(|(t, _)| *t == tag) {
                        let delivery_tag = ch.unacked.next_untracked();
                        let deliver = BasicDeliver {
                            consumer_tag: tag,
                            delivery_tag,
                            redelivered: false,
                            exchange: message.exchange.clone(),
                            routing_key: message.routing_key.clone(),
                        };
                        self.ctx.codec.send_content_raw(
                            channel,
                            &deliver.into(),
                            &message.properties,
                            &message.body,
                        );
                    }
                }
            }
        }
    }

    /// Sends the confirms that are due, folded into `multiple` replies.
    fn send_confirms(&mut self) {
        let durable = self.ctx.shared.durable.as_ref();
        let mut waiting = false;
        for (n, ch) in self.channels.iter_mut() {
            let Some(c) = ch.mode.confirms() else {
                continue;
            };
            if !ch.awaiting_sync.is_empty() {
                let synced = durable.map_or(0, |d| d.synced());
                let failed = durable.is_some_and(|d| d.failure().is_some());
                while let Some((seq, m, needs_sync)) = ch.awaiting_sync.front() {
                    let id = m.stored_id();
                    if m.refused() {
                        // A queue refused it, or the store could not take it.
                        c.settle(*seq, false);
                    } else if !needs_sync || (id != 0 && id <= synced) {
                        c.settle(*seq, true);
                    } else if failed {
                        // Never confirmed: the store could not make it durable.
                        c.settle(*seq, false);
                    } else {
                        waiting = true;
                        break;
                    }
                    ch.awaiting_sync.pop_front();
                }
            }
            while let Some(reply) = c.poll() {
                let method: Method = if reply.ack {
                    BasicAck {
                        delivery_tag: reply.tag,
                        multiple: reply.multiple,
                    }
                    .into()
                } else {
                    BasicNack {
                        delivery_tag: reply.tag,
                        multiple: reply.multiple,
                        requeue: false,
                    }
                    .into()
                };
                self.ctx.codec.send_method(*n, &method);
                if reply.ack {
                    self.ctx.tally.confirmed += reply.tag - ch.confirmed_upto;
                }
                ch.confirmed_upto = reply.tag;
            }
        }
        if let (true, Some(d)) = (waiting, durable) {
            d.wait_sync(&self.ctx.outbox);
        }
    }

    /// Answers a `tx.commit` once the store's sync covers its messages (541 if it cannot).
    fn finish_commit(&mut self) {
        let Some((number, upto)) = self.ctx.commit_pending else {
            return;
        };
        let Some(d) = self.ctx.shared.durable.clone() else {
            self.ctx.commit_pending = None;
            return;
        };
        if d.synced() >= upto {
            self.ctx.commit_pending = None;
            self.ctx
                .codec
                .send_method(number, &TxCommitOk::default().into());
        } else if let Some(why) = d.failure() {
            self.ctx.commit_pending = None;
            let e = AmqpException::channel(
                ReplyCode::InternalError,
                format!("the message store failed: {why}"),
            );
            self.ctx.codec.close_channel(number, e.caused_by(90, 20));
        } else {
            d.wait_sync(&self.ctx.outbox);
        }
    }

    /// Enqueues the routed publishes: one lock per queue per batch.
    fn flush_publishes(&mut self) {
        self.ctx.write_to_store();
        if self.ctx.batch.is_empty() {
            return;
        }
        let mut batch = std::mem::take(&mut self.ctx.batch);
        let over_budget = self.ctx.shared.over_paging_budget();
        if let Some(t) = enqueue(&mut batch, &self.ctx.outbox, over_budget) {
            self.ctx.throttled = Some(t);
            self.ctx.throttle_recheck = tokio::time::Instant::now() + FLOW_RECHECK;
        }
        self.ctx.batch = batch;
    }

    fn command(&mut self, number: u16, method: Method) -> Result<(), AmqpException> {
        let Some(ch) = self.channels.get_mut(&number) else {
            return Ok(());
        };
        let ctx = &mut self.ctx;
        match method {
            Method::ChannelFlow(f) => {
                channel::check_flow(f.active)?;
                ctx.codec
                    .send_method(number, &ChannelFlowOk { active: true }.into());
            }
            Method::ChannelFlowOk(_) => {}
            // A 0-8 relic that some clients still send; RabbitMQ answers with ticket 1.
            Method::AccessRequest(_) => {
                ctx.codec.send_method(
                    number,
                    &warren_amqp_codec::AccessRequestOk { ticket: 1 }.into(),
                );
            }
            Method::ExchangeDeclare(m) => {
                let vhost = ctx.vhost()?;
                if m.passive {
                    vhost
                        .read()
                        .topology
                        .check_exchange(&m.exchange)
                        .map_err(|e| e.exception())?;
                } else {
                    if !m.exchange.is_empty() {
                        ctx.check(ch, Access::Configure, ResourceKind::Exchange, &m.exchange)?;
                        let ae = m
                            .arguments
                            .get(warren_routing::ALTERNATE_EXCHANGE)
                            .and_then(warren_amqp_codec::erlang::value_octets)
                            .and_then(|a| {
                                ShortStr::from_bytes(bytes::Bytes::copy_from_slice(a)).ok()
                            });
                        if let Some(ae) = ae {
                            ctx.check(ch, Access::Read, ResourceKind::Exchange, &m.exchange)?;
                            ctx.check(ch, Access::Write, ResourceKind::Exchange, &ae)?;
                        }
                    }
                    let spec = ExchangeSpec {
                        name: m.exchange.clone(),
                        kind: m.kind.clone(),
                        durable: m.durable,
                        auto_delete: m.auto_delete,
                        internal: m.internal,
                        arguments: m.arguments.clone(),
                    };
                    vhost.declare_exchange(spec)?;
                }
                ctx.reply(number, !m.nowait, ExchangeDeclareOk::default());
            }
            Method::ExchangeDelete(m) => {
                let vhost = ctx.vhost()?;
                if !m.exchange.is_empty() {
                    ctx.check(ch, Access::Configure, ResourceKind::Exchange, &m.exchange)?;
                }
                let mut state = vhost.write();
                let removal = state
                    .topology
                    .delete_exchange(&m.exchange, m.if_unused)
                    .map_err(|e| e.exception())?;
                if let Some(d) = &vhost.durable {
                    vhost.persist(&d.deleted(&vhost.name, &removal.exchanges, None))?;
                }
                drop(state);
                ctx.reply(number, !m.nowait, ExchangeDeleteOk::default());
            }
            Method::ExchangeBind(m) => {
                let spec = BindingSpec::exchange(m.source, m.destination, m.routing_key)
                    .with_arguments(m.arguments);
                ctx.bind(ch, &spec, true)?;
                ctx.reply(number, !m.nowait, ExchangeBindOk::default());
            }
            Method::ExchangeUnbind(m) => {
                let spec = BindingSpec::exchange(m.source, m.destination, m.routing_key)
                    .with_arguments(m.arguments);
                ctx.bind(ch, &spec, false)?;
                ctx.reply(number, !m.nowait, ExchangeUnbindOk::default());
            }
            Method::QueueDeclare(m) => {
                let reply = ctx.declare_queue(ch, &m)?;
                ctx.reply(number, !m.nowait, reply);
            }
            Method::QueueBind(m) => {
                let queue = ctx.queue_name(ch, &m.queue)?;
                let key = declare::routing_key_shortcut(&m.queue, &m.routing_key, &queue);
                let spec = BindingSpec::queue(m.exchange, queue, key).with_arguments(m.arguments);
                ctx.bind(ch, &spec, true)?;
                ctx.reply(number, !m.nowait, QueueBindOk::default());
            }
            Method::QueueUnbind(m) => {
                let queue = ctx.queue_name(ch, &m.queue)?;
                let key = declare::routing_key_shortcut(&m.queue, &m.routing_key, &queue);
                let spec = BindingSpec::queue(m.exchange, queue, key).with_arguments(m.arguments);
                ctx.bind(ch, &spec, false)?;
                ctx.reply(number, true, QueueUnbindOk::default());
            }
            Method::QueuePurge(m) => {
                let name = ctx.queue_name(ch, &m.queue)?;
                ctx.check(ch, Access::Read, ResourceKind::Queue, &name)?;
                let cell = ctx.find_queue(&name)?;
                ctx.check_owner(&cell)?;
                let n = cell.purge(&mut cell.lock());
                let ok = QueuePurgeOk {
                    message_count: count32(n),
                };
                ctx.reply(number, !m.nowait, ok);
            }
            Method::QueueDelete(m) => {
                let name = ctx.queue_name(ch, &m.queue)?;
                ctx.check(ch, Access::Configure, ResourceKind::Queue, &name)?;
                let vhost = ctx.vhost()?;
                let cell = vhost.read().queue_named(&name).cloned();
                let n = match cell {
                    None => 0,
                    Some(cell) => {
                        ctx.check_owner(&cell)?;
                        {
                            let s = cell.lock();
                            if m.if_unused && s.queue.consumer_count() > 0 {
                                return Err(declare::in_use(&name, &vhost.name));
                            }
                            if m.if_empty && s.message_count() > 0 {
                                return Err(declare::not_empty(&name, &vhost.name));
                            }
                        }
                        ctx.exclusive.retain(|q| !Arc::ptr_eq(q, &cell));
                        vhost.delete_queue(&cell).unwrap_or(0)
                    }
                };
                let ok = QueueDeleteOk {
                    message_count: count32(n),
                };
                ctx.reply(number, !m.nowait, ok);
            }
            Method::BasicQos(m) => {
                check_qos(m.prefetch_size)?;
                if m.global {
                    if ch.credit.set_limit(u32::from(m.prefetch_count)) {
                        resume_channel(ch);
                    }
                } else {
                    // RabbitMQ: a per-consumer limit also lifts any channel-wide one.
                    ch.prefetch = m.prefetch_count;
                    if ch.credit.limit() != 0 && ch.credit.set_limit(0) {
                        resume_channel(ch);
                    }
                }
                ctx.codec.send_method(number, &BasicQosOk::default().into());
            }
            Method::BasicConsume(m) => {
                let (tag, queue) = ctx.consume(number, ch, &m)?;
                ctx.reply(number, !m.nowait, BasicConsumeOk { consumer_tag: tag });
                // Deliveries for the new consumer come after its consume-ok.
                if let Some(q) = queue {
                    let mut s = q.lock();
                    q.deliver(&mut s);
                }
            }
            Method::BasicCancel(m) => {
                // Deliveries already on their way go out before the cancel-ok.
                self.drain_outbox(true);
                let Some(ch) = self.channels.get_mut(&number) else {
                    return Ok(());
                };
                if let Some(c) = ch.consumers.remove(&m.consumer_tag) {
                    self.ctx.cancel_in_queue(&c);
                    self.drain_outbox(true);
                } else if ch
                    .reply_consumer
                    .as_ref()
                    .is_some_and(|(t, _)| *t == m.consumer_tag)
                {
                    if let Some((_, key)) = ch.reply_consumer.take() {
                        self.ctx
                            .shared
                            .reply_to
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .remove(&key);
                    }
                }
                let ok = BasicCancelOk {
                    consumer_tag: m.consumer_tag,
                };
                self.ctx.reply(number, !m.nowait, ok);
            }
            Method::BasicGet(m) => {
                let name = ctx.queue_name(ch, &m.queue)?;
                ctx.check(ch, Access::Read, ResourceKind::Queue, &name)?;
                let cell = ctx.find_queue(&name)?;
                ctx.check_owner(&cell)?;
                cell.touch();
                let got = {
                    let mut s = cell.lock();
                    s.queue.advance(crate::now_ms());
                    cell.refill(&mut s);
                    let got = s
                        .queue
                        .get(m.no_ack)
                        .map(|(e, left)| (e, left + s.spill.count()));
                    // Expired ones met on the way are gone.
                    cell.bury(&mut s);
                    if got.is_some() {
                        s.counters.delivered += 1;
                    }
                    got
                };
                match got {
                    None => ctx
                        .codec
                        .send_method(number, &BasicGetEmpty::default().into()),
                    Some((entry, left)) => {
                        let message = entry.message.clone();
                        let redelivered = entry.redelivered();
                        let delivery_tag = if m.no_ack {
                            cell.forget([&*message]);
                            ch.unacked.next_untracked()
                        } else {
                            ch.unacked.track(Pending {
                                queue: cell,
                                consumer: None,
                                entry,
                            })
                        };
                        let ok = BasicGetOk {
                            delivery_tag,
                            redelivered,
                            exchange: message.exchange.clone(),
                            routing_key: message.routing_key.clone(),
                            message_count: count32(left),
                        };
                        ctx.codec.send_content_raw(
                            number,
                            &ok.into(),
                            &message.properties,
                            &message.body,
                        );
                        ctx.shared
                            .counters
                            .delivered
                            .fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            Method::BasicAck(m) => ctx.settle(
                ch,
                m.delivery_tag,
                m.multiple,
                Outcome::Ack,
                &mut self.settle_buf,
            )?,
            Method::BasicReject(m) => ctx.settle(
                ch,
                m.delivery_tag,
                false,
                if m.requeue {
                    Outcome::Requeue
                } else {
                    Outcome::Discard
                },
                &mut self.settle_buf,
            )?,
            Method::BasicNack(m) => ctx.settle(
                ch,
                m.delivery_tag,
                m.multiple,
                if m.requeue {
                    Outcome::Requeue
                } else {
                    Outcome::Discard
                },
                &mut self.settle_buf,
            )?,
            Method::BasicRecover(m) => {
                ctx.recover(ch, m.requeue)?;
                ctx.codec
                    .send_method(number, &BasicRecoverOk::default().into());
            }
            Method::BasicRecoverAsync(m) => ctx.recover(ch, m.requeue)?,
            Method::ConfirmSelect(m) => {
                ch.mode.select_confirm()?;
                ctx.reply(number, !m.nowait, ConfirmSelectOk::default());
            }
            Method::TxSelect(_) => {
                ch.mode.select_tx()?;
                ctx.codec.send_method(number, &TxSelectOk::default().into());
            }
            Method::TxCommit(_) => {
                let tx = ch.mode.commit()?;
                let mut stored = Vec::new();
                for p in tx.publishes {
                    if p.returned {
                        ctx.send_return(number, &p.message);
                    }
                    if ctx.stage(&p.message, p.queues) {
                        stored.push(p.message);
                    }
                }
                ctx.write_to_store();
                let mut batch = std::mem::take(&mut ctx.batch);
                let over_budget = ctx.shared.over_paging_budget();
                if let Some(t) = enqueue(&mut batch, &ctx.outbox, over_budget) {
                    ctx.throttled = Some(t);
                    ctx.throttle_recheck = tokio::time::Instant::now() + FLOW_RECHECK;
                }
                ctx.batch = batch;
                for s in tx.settlements {
                    ctx.apply_settlements(ch, s.deliveries.into_iter().map(|(_, d)| d), s.outcome);
                }
                // RabbitMQ answers a commit once its persistent messages are on disk.
                let upto = stored.iter().map(|m| m.stored_id()).max().unwrap_or(0);
                if stored.is_empty() {
                    ctx.codec.send_method(number, &TxCommitOk::default().into());
                } else {
                    ctx.commit_pending = Some((number, upto.max(1)));
                    if stored.iter().any(|m| m.stored_id() == 0) {
                        // Not written (the store failed): answered with the error.
                        ctx.commit_pending = Some((number, u64::MAX));
                    }
                }
            }
            Method::TxRollback(_) => {
                let tx = ch.mode.rollback()?;
                for s in tx.settlements {
                    ch.unacked.restore(s.deliveries);
                }
                ctx.codec
                    .send_method(number, &TxRollbackOk::default().into());
            }
            _ => {
                return Err(AmqpException::connection(
                    ReplyCode::CommandInvalid,
                    "unimplemented method",
                ));
            }
        }
        Ok(())
    }
}

/// A count as the 32-bit field of a reply carries it (saturated).
fn count32(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Gives a delivery that never reached its consumer back to its queue.
fn give_back(
    queue: &Arc<QueueCell>,
    consumer: ConsumerId,
    entry: Entry<Arc<Message>>,
    no_ack: bool,
) {
    let mut s = queue.lock();
    if s.deleted {
        queue.forget([&*entry.message]);
    } else {
        s.queue.return_undelivered(consumer, entry, !no_ack);
        queue.deliver(&mut s);
    }
}

/// Puts a channel's consumers back in their queues' rotations (its channel-wide credit came
/// back) and delivers.
fn resume_channel(ch: &Channel) {
    let n = ch.consumers.len();
    if n == 0 {
        return;
    }
    let start = ch.resume_cursor.get() % n;
    ch.resume_cursor.set(start + 1);
    for c in ch.consumers.values().cycle().skip(start).take(n) {
        let mut s = c.queue.lock();
        s.queue.resume(c.id);
        c.queue.deliver(&mut s);
    }
}

/// Why a publishing connection pauses reading.
#[derive(Debug)]
pub(crate) enum Throttle {
    /// This queue is congested: its consumers drain it slower than it fills.
    Queue(Arc<QueueCell>),
    /// Too many dead letters wait to be routed, and the connection published to a queue that
    /// dead-letters.
    DeadLetters,
}

/// Enqueues `(queue, message)` pairs, grouped by queue (each queue keeps the batch's order),
/// then lets each queue deliver once. A queue left congested registers `publisher` to be woken
/// when it drains, and is returned so that the publisher pauses; so is the dead-letter inbox
/// when it is over its high mark and a queue of the batch dead-letters.
pub(crate) fn enqueue(
    batch: &mut Batch,
    publisher: &Arc<Outbox>,
    over_budget: bool,
) -> Option<Throttle> {
    batch.sort_by_key(|(q, _, _)| Arc::as_ptr(q) as usize);
    let mut congested = None;
    let mut i = 0;
    while let Some((cell, _, _)) = batch.get(i) {
        let cell = cell.clone();
        let mut s = cell.lock();
        // The clock first: new messages' expiry counts from now.
        s.queue.advance(crate::now_ms());
        let mut n = 0;
        while let Some((q, m, has_ref)) = batch.get(i) {
            if !Arc::ptr_eq(q, &cell) {
                break;
            }
            i += 1;
            if s.deleted {
                // Written for this queue (persistent, or to be paged out): dropped with it.
                if let (true, Some(at)) = (*has_ref, m.stored()) {
                    cell.drop_refs(&[(cell.ref_for(m.persistent), at)]);
                }
                continue;
            }
            n += 1;
            if cell.should_page(&s, over_budget, m) && cell.page_out(&mut s, m, *has_ref) {
                continue;
            }
            if *has_ref && !(m.persistent && cell.store.is_some()) {
                // Written to be paged out, but the queue stopped paging meanwhile: kept in
                // memory, so the store need not keep it for this queue.
                cell.drop_transient_ref(m);
            }
            let pushed = s.queue.publish(m.clone());
            cell.refused(&s, pushed);
        }
        s.counters.published += n;
        cell.deliver(&mut s);
        if s.congested() {
            s.add_flow_waiter(publisher);
            drop(s);
            congested = Some(Throttle::Queue(cell));
        } else if s.dead_letter.is_some()
            && congested.is_none()
            && cell.dead_letters().throttles(publisher)
        {
            congested = Some(Throttle::DeadLetters);
        }
    }
    batch.clear();
    congested
}

/// Hands settled deliveries back to their queues, one lock per queue; empties `items`.
fn settle_by_queue(items: &mut Vec<(Delivery, Outcome)>) {
    if items.len() > 1 {
        items.sort_by_key(|(d, _)| (Arc::as_ptr(&d.queue) as usize, d.entry.offset));
    }
    let mut iter = items.drain(..).peekable();
    while let Some((first, outcome)) = iter.next() {
        let cell = first.queue.clone();
        let mut s = cell.lock();
        let mut next = Some((first, outcome));
        let mut gone: Vec<(u64, MessageRef)> = Vec::new();
        while let Some((d, outcome)) = next.take() {
            // Gone for good from a durable queue: the store drops its reference.
            // (A discard goes to the queue's dead, which the queue's next delivery buries.)
            if s.deleted || outcome == Outcome::Ack {
                gone.extend(cell.stored_ref(&d.entry.message));
            }
            if !s.deleted {
                match outcome {
                    Outcome::Ack => s.counters.acked += 1,
                    Outcome::Requeue => s.counters.requeued += 1,
                    Outcome::Discard => {}
                }
                s.queue.settle(std::iter::once(Settlement {
                    consumer: d.consumer,
                    entry: d.entry,
                    outcome,
                }));
            }
            next = iter.next_if(|(d, _)| Arc::ptr_eq(&d.queue, &cell));
        }
        cell.drop_refs(&gone);
        if !s.deleted {
            cell.deliver(&mut s);
        }
    }
}

impl Ctx {
    /// Sends a method's reply, unless the client asked for none (`nowait`).
    fn reply(&mut self, number: u16, wanted: bool, reply: impl Into<Method>) {
        if wanted {
            self.codec.send_method(number, &reply.into());
        }
    }

    fn vhost(&self) -> Result<Arc<Vhost>, AmqpException> {
        self.vhost.clone().ok_or_else(|| {
            AmqpException::connection(ReplyCode::InternalError, "no virtual host open")
        })
    }

    fn vhost_name(&self) -> &str {
        self.vhost.as_ref().map(|v| v.name.as_str()).unwrap_or("")
    }

    /// A permission check, remembered per channel once it passes.
    fn check(
        &self,
        ch: &mut Channel,
        access: Access,
        kind: ResourceKind,
        name: &ShortStr,
    ) -> Result<(), AmqpException> {
        if ch.allowed.iter().any(|(a, k, n)| {
            // Lengths first: the default exchange's empty name would otherwise cost a
            // memcmp of nothing, which is slow on some CPUs (docs/benchmarks.md).
            *a == access && *k == kind && n.len() == name.len() && (name.is_empty() || n == name)
        }) {
            return Ok(());
        }
        let Some(p) = &self.permissions else {
            return Err(AmqpException::connection(
                ReplyCode::InternalError,
                "no permissions",
            ));
        };
        auth::check(
            p,
            &self.user,
            self.vhost_name(),
            access,
            kind,
            name.as_bytes(),
        )?;
        if ch.allowed.len() >= 64 {
            ch.allowed.remove(0);
        }
        ch.allowed.push((access, kind, name.detached()));
        Ok(())
    }

    /// The queue name a command means: `""` is the channel's last declared queue.
    /// CR and LF are removed from names, as RabbitMQ does.
    fn queue_name(&self, ch: &Channel, name: &ShortStr) -> Result<ShortStr, AmqpException> {
        if !name.is_empty() {
            return Ok(strip_cr_lf(name));
        }
        ch.last_queue.clone().ok_or_else(declare::no_previous_queue)
    }

    fn find_queue(&self, name: &ShortStr) -> Result<Arc<QueueCell>, AmqpException> {
        let vhost = self.vhost()?;
        let cell = vhost
            .read()
            .queue_named(name)
            .cloned()
            .ok_or_else(|| declare::not_found(name, &vhost.name))?;
        Ok(cell)
    }

    /// An exclusive queue may be used only by the connection that declared it (405).
    fn check_owner(&self, cell: &QueueCell) -> Result<(), AmqpException> {
        match cell.exclusive_owner {
            Some(owner) if owner != self.id => Err(declare::locked(&cell.name, &cell.vhost)),
            _ => Ok(()),
        }
    }

    fn declare_queue(
        &mut self,
        ch: &mut Channel,
        m: &warren_amqp_codec::QueueDeclare,
    ) -> Result<QueueDeclareOk, AmqpException> {
        let vhost = self.vhost()?;
        let requested = QueueDecl {
            durable: m.durable,
            exclusive: m.exclusive,
            auto_delete: m.auto_delete,
            arguments: m.arguments.clone(),
        };
        let name = if m.queue.is_empty() && !m.passive {
            random_name("amq.gen-")
        } else {
            strip_cr_lf(&m.queue)
        };
        let cell = if m.passive {
            let cell = self.find_queue(&name)?;
            self.check_owner(&cell)?;
            cell
        } else {
            if !m.queue.is_empty() {
                declare::check_name(&name)?;
            }
            self.check(ch, Access::Configure, ResourceKind::Queue, &name)?;
            let (cell, created) = vhost.declare_queue(&name, &requested, Some(self.id), || {
                if let Some(dlx) = declare::dead_letter_exchange(&m.arguments) {
                    self.check(ch, Access::Read, ResourceKind::Queue, &name)?;
                    self.check(ch, Access::Write, ResourceKind::Exchange, &dlx)?;
                }
                Ok(())
            })?;
            if created {
                if m.exclusive {
                    self.exclusive.push(cell.clone());
                }
                tracing::debug!(id = self.id, queue = %name, vhost = %vhost.name, "queue declared");
            }
            cell
        };
        let (messages, consumers) = {
            let s = cell.lock();
            (s.message_count(), s.queue.consumer_count())
        };
        ch.last_queue = Some(cell.name.clone());
        cell.touch();
        Ok(QueueDeclareOk {
            queue: cell.name.clone(),
            message_count: count32(messages),
            consumer_count: consumers,
        })
    }

    /// `queue.bind`/`unbind` and `exchange.bind`/`unbind`: write on the destination, read on
    /// the source, then the topology's checks; a queue must not be another connection's
    /// exclusive queue.
    fn bind(&self, ch: &mut Channel, spec: &BindingSpec, bind: bool) -> Result<(), AmqpException> {
        let vhost = self.vhost()?;
        let (kind, dest) = match &spec.destination {
            DestinationName::Queue(q) => (ResourceKind::Queue, q),
            DestinationName::Exchange(x) => (ResourceKind::Exchange, x),
        };
        self.check(ch, Access::Write, kind, dest)?;
        if spec.source.is_empty() {
            return Err(warren_routing::RoutingError::DefaultExchange.exception());
        }
        self.check(ch, Access::Read, ResourceKind::Exchange, &spec.source)?;
        if bind {
            vhost.bind(spec, Some(self.id))?;
        } else {
            let mut state = vhost.write();
            // Another connection's exclusive queue: 405 only if both ends exist.
            let foreign = state.held_by_other(&spec.destination, Some(self.id));
            let both_exist = state.topology.exchange_id(spec.source.as_bytes()).is_some()
                && state.queue_named(dest).is_some();
            if foreign && both_exist {
                return Err(declare::locked(dest, &vhost.name));
            }
            let removal = state.topology.unbind(spec).map_err(|e| e.exception())?;
            if let Some(d) = &vhost.durable {
                let mut changes = d.deleted(&vhost.name, &removal.exchanges, None);
                changes.push(record::binding_deleted(&vhost.name, spec));
                vhost.persist(&changes)?;
            }
        }
        Ok(())
    }

    fn consume(
        &mut self,
        number: u16,
        ch: &mut Channel,
        m: &warren_amqp_codec::BasicConsume,
    ) -> Result<(ShortStr, Option<Arc<QueueCell>>), AmqpException> {
        let tag = if m.consumer_tag.is_empty() {
            random_name("amq.ctag-")
        } else {
            m.consumer_tag.detached()
        };
        // RabbitMQ checks the tag first, against the channel's queue consumers only.
        if ch.consumers.contains_key(&tag) {
            return Err(declare::reused_tag(&tag));
        }
        if m.queue.as_bytes() == REPLY_TO {
            channel::check_reply_consumer(m.no_ack, ch.reply_consumer.is_some())?;
            let key = random_name("").as_bytes().to_vec();
            self.shared
                .reply_to
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(
                    key.clone(),
                    ReplyTarget {
                        outbox: self.outbox.clone(),
                        channel: number,
                        tag: tag.clone(),
                    },
                );
            ch.reply_consumer = Some((tag.clone(), key));
            return Ok((tag, None));
        }
        let name = self.queue_name(ch, &m.queue)?;
        self.check(ch, Access::Read, ResourceKind::Queue, &name)?;
        let cell = self.find_queue(&name)?;
        self.check_owner(&cell)?;
        declare::check_consumer_arguments(&m.arguments, &name, &cell.vhost)?;
        let spec = ConsumerSpec {
            no_ack: m.no_ack,
            exclusive: m.exclusive,
            prefetch: ch.prefetch,
            recipient: ConsumerLink {
                outbox: self.outbox.clone(),
                channel: number,
                tag: tag.clone(),
                credit: ch.credit.clone(),
            },
            priority: declare::consumer_priority(&m.arguments),
        };
        cell.touch();
        let id = {
            let mut s = cell.lock();
            // Deleted since it was looked up (e.g. auto-deleted by another connection).
            if s.deleted {
                return Err(declare::not_found(&name, &cell.vhost));
            }
            s.queue.add_consumer(spec).map_err(|e| match e {
                ConsumeError::ExclusiveInUse => declare::exclusive_use(&name, &cell.vhost),
            })?
        };
        ch.consumers.insert(
            tag.clone(),
            ChannelConsumer {
                queue: cell.clone(),
                id,
            },
        );
        Ok((tag, Some(cell)))
    }

    /// Removes a consumer from its queue; an auto-delete queue left without consumers goes
    /// (also when the broker shuts down: RabbitMQ 3.10.8 was observed to delete a durable
    /// auto-delete queue whose consumer was connected at `stop_app`, and to keep one that
    /// never had a consumer).
    fn cancel_in_queue(&mut self, c: &ChannelConsumer) {
        c.queue.touch();
        let removed = c.queue.lock().queue.remove_consumer(c.id);
        if removed.is_some_and(|r| r.auto_delete_now) {
            if let Some(v) = &self.vhost {
                if c.queue.lock().queue.consumer_count() == 0 {
                    v.delete_queue(&c.queue);
                    self.exclusive.retain(|q| !Arc::ptr_eq(q, &c.queue));
                }
            }
        }
    }

    /// Adds a routed message to the batch (see [`Staging::stage`]); returns whether its
    /// confirm waits for a sync.
    fn stage(&mut self, message: &Arc<Message>, queues: Vec<Arc<QueueCell>>) -> bool {
        let with_store = self.shared.durable.is_some();
        self.staging
            .stage(with_store, message, queues, &mut self.batch)
    }

    /// Writes the staged messages to the store (one lock for the batch) and asks for the sync
    /// that will confirm the persistent ones.
    fn write_to_store(&mut self) {
        let durable = self.shared.durable.as_ref();
        if self.staging.write(durable) {
            if let Some(d) = durable {
                d.wait_sync(&self.outbox);
            }
        }
    }

    /// `basic.return` 312 NO_ROUTE for a mandatory message no queue took.
    fn send_return(&mut self, number: u16, message: &Message) {
        let ret = BasicReturn {
            reply_code: ReplyCode::NoRoute.code(),
            reply_text: ShortStr::from_static("NO_ROUTE"),
            exchange: message.exchange.clone(),
            routing_key: message.routing_key.clone(),
        };
        self.codec
            .send_content_raw(number, &ret.into(), &message.properties, &message.body);
        self.shared
            .counters
            .returned
            .fetch_add(1, Ordering::Relaxed);
    }

    fn publish(
        &mut self,
        number: u16,
        ch: &mut Channel,
        p: &warren_amqp_codec::BasicPublish,
        content: &mut Content,
    ) -> Result<(), AmqpException> {
        channel::check_immediate(p.immediate)?;
        self.check(ch, Access::Write, ResourceKind::Exchange, &p.exchange)?;
        let properties = &mut content.header.properties;
        // Routing first: a missing or internal exchange is reported before the properties.
        let vhost = self.vhost()?;
        let mut routed = std::mem::take(&mut self.routed);
        let result = {
            let state = vhost.read();
            let r = state.topology.route(
                p.exchange.as_bytes(),
                p.routing_key.as_bytes(),
                properties,
                &mut routed,
            );
            r.map(|()| {
                routed
                    .queues()
                    .iter()
                    .filter_map(|id| state.queue(*id).cloned())
                    .collect::<Vec<_>>()
            })
        };
        let queues = match result {
            Ok(q) => q,
            Err(e) => {
                self.routed = routed;
                return Err(e.exception());
            }
        };
        // Once the store has failed, persistent messages for durable queues are refused: they
        // could not be kept.
        if properties.delivery_mode == Some(2) && queues.iter().any(|q| q.store.is_some()) {
            if let Some(why) = self.shared.durable.as_ref().and_then(|d| d.failure()) {
                self.routed = routed;
                return Err(AmqpException::channel(
                    ReplyCode::InternalError,
                    format!("the message store failed, persistent messages are refused: {why}"),
                ));
            }
        }
        let reply_key = ch.reply_consumer.as_ref().map(|(_, k)| k.as_slice());
        let checked = channel::check_properties(properties, reply_key, &self.user);
        if let Err(e) = checked {
            self.routed = routed;
            return Err(e);
        }
        strip_bcc(properties);
        let message = Message::new(
            &p.exchange,
            &p.routing_key,
            properties,
            std::mem::take(&mut content.body),
            &self.shared.gauge,
        );
        self.tally.published += 1;
        // Direct replies go straight to the requester's connection.
        let mut replied = false;
        if !routed.reply_to().is_empty() {
            let targets = self
                .shared
                .reply_to
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            for key in routed.reply_to() {
                let suffix = key.get(REPLY_TO.len() + 1..).unwrap_or_default();
                // A requester that does not read gets no more replies than its outbox holds.
                if let Some(t) = targets
                    .get(suffix)
                    .filter(|t| t.outbox.len() < Outbox::LIMIT)
                {
                    t.outbox.push(Outgoing::Reply {
                        channel: t.channel,
                        tag: t.tag.clone(),
                        message: message.clone(),
                    });
                    replied = true;
                }
            }
        }
        self.routed = routed;
        let unroutable = queues.is_empty() && !replied;
        if unroutable {
            self.tally.unroutable += 1;
        } else {
            self.tally.routed += 1;
        }
        let returned = unroutable && p.mandatory;
        // In a transaction the return goes out at commit, before commit-ok.
        if returned && !matches!(ch.mode, Mode::Tx(_)) {
            self.send_return(number, &message);
        }
        match &mut ch.mode {
            Mode::Tx(tx) => tx.publishes.push(TxPublish {
                queues,
                message,
                returned,
            }),
            Mode::Confirm(c) => {
                let seq = c.publish();
                let may_refuse = queues
                    .iter()
                    .any(|q| q.may_refuse.load(std::sync::atomic::Ordering::Acquire));
                if self.stage(&message, queues) {
                    // Confirmed once the store's sync covers it.
                    ch.awaiting_sync.push_back((seq, message, true));
                } else if may_refuse {
                    // A queue may refuse it (a length limit with reject-publish): the answer
                    // waits for the enqueue.
                    ch.awaiting_sync.push_back((seq, message, false));
                } else {
                    // In memory, a message is confirmed once enqueued; the reply goes out
                    // after this batch is enqueued.
                    c.settle(seq, true);
                }
            }
            Mode::Plain => {
                self.stage(&message, queues);
            }
        }
        Ok(())
    }

    /// `basic.ack`/`nack`/`reject`.
    fn settle(
        &mut self,
        ch: &mut Channel,
        tag: u64,
        multiple: bool,
        outcome: Outcome,
        buf: &mut Vec<Delivery>,
    ) -> Result<(), AmqpException> {
        if let Mode::Tx(tx) = &mut ch.mode {
            let mut deliveries = Vec::new();
            ch.unacked.settle_tagged(tag, multiple, &mut deliveries)?;
            tx.settlements.push(TxSettle {
                deliveries,
                outcome,
            });
            return Ok(());
        }
        buf.clear();
        ch.unacked.settle(tag, multiple, buf)?;
        self.apply_settlements(ch, buf.drain(..), outcome);
        Ok(())
    }

    fn apply_settlements(
        &mut self,
        ch: &mut Channel,
        deliveries: impl Iterator<Item = Delivery>,
        outcome: Outcome,
    ) {
        let mut credit = 0u32;
        let mut items = std::mem::take(&mut self.settle_items);
        items.extend(deliveries.map(|d| {
            if d.consumer.is_some() {
                credit += 1;
            }
            (d, outcome)
        }));
        if outcome == Outcome::Ack {
            self.shared
                .counters
                .acked
                .fetch_add(items.len() as u64, Ordering::Relaxed);
        }
        settle_by_queue(&mut items);
        self.settle_items = items;
        if ch.credit.release(credit) {
            resume_channel(ch);
        }
    }

    /// `basic.recover`: every unsettled delivery goes back to its queue, marked redelivered
    /// (RabbitMQ implements only `requeue=true`).
    fn recover(&mut self, ch: &mut Channel, requeue: bool) -> Result<(), AmqpException> {
        channel::check_recover(requeue)?;
        let mut pending = Vec::new();
        ch.unacked.drain(&mut pending);
        self.apply_settlements(ch, pending.into_iter(), Outcome::Requeue);
        Ok(())
    }
}

impl Drop for Conn {
    /// A connection task dropped mid-way (an embedder's timeout around `serve_connection`, a
    /// runtime shutting down) still gives back what it holds.
    fn drop(&mut self) {
        self.release_all();
    }
}
