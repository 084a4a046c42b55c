//! The broker's handle: listings, counters and administration, for embedders, the CLI and
//! the management API.

use crate::auth::{PasswordHash, Permissions, User};
use crate::broker::{Error, Shared};
use crate::vhost::QueueCounters;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
use warren_amqp_codec::FieldTable;
use warren_queue::policy::PolicyKind;

/// A cheap, cloneable handle on a running broker.
#[derive(Debug, Clone)]
pub struct BrokerHandle {
    pub(crate) shared: Arc<Shared>,
}

/// Totals since the broker started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Messages published (`basic.publish` accepted).
    pub published: u64,
    /// Published messages that reached at least one queue.
    pub routed: u64,
    /// Published messages that reached no queue.
    pub unroutable: u64,
    /// Messages handed to consumers and `basic.get`.
    pub delivered: u64,
    /// Deliveries acknowledged.
    pub acked: u64,
    /// Publishes confirmed (`basic.ack` to a confirming publisher).
    pub confirmed: u64,
    /// Messages returned (`basic.return`).
    pub returned: u64,
    /// Connections opened.
    pub connections_opened: u64,
    /// Connections refused at the connection limit.
    pub connections_refused: u64,
    /// Octets held by messages now.
    pub message_memory: u64,
    /// Persistent messages in the message store now (held by at least one durable queue).
    pub stored_messages: u64,
    /// Octets of the message store on disk now.
    pub store_disk_bytes: u64,
    /// Syncs (`fdatasync`) of the message store since start; each confirms everything
    /// written before it (group commit).
    pub store_syncs: u64,
}

/// An exchange, as listed.
#[derive(Debug, Clone, PartialEq)]
pub struct ExchangeInfo {
    /// Virtual host.
    pub vhost: String,
    /// Name.
    pub name: String,
    /// Type.
    pub kind: String,
    /// Durable.
    pub durable: bool,
    /// Auto-delete.
    pub auto_delete: bool,
    /// Internal.
    pub internal: bool,
    /// Arguments.
    pub arguments: FieldTable,
}

/// A queue, as listed.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueInfo {
    /// Virtual host.
    pub vhost: String,
    /// Name.
    pub name: String,
    /// Durable.
    pub durable: bool,
    /// Auto-delete.
    pub auto_delete: bool,
    /// Exclusive to a connection.
    pub exclusive: bool,
    /// Arguments.
    pub arguments: FieldTable,
    /// Messages ready for delivery.
    pub messages_ready: u64,
    /// Messages delivered and not yet acknowledged.
    pub messages_unacknowledged: u64,
    /// Octets of the ready messages' bodies.
    pub message_bytes_ready: u64,
    /// Consumers.
    pub consumers: u32,
    /// Totals since the queue was declared.
    pub counters: QueueCounters,
    /// The policy that applies to it.
    pub policy: Option<String>,
    /// The operator policy that applies to it.
    pub operator_policy: Option<String>,
}

/// A binding, as listed.
#[derive(Debug, Clone, PartialEq)]
pub struct BindingInfo {
    /// Virtual host.
    pub vhost: String,
    /// Source exchange.
    pub source: String,
    /// Destination name.
    pub destination: String,
    /// `queue` or `exchange`.
    pub destination_kind: &'static str,
    /// Routing key.
    pub routing_key: String,
    /// Arguments.
    pub arguments: FieldTable,
}

/// A connection, as listed.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectionInfo {
    /// The broker's id for it.
    pub id: u64,
    /// The client's address, if known.
    pub peer: Option<SocketAddr>,
    /// The user.
    pub user: String,
    /// The virtual host.
    pub vhost: String,
    /// The `connection_name` the client gave, if any.
    pub client_name: Option<String>,
    /// When it opened.
    pub connected_at: SystemTime,
    /// Its open channels.
    pub channels: Vec<ChannelInfo>,
}

/// A channel, as listed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChannelInfo {
    /// Channel number.
    pub number: u16,
    /// Consumers on it.
    pub consumers: u32,
    /// Deliveries not yet acknowledged.
    pub unacked: u32,
    /// Per-consumer prefetch for new consumers (`basic.qos`, global=false).
    pub prefetch: u16,
    /// Channel-wide prefetch (`basic.qos`, global=true).
    pub global_prefetch: u32,
    /// In confirm mode.
    pub confirm: bool,
    /// In transaction mode.
    pub transactional: bool,
}

/// A channel's figures for listings, kept current by its connection with plain stores.
#[derive(Debug, Default)]
pub(crate) struct ChannelStats {
    pub(crate) consumers: AtomicU32,
    pub(crate) unacked: AtomicU32,
    pub(crate) prefetch: AtomicU32,
    pub(crate) global_prefetch: AtomicU32,
    pub(crate) confirm: AtomicBool,
    pub(crate) transactional: AtomicBool,
}

impl ChannelStats {
    fn snapshot(&self, number: u16) -> ChannelInfo {
        ChannelInfo {
            number,
            consumers: self.consumers.load(Ordering::Relaxed),
            unacked: self.unacked.load(Ordering::Relaxed),
            prefetch: self.prefetch.load(Ordering::Relaxed) as u16,
            global_prefetch: self.global_prefetch.load(Ordering::Relaxed),
            confirm: self.confirm.load(Ordering::Relaxed),
            transactional: self.transactional.load(Ordering::Relaxed),
        }
    }
}

/// What a connection publishes about itself for listings.
#[derive(Debug)]
pub(crate) struct ConnectionEntry {
    pub(crate) id: u64,
    pub(crate) peer: Option<SocketAddr>,
    pub(crate) user: String,
    pub(crate) vhost: String,
    pub(crate) client_name: Option<String>,
    pub(crate) connected_at: SystemTime,
    pub(crate) channels: Mutex<BTreeMap<u16, Arc<ChannelStats>>>,
    /// Set to ask the connection to close (with this text), as `rabbitmqctl close_connection`.
    pub(crate) close_request: tokio::sync::watch::Sender<Option<String>>,
}

impl BrokerHandle {
    /// Totals since start.
    pub fn counters(&self) -> Counters {
        let c = &self.shared.counters;
        let (store, syncs) = self
            .shared
            .durable
            .as_ref()
            .map(|d| (d.stats(), d.syncs()))
            .unwrap_or_default();
        Counters {
            published: c.published.load(Ordering::Relaxed),
            routed: c.routed.load(Ordering::Relaxed),
            unroutable: c.unroutable.load(Ordering::Relaxed),
            delivered: c.delivered.load(Ordering::Relaxed),
            acked: c.acked.load(Ordering::Relaxed),
            confirmed: c.confirmed.load(Ordering::Relaxed),
            returned: c.returned.load(Ordering::Relaxed),
            connections_opened: c.connections_opened.load(Ordering::Relaxed),
            connections_refused: c.connections_refused.load(Ordering::Relaxed),
            message_memory: self.shared.gauge.used(),
            stored_messages: store.messages,
            store_disk_bytes: store.disk_bytes,
            store_syncs: syncs,
        }
    }

    /// An online backup of everything durable (definitions and persistent messages), as it
    /// is at one instant, into the empty directory `target`. Publishing pauses only while the
    /// files' lengths are taken. The backup is itself a data directory: restore it by starting
    /// a broker on it (or on a copy of it).
    pub fn backup(&self, target: &std::path::Path) -> Result<crate::BackupReport, Error> {
        let d = self.shared.durable.as_ref().ok_or(Error::NoStorage)?;
        Ok(d.backup(target)?)
    }

    /// Why the message store stopped accepting persistent messages, if it did (a failed
    /// write or `fdatasync`).
    pub fn store_failure(&self) -> Option<String> {
        self.shared
            .durable
            .as_ref()
            .and_then(|d| d.failure().map(str::to_string))
    }

    /// Whether the memory alarm is raised (publishers blocked).
    pub fn memory_alarm(&self) -> bool {
        *self.shared.alarm.borrow()
    }

    /// Virtual host names, sorted.
    pub fn vhosts(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .shared
            .vhosts
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect();
        v.sort();
        v
    }

    /// Exchanges of `vhost`, sorted by name.
    pub fn exchanges(&self, vhost: &str) -> Result<Vec<ExchangeInfo>, Error> {
        let v = self.vhost(vhost)?;
        let state = v.read();
        let mut out: Vec<ExchangeInfo> = state
            .topology
            .exchanges()
            .map(|(_, x)| ExchangeInfo {
                vhost: vhost.to_string(),
                name: x.name.to_string(),
                kind: x.kind.to_string(),
                durable: x.durable,
                auto_delete: x.auto_delete,
                internal: x.internal,
                arguments: x.arguments.clone(),
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Queues of `vhost` with their counts, sorted by name.
    pub fn queues(&self, vhost: &str) -> Result<Vec<QueueInfo>, Error> {
        let v = self.vhost(vhost)?;
        let cells: Vec<_> = v.read().queues().cloned().collect();
        let mut out: Vec<QueueInfo> = cells
            .iter()
            .map(|q| {
                let (stats, counters) = q.stats();
                let applied = q.lock().applied.clone();
                QueueInfo {
                    policy: applied.policy,
                    operator_policy: applied.operator_policy,
                    vhost: vhost.to_string(),
                    name: q.name.to_string(),
                    durable: q.durable,
                    auto_delete: q.auto_delete,
                    exclusive: q.exclusive_owner.is_some(),
                    arguments: q.arguments.clone(),
                    messages_ready: stats.ready,
                    messages_unacknowledged: stats.unacked,
                    message_bytes_ready: stats.ready_bytes,
                    consumers: stats.consumers,
                    counters,
                }
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Bindings of `vhost`.
    pub fn bindings(&self, vhost: &str) -> Result<Vec<BindingInfo>, Error> {
        let v = self.vhost(vhost)?;
        let state = v.read();
        Ok(state
            .topology
            .bindings()
            .map(|b| {
                let (destination, destination_kind) = match &b.destination {
                    warren_routing::DestinationName::Queue(q) => (q.to_string(), "queue"),
                    warren_routing::DestinationName::Exchange(x) => (x.to_string(), "exchange"),
                };
                BindingInfo {
                    vhost: vhost.to_string(),
                    source: b.source.to_string(),
                    destination,
                    destination_kind,
                    routing_key: b.key.to_string(),
                    arguments: b.arguments,
                }
            })
            .collect())
    }

    /// Open connections, by id.
    pub fn connections(&self) -> Vec<ConnectionInfo> {
        let entries: Vec<_> = self
            .shared
            .connections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        let mut out: Vec<ConnectionInfo> = entries
            .iter()
            .map(|c| ConnectionInfo {
                id: c.id,
                peer: c.peer,
                user: c.user.clone(),
                vhost: c.vhost.clone(),
                client_name: c.client_name.clone(),
                connected_at: c.connected_at,
                channels: c
                    .channels
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .iter()
                    .map(|(n, s)| s.snapshot(*n))
                    .collect(),
            })
            .collect();
        out.sort_by_key(|c| c.id);
        out
    }

    /// Closes a connection with 320 CONNECTION_FORCED and `reason`, as `rabbitmqctl
    /// close_connection` does. Returns whether it was open.
    pub fn close_connection(&self, id: u64, reason: &str) -> bool {
        let entry = self
            .shared
            .connections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .cloned();
        entry.is_some_and(|e| e.close_request.send(Some(reason.to_string())).is_ok())
    }

    /// Adds (or replaces) a user with a password.
    pub fn add_user(&self, name: &str, password: &str, tags: &[&str]) {
        self.put_user(User {
            name: name.to_string(),
            password_hash: Some(PasswordHash::new(password)),
            tags: tags.iter().map(|t| t.to_string()).collect(),
        });
    }

    /// Adds or replaces a user, keeping whether its name is loopback-only.
    pub(crate) fn put_user(&self, user: User) {
        let mut users = self.users();
        let loopback = users.loopback_only.contains(&user.name);
        self.shared
            .persist(&[crate::durable::record::user(&user, loopback)]);
        users.add(user);
    }

    /// Deletes a user and its permissions. Returns whether it existed.
    pub fn delete_user(&self, name: &str) -> bool {
        let mut users = self.users();
        if let Some(d) = &self.shared.durable {
            let _ = d.apply(&d.user_deleted(name));
        }
        users.remove(name)
    }

    /// User names and tags, sorted by name.
    pub fn users_list(&self) -> Vec<(String, Vec<String>)> {
        let users = self.shared.users.read().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<_> = users
            .list()
            .map(|u| (u.name.clone(), u.tags.clone()))
            .collect();
        v.sort();
        v
    }

    /// Grants permissions; takes effect for channels opened afterwards.
    pub fn set_permissions(
        &self,
        user: &str,
        vhost: &str,
        configure: &str,
        write: &str,
        read: &str,
    ) -> Result<(), Error> {
        let p = Permissions::new(configure, write, read)?;
        self.vhost(vhost)?;
        let mut users = self.users();
        if !users.list().any(|u| u.name == user) {
            return Err(Error::NotFound {
                kind: "user",
                name: user.to_string(),
            });
        }
        self.shared.persist(&[crate::durable::record::permissions(
            user, vhost, configure, write, read,
        )]);
        users.set_permissions(user, vhost, p);
        Ok(())
    }

    /// Permissions as (user, vhost, configure, write, read).
    pub fn permissions_list(&self) -> Vec<(String, String, String, String, String)> {
        let users = self.shared.users.read().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<_> = users
            .permissions()
            .map(|(u, vh, p)| {
                let (c, w, r) = p.patterns();
                (u.into(), vh.into(), c.into(), w.into(), r.into())
            })
            .collect();
        v.sort();
        v
    }

    /// Creates a virtual host (no-op if it exists).
    pub fn add_vhost(&self, name: &str) {
        self.shared.persist(&[crate::durable::record::vhost(name)]);
        self.shared.add_vhost(name);
    }

    /// Deletes a virtual host: its connections are closed, its queues and exchanges go.
    /// Returns whether it existed.
    pub fn delete_vhost(&self, name: &str) -> bool {
        let removed = self
            .shared
            .vhosts
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        let Some(v) = removed else { return false };
        if let Some(d) = &self.shared.durable {
            let _ = d.apply(&d.vhost_deleted(name));
        }
        self.users().clear_vhost(name);
        for c in self.connections().into_iter().filter(|c| c.vhost == name) {
            self.close_connection(c.id, "vhost deleted");
        }
        let cells: Vec<_> = v.read().queues().cloned().collect();
        for q in cells {
            v.delete_queue(&q);
        }
        true
    }

    /// Sets a policy in `vhost`, replacing one of the same name, and applies it at once to
    /// the queues and exchanges whose names it matches, as `rabbitmqctl set_policy` does.
    /// A definition RabbitMQ would refuse is refused with its text.
    ///
    /// ```no_run
    /// # fn f(handle: &warren_broker::BrokerHandle) -> Result<(), warren_broker::Error> {
    /// use warren_broker::PolicyInfo;
    /// handle.set_policy(
    ///     "/",
    ///     PolicyInfo::new("limits", "^orders\\.", r#"{"max-length": 10000, "dead-letter-exchange": "dlx"}"#)
    ///         .apply_to("queues")
    ///         .priority(1),
    /// )?;
    /// # Ok(()) }
    /// ```
    pub fn set_policy(&self, vhost: &str, policy: crate::PolicyInfo) -> Result<(), Error> {
        self.set_any_policy(vhost, policy, PolicyKind::Policy)
    }

    /// Sets an operator policy (`rabbitmqctl set_operator_policy`): limits users' policies
    /// and arguments cannot lift (`expires`, `message-ttl`, `max-length`,
    /// `max-length-bytes`, `delivery-limit`; the lowest value wins).
    pub fn set_operator_policy(&self, vhost: &str, policy: crate::PolicyInfo) -> Result<(), Error> {
        self.set_any_policy(vhost, policy, PolicyKind::Operator)
    }

    fn set_any_policy(
        &self,
        vhost: &str,
        policy: crate::PolicyInfo,
        kind: PolicyKind,
    ) -> Result<(), Error> {
        let v = self.vhost(vhost)?;
        let p = policy.check(vhost, kind)?;
        tracing::info!(vhost, policy = %p.name, pattern = %p.pattern, definition = %p.definition, ?kind, "policy set");
        v.change_policy(Ok(p)).map_err(Error::Policy)?;
        Ok(())
    }

    /// Clears a policy; the queues and exchanges it applied to go back to their arguments
    /// (or the next matching policy). Returns whether it existed.
    pub fn clear_policy(&self, vhost: &str, name: &str) -> Result<bool, Error> {
        self.vhost(vhost)?
            .change_policy(Err((PolicyKind::Policy, name.to_string())))
            .map_err(Error::Policy)
    }

    /// Clears an operator policy. Returns whether it existed.
    pub fn clear_operator_policy(&self, vhost: &str, name: &str) -> Result<bool, Error> {
        self.vhost(vhost)?
            .change_policy(Err((PolicyKind::Operator, name.to_string())))
            .map_err(Error::Policy)
    }

    /// The policies of `vhost`, by name.
    pub fn policies(&self, vhost: &str) -> Result<Vec<crate::PolicyInfo>, Error> {
        self.list_policies(vhost, PolicyKind::Policy)
    }

    /// The operator policies of `vhost`, by name.
    pub fn operator_policies(&self, vhost: &str) -> Result<Vec<crate::PolicyInfo>, Error> {
        self.list_policies(vhost, PolicyKind::Operator)
    }

    fn list_policies(
        &self,
        vhost: &str,
        kind: PolicyKind,
    ) -> Result<Vec<crate::PolicyInfo>, Error> {
        Ok(self
            .vhost(vhost)?
            .policies()
            .list(kind)
            .iter()
            .map(|p| crate::PolicyInfo::of(p))
            .collect())
    }

    fn users(&self) -> std::sync::RwLockWriteGuard<'_, crate::auth::Users> {
        self.shared.users.write().unwrap_or_else(|e| e.into_inner())
    }

    fn vhost(&self, name: &str) -> Result<Arc<crate::vhost::Vhost>, Error> {
        self.shared.vhost(name).ok_or_else(|| Error::NotFound {
            kind: "vhost",
            name: name.to_string(),
        })
    }
}
