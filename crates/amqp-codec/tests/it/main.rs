//! Integration tests of `warren-amqp-codec`, one binary (see `docs/ARCHITECTURE.md`).

mod connection;
mod gen_strategies;
mod golden;
mod properties;
mod robustness;

/// After the client's `connection.close` was answered with `close-ok`: the connection is over
/// for the caller but keeps reading (and discarding) until the client closes the socket, or
/// the close timeout passes, as RabbitMQ does.
pub(crate) fn assert_closed_by_client(conn: &mut warren_amqp_codec::connection::ServerConnection) {
    assert!(!conn.is_open());
    assert!(
        !conn.is_finished(),
        "the socket is left to the client to close"
    );
    assert!(conn.wants_read());
    let deadline = conn
        .poll_timeout()
        .expect("a deadline for the client's EOF");
    conn.handle_timeout(deadline);
    assert!(conn.is_finished());
    assert!(!conn.wants_read());
}
