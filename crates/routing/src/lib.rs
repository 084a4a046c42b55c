//! # warren-routing
//!
//! Decides, for a published message, which queues receive it. **Work has not started**: this
//! crate holds only its description until the routing issue lands.
//!
//! It will own: a topology of exchanges and bindings per virtual host with incremental bind and
//! unbind; the default, `direct`, `fanout`, `topic` (a trie, not a scan of every binding) and
//! `headers` exchange types; exchange-to-exchange bindings (cycle-safe, at most one copy per
//! queue); alternate exchanges; internal exchanges; `CC`/`BCC` sender-selected distribution; a
//! trait through which further exchange types plug in (with `x-consistent-hash` as its proof);
//! and errors carrying RabbitMQ's reply codes.
//!
//! It deliberately does not own queues, messages, I/O or time: it is sans-IO and depends only on
//! `warren-amqp-codec` for field tables and reply codes.
