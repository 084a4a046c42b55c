//! Shared helpers: an in-process broker per test, client connections, and ways to await
//! deliveries, channel closes and listings with a deadline instead of sleeping.

use lapin::message::{Delivery, DeliveryResult};
use lapin::options::BasicConsumeOptions;
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties};
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::mpsc;
use warren_broker::{Broker, BrokerBuilder, BrokerHandle, QueueInfo};

/// How long anything expected may take before a test fails.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(5);
/// How long a test watches for something that must not happen.
pub(crate) const QUIET: Duration = Duration::from_millis(150);

/// A broker started for one test, listening on a free loopback port.
pub(crate) struct TestBroker {
    pub(crate) broker: Broker,
    pub(crate) addr: SocketAddr,
}

/// Starts a broker with the defaults (user `guest`/`guest`, vhost `/`).
pub(crate) async fn start() -> TestBroker {
    start_with(|b| b).await
}

/// Starts a broker configured by `f`, listening on 127.0.0.1:0.
pub(crate) async fn start_with(f: impl FnOnce(BrokerBuilder) -> BrokerBuilder) -> TestBroker {
    let builder = f(Broker::builder().listen("127.0.0.1:0".parse().expect("address")));
    let broker = builder.start().await.expect("broker starts");
    let addr = broker.local_addrs()[0];
    TestBroker { broker, addr }
}

impl TestBroker {
    pub(crate) fn handle(&self) -> BrokerHandle {
        self.broker.handle()
    }

    /// `amqp://user:password@addr/vhost` (the vhost percent-encoded).
    pub(crate) fn uri_as(&self, user: &str, password: &str, vhost: &str) -> String {
        let vhost = vhost.replace('%', "%25").replace('/', "%2f");
        format!("amqp://{user}:{password}@{}/{vhost}", self.addr)
    }

    pub(crate) fn uri(&self) -> String {
        self.uri_as("guest", "guest", "/")
    }

    /// A lapin connection as guest to `/`.
    pub(crate) async fn lapin(&self) -> Connection {
        lapin_connect(&self.uri()).await.expect("lapin connects")
    }

    /// A lapin connection and one channel on it.
    pub(crate) async fn lapin_channel(&self) -> (Connection, Channel) {
        let conn = self.lapin().await;
        let ch = within(conn.create_channel()).await.expect("channel opens");
        (conn, ch)
    }

    /// An amqprs connection as guest to `/`.
    pub(crate) async fn amqprs(&self) -> amqprs::connection::Connection {
        amqprs_connect(self.addr, "guest", "guest", "/")
            .await
            .expect("amqprs connects")
    }

    /// The queue `name` in `/` as the handle lists it.
    pub(crate) fn queue(&self, name: &str) -> Option<QueueInfo> {
        self.handle()
            .queues("/")
            .expect("vhost / exists")
            .into_iter()
            .find(|q| q.name == name)
    }

    /// Waits until the listing of queue `name` satisfies `pred`; returns it.
    pub(crate) async fn wait_queue(
        &self,
        name: &str,
        pred: impl Fn(&QueueInfo) -> bool,
    ) -> QueueInfo {
        let handle = self.handle();
        let mut last = None;
        let found = eventually(|| {
            let q = handle
                .queues("/")
                .expect("vhost / exists")
                .into_iter()
                .find(|q| q.name == name);
            let ok = q.as_ref().is_some_and(&pred);
            last = q.clone();
            ok.then_some(q)
        })
        .await;
        match found {
            Some(Some(q)) => q,
            _ => panic!("queue '{name}' never reached the expected state; last: {last:?}"),
        }
    }

    /// Waits until queue `name` is gone from the listing.
    pub(crate) async fn wait_queue_gone(&self, name: &str) {
        let handle = self.handle();
        let gone = eventually(|| {
            let present = handle
                .queues("/")
                .expect("vhost / exists")
                .iter()
                .any(|q| q.name == name);
            (!present).then_some(())
        })
        .await;
        assert!(gone.is_some(), "queue '{name}' was never deleted");
    }

    pub(crate) async fn stop(self) {
        self.broker.shutdown(Duration::from_secs(2)).await;
    }
}

/// Polls `f` (every few milliseconds, up to [`TIMEOUT`]) until it gives a value.
pub(crate) async fn eventually<T>(mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Awaits `fut`, failing the test after [`TIMEOUT`].
pub(crate) async fn within<F: Future>(fut: F) -> F::Output {
    tokio::time::timeout(TIMEOUT, fut)
        .await
        .expect("timed out waiting for the broker")
}

pub(crate) async fn lapin_connect(uri: &str) -> lapin::Result<Connection> {
    within(Connection::connect(uri, ConnectionProperties::default())).await
}

pub(crate) async fn amqprs_connect(
    addr: SocketAddr,
    user: &str,
    password: &str,
    vhost: &str,
) -> Result<amqprs::connection::Connection, amqprs::error::Error> {
    let mut args = amqprs::connection::OpenConnectionArguments::new(
        &addr.ip().to_string(),
        addr.port(),
        user,
        password,
    );
    args.virtual_host(vhost);
    within(amqprs::connection::Connection::open(&args)).await
}

/// The reply code and text of a lapin protocol error.
pub(crate) fn amqp_error(e: &lapin::Error) -> (u16, String) {
    match e {
        lapin::Error::ProtocolError(e) => (e.get_id(), e.get_message().to_string()),
        other => panic!("expected an AMQP error, got {other:?}"),
    }
}

/// Collects the errors a lapin channel is closed with.
pub(crate) fn channel_errors(ch: &Channel) -> mpsc::UnboundedReceiver<lapin::Error> {
    let (tx, rx) = mpsc::unbounded_channel();
    ch.on_error(move |e| {
        let _ = tx.send(e);
    });
    rx
}

/// Collects the errors a lapin connection is closed with.
pub(crate) fn connection_errors(conn: &Connection) -> mpsc::UnboundedReceiver<lapin::Error> {
    let (tx, rx) = mpsc::unbounded_channel();
    conn.on_error(move |e| {
        let _ = tx.send(e);
    });
    rx
}

/// The next error from [`channel_errors`] or [`connection_errors`], as code and text.
pub(crate) async fn next_error(rx: &mut mpsc::UnboundedReceiver<lapin::Error>) -> (u16, String) {
    let e = within(rx.recv()).await.expect("an error arrives");
    amqp_error(&e)
}

/// A lapin consumer's events, in the order they arrived: `Ok(Some(delivery))`, `Ok(None)`
/// once cancelled, `Err` if its channel or connection failed.
pub(crate) struct Deliveries {
    pub(crate) tag: String,
    rx: mpsc::UnboundedReceiver<DeliveryResult>,
    /// Held: lapin cancels a consumer when its last handle is dropped.
    _consumer: lapin::Consumer,
}

impl Deliveries {
    /// The next delivery; fails on a timeout, a cancel or an error.
    pub(crate) async fn next(&mut self) -> Delivery {
        match self.event().await {
            Ok(Some(d)) => d,
            other => panic!("expected a delivery on '{}', got {other:?}", self.tag),
        }
    }

    /// The next `n` deliveries.
    pub(crate) async fn take(&mut self, n: usize) -> Vec<Delivery> {
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            v.push(self.next().await);
        }
        v
    }

    /// The next event, whatever it is.
    pub(crate) async fn event(&mut self) -> DeliveryResult {
        within(self.rx.recv())
            .await
            .expect("consumer's event stream ended")
    }

    /// Asserts nothing arrives for [`QUIET`].
    pub(crate) async fn assert_quiet(&mut self) {
        if let Ok(Some(e)) = tokio::time::timeout(QUIET, self.rx.recv()).await {
            panic!("expected nothing on '{}', got {e:?}", self.tag);
        }
    }
}

/// Starts a lapin consumer and returns its event stream.
pub(crate) async fn consume(
    ch: &Channel,
    queue: &str,
    tag: &str,
    options: BasicConsumeOptions,
) -> Deliveries {
    try_consume(ch, queue, tag, options)
        .await
        .expect("basic.consume succeeds")
}

pub(crate) async fn try_consume(
    ch: &Channel,
    queue: &str,
    tag: &str,
    options: BasicConsumeOptions,
) -> lapin::Result<Deliveries> {
    try_consume_with(ch, queue, tag, options, FieldTable::default()).await
}

/// [`try_consume`] with `basic.consume` arguments (e.g. `x-priority`).
pub(crate) async fn try_consume_with(
    ch: &Channel,
    queue: &str,
    tag: &str,
    options: BasicConsumeOptions,
    arguments: FieldTable,
) -> lapin::Result<Deliveries> {
    let consumer = within(ch.basic_consume(queue, tag, options, arguments)).await?;
    let (tx, rx) = mpsc::unbounded_channel();
    // The delegate is called in delivery order; sending before the returned future runs
    // keeps that order (the futures themselves run in parallel on lapin's executor).
    consumer.set_delegate(move |d: DeliveryResult| {
        let _ = tx.send(d);
        std::future::ready(())
    });
    Ok(Deliveries {
        tag: consumer.tag().to_string(),
        rx,
        _consumer: consumer,
    })
}

/// A message body as text.
pub(crate) fn text(d: &Delivery) -> String {
    String::from_utf8_lossy(&d.data).into_owned()
}

/// Routing keys / bodies `prefix0..prefixN`.
pub(crate) fn numbered(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

pub(crate) mod amqp {
    //! amqprs helpers: callbacks that report what the server sends. The callback traits are
    //! `async_trait` traits; their methods are written out here as boxed futures, which is
    //! what the attribute would generate.

    use amqprs::callbacks::{ChannelCallback, ConnectionCallback};
    use amqprs::channel::Channel;
    use amqprs::connection::Connection;
    use amqprs::error::Error;
    use amqprs::{Ack, BasicProperties, Cancel, Close, CloseChannel, Nack, Return};
    use std::future::Future;
    use std::pin::Pin;
    use tokio::sync::mpsc;

    type Boxed<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

    /// What an amqprs channel callback saw.
    #[derive(Debug)]
    pub(crate) enum ChannelEvent {
        Closed(u16, String),
        Cancelled(String),
        Ack(u64, bool),
        Nack(u64, bool),
        Returned(u16, String, Vec<u8>),
    }

    pub(crate) struct Recorder(pub(crate) mpsc::UnboundedSender<ChannelEvent>);

    impl Recorder {
        fn emit<'a, T: Send + 'a>(&self, e: ChannelEvent, value: T) -> Boxed<'a, T> {
            let _ = self.0.send(e);
            Box::pin(std::future::ready(value))
        }
    }

    impl ChannelCallback for Recorder {
        fn close<'a, 'b, 'c>(
            &'a mut self,
            _: &'b Channel,
            close: CloseChannel,
        ) -> Boxed<'c, Result<(), Error>>
        where
            'a: 'c,
            'b: 'c,
            Self: 'c,
        {
            let e = ChannelEvent::Closed(close.reply_code(), close.reply_text().clone());
            self.emit(e, Ok(()))
        }

        fn cancel<'a, 'b, 'c>(
            &'a mut self,
            _: &'b Channel,
            cancel: Cancel,
        ) -> Boxed<'c, Result<(), Error>>
        where
            'a: 'c,
            'b: 'c,
            Self: 'c,
        {
            let e = ChannelEvent::Cancelled(cancel.consumer_tag().clone());
            self.emit(e, Ok(()))
        }

        fn flow<'a, 'b, 'c>(
            &'a mut self,
            _: &'b Channel,
            active: bool,
        ) -> Boxed<'c, Result<bool, Error>>
        where
            'a: 'c,
            'b: 'c,
            Self: 'c,
        {
            Box::pin(std::future::ready(Ok(active)))
        }

        fn publish_ack<'a, 'b, 'c>(&'a mut self, _: &'b Channel, ack: Ack) -> Boxed<'c, ()>
        where
            'a: 'c,
            'b: 'c,
            Self: 'c,
        {
            self.emit(ChannelEvent::Ack(ack.delivery_tag(), ack.mutiple()), ())
        }

        fn publish_nack<'a, 'b, 'c>(&'a mut self, _: &'b Channel, nack: Nack) -> Boxed<'c, ()>
        where
            'a: 'c,
            'b: 'c,
            Self: 'c,
        {
            self.emit(ChannelEvent::Nack(nack.delivery_tag(), nack.multiple()), ())
        }

        fn publish_return<'a, 'b, 'c>(
            &'a mut self,
            _: &'b Channel,
            ret: Return,
            _: BasicProperties,
            content: Vec<u8>,
        ) -> Boxed<'c, ()>
        where
            'a: 'c,
            'b: 'c,
            Self: 'c,
        {
            let e = ChannelEvent::Returned(ret.reply_code(), ret.reply_text().clone(), content);
            self.emit(e, ())
        }
    }

    /// Opens a channel whose callback reports to the returned receiver.
    pub(crate) async fn channel(
        conn: &Connection,
    ) -> (Channel, mpsc::UnboundedReceiver<ChannelEvent>) {
        let ch = super::within(conn.open_channel(None))
            .await
            .expect("channel opens");
        let (tx, rx) = mpsc::unbounded_channel();
        super::within(ch.register_callback(Recorder(tx)))
            .await
            .expect("callback registers");
        (ch, rx)
    }

    /// The next event of a channel.
    pub(crate) async fn next(rx: &mut mpsc::UnboundedReceiver<ChannelEvent>) -> ChannelEvent {
        super::within(rx.recv()).await.expect("channel event")
    }

    /// A connection callback reporting the server's `connection.close`.
    pub(crate) struct ConnRecorder(pub(crate) mpsc::UnboundedSender<(u16, String)>);

    impl ConnectionCallback for ConnRecorder {
        fn close<'a, 'b, 'c>(
            &'a mut self,
            _: &'b Connection,
            close: Close,
        ) -> Boxed<'c, Result<(), Error>>
        where
            'a: 'c,
            'b: 'c,
            Self: 'c,
        {
            let _ = self
                .0
                .send((close.reply_code(), close.reply_text().clone()));
            Box::pin(std::future::ready(Ok(())))
        }

        fn blocked<'a, 'b, 'c>(&'a mut self, _: &'b Connection, _: String) -> Boxed<'c, ()>
        where
            'a: 'c,
            'b: 'c,
            Self: 'c,
        {
            Box::pin(std::future::ready(()))
        }

        fn unblocked<'a, 'b, 'c>(&'a mut self, _: &'b Connection) -> Boxed<'c, ()>
        where
            'a: 'c,
            'b: 'c,
            Self: 'c,
        {
            Box::pin(std::future::ready(()))
        }

        fn secret_updated<'a, 'b, 'c>(&'a mut self, _: &'b Connection) -> Boxed<'c, ()>
        where
            'a: 'c,
            'b: 'c,
            Self: 'c,
        {
            Box::pin(std::future::ready(()))
        }
    }

    /// Registers a [`ConnRecorder`] on `conn`.
    pub(crate) async fn on_close(conn: &Connection) -> mpsc::UnboundedReceiver<(u16, String)> {
        let (tx, rx) = mpsc::unbounded_channel();
        super::within(conn.register_callback(ConnRecorder(tx)))
            .await
            .expect("callback registers");
        rx
    }

    /// The next message of an amqprs consumer: delivery tag, redelivered, body, properties.
    pub(crate) async fn delivery(
        rx: &mut mpsc::UnboundedReceiver<amqprs::channel::ConsumerMessage>,
    ) -> (u64, bool, Vec<u8>, BasicProperties) {
        let m = super::within(rx.recv()).await.expect("a delivery");
        let deliver = m.deliver.expect("deliver");
        (
            deliver.delivery_tag(),
            deliver.redelivered(),
            m.content.unwrap_or_default(),
            m.basic_properties.unwrap_or_default(),
        )
    }
}

/// Publishes `body` (no confirm awaited).
pub(crate) async fn publish(ch: &Channel, exchange: &str, key: &str, body: &str) {
    within(ch.basic_publish(
        exchange,
        key,
        lapin::options::BasicPublishOptions::default(),
        body.as_bytes(),
        lapin::BasicProperties::default(),
    ))
    .await
    .expect("basic.publish is sent");
}

/// Declares a plain (non-durable, non-exclusive) queue.
pub(crate) async fn declare(ch: &Channel, queue: &str) {
    within(ch.queue_declare(
        queue,
        lapin::options::QueueDeclareOptions::default(),
        FieldTable::default(),
    ))
    .await
    .expect("queue.declare succeeds");
}

/// `basic.get` with no-ack: the body as text, or `None` on get-empty.
pub(crate) async fn get(ch: &Channel, queue: &str) -> Option<String> {
    let opts = lapin::options::BasicGetOptions { no_ack: true };
    within(ch.basic_get(queue, opts))
        .await
        .expect("basic.get succeeds")
        .map(|m| text(&m.delivery))
}

/// Every message of `queue`, fetched with `basic.get` (no-ack) until get-empty.
pub(crate) async fn drain(ch: &Channel, queue: &str) -> Vec<String> {
    let mut v = Vec::new();
    while let Some(m) = get(ch, queue).await {
        v.push(m);
    }
    v
}

/// A data directory for one test (removed when dropped) and brokers started on it.
pub(crate) struct DataDir(warren_testkit::TempDir);

impl DataDir {
    pub(crate) fn new() -> Self {
        Self(warren_testkit::TempDir::new("broker-data"))
    }

    pub(crate) fn path(&self) -> &std::path::Path {
        self.0.path()
    }

    /// Starts a broker (default users) keeping its state here.
    pub(crate) async fn start(&self) -> TestBroker {
        self.start_with(|b| b).await
    }

    /// Starts a broker keeping its state here, configured further by `f`.
    pub(crate) async fn start_with(
        &self,
        f: impl FnOnce(BrokerBuilder) -> BrokerBuilder,
    ) -> TestBroker {
        let dir = self.path().to_path_buf();
        start_with(move |b| f(b.data_dir(dir))).await
    }

    /// Shuts `b` down cleanly and starts a new broker on the same directory.
    pub(crate) async fn restart(&self, b: TestBroker) -> TestBroker {
        b.stop().await;
        self.start().await
    }
}

/// Declares a durable queue (no other flags, no arguments).
pub(crate) async fn declare_durable(ch: &Channel, queue: &str) {
    let options = lapin::options::QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    within(ch.queue_declare(queue, options, FieldTable::default()))
        .await
        .expect("queue.declare succeeds");
}

/// Binds a queue to an exchange with a routing key (no arguments).
pub(crate) async fn bind(ch: &Channel, queue: &str, exchange: &str, key: &str) {
    within(ch.queue_bind(
        queue,
        exchange,
        key,
        lapin::options::QueueBindOptions::default(),
        FieldTable::default(),
    ))
    .await
    .expect("queue.bind succeeds");
}
