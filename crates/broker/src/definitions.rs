//! Definitions in RabbitMQ's JSON format: [`BrokerHandle::export_definitions`] writes what the
//! management API of RabbitMQ 3.10 writes (`GET /api/definitions`), and
//! [`BrokerHandle::import_definitions`] reads that and what `rabbitmqctl export_definitions`
//! writes, with RabbitMQ's semantics.

use crate::auth::{PasswordHash, User};
use crate::broker::{Error, Shared};
use crate::handle::BrokerHandle;
use crate::policy::Policy;
use base64::Engine;
use serde::Serialize;
use serde_json::{Map, Number, Value};
use std::collections::{BTreeSet, HashSet};
use warren_amqp_codec::table::MAX_NESTING;
use warren_amqp_codec::{FieldArray, FieldTable, FieldValue, LongStr, ReplyCode, ShortStr};
use warren_queue::declare::{self, QueueDecl};
use warren_queue::policy::PolicyKind;
use warren_routing::{BindingSpec, DestinationName, ExchangeSpec, RoutingError, Topology};

/// The RabbitMQ release whose format this is, written as `rabbit_version` and
/// `rabbitmq_version` (RabbitMQ reads it only to choose the hashing algorithm of users that
/// name none).
const FORMAT_VERSION: &str = "3.10.8";
/// The only password hashing scheme Warren verifies (RabbitMQ's default).
const SHA256: &str = "rabbit_password_hashing_sha256";
/// What [`BrokerHandle::import_definitions`] did.
#[non_exhaustive]
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// Users created or replaced.
    pub users: usize,
    /// Virtual hosts created.
    pub vhosts: usize,
    /// Permissions set.
    pub permissions: usize,
    /// Policies created or replaced.
    pub policies: usize,
    /// Queues created.
    pub queues: usize,
    /// Exchanges created.
    pub exchanges: usize,
    /// Bindings created.
    pub bindings: usize,
    /// What was not imported or left as it was, and why: one line each, starting with the
    /// entry, e.g. `topic_permissions[0]: ...`.
    pub notes: Vec<String>,
}

fn invalid(what: impl Into<String>) -> Error {
    Error::Definitions(what.into())
}

impl BrokerHandle {
    /// The broker's definitions as RabbitMQ's JSON (pretty-printed): users with their
    /// password hashes, virtual hosts, permissions, policies, and the queues (all but
    /// exclusive ones), exchanges (all but the default and `amq.*` ones) and bindings of
    /// every virtual host, each list sorted. `rabbitmqctl import_definitions` and the
    /// management API take it as it is.
    pub fn export_definitions(&self) -> String {
        let users = {
            let users = self.shared.users.read().unwrap_or_else(|e| e.into_inner());
            let mut v: Vec<UserOut> = users
                .list()
                .map(|u| UserOut {
                    name: u.name.clone(),
                    password_hash: u
                        .password_hash
                        .as_ref()
                        .map(PasswordHash::to_base64)
                        .unwrap_or_default(),
                    hashing_algorithm: SHA256,
                    tags: u.tags.clone(),
                    limits: Map::new(),
                })
                .collect();
            v.sort_by(|a, b| a.name.cmp(&b.name));
            v
        };
        let vhosts = self.vhosts();
        let permissions = self
            .permissions_list()
            .into_iter()
            .map(|(user, vhost, configure, write, read)| PermissionOut {
                user,
                vhost,
                configure,
                write,
                read,
            })
            .collect();
        let mut policies = Vec::new();
        let mut parameters = Vec::new();
        for vhost in &vhosts {
            policies.extend(self.policies(vhost).unwrap_or_default());
            // Operator policies are runtime parameters of component `operator_policy`.
            for p in self.operator_policies(vhost).unwrap_or_default() {
                parameters.push(serde_json::json!({
                    "vhost": p.vhost,
                    "component": "operator_policy",
                    "name": p.name,
                    "value": {
                        "pattern": p.pattern,
                        "definition": json_object(&p.definition),
                        "priority": p.priority,
                        "apply-to": p.apply_to,
                    },
                }));
            }
        }
        let mut queues = Vec::new();
        let mut exchanges = Vec::new();
        let mut bindings = Vec::new();
        for vhost in &vhosts {
            let listed = self.queues(vhost).unwrap_or_default();
            let exclusive: HashSet<&str> = listed
                .iter()
                .filter(|q| q.exclusive)
                .map(|q| q.name.as_str())
                .collect();
            for q in listed.iter().filter(|q| !q.exclusive) {
                queues.push(QueueOut {
                    name: q.name.clone(),
                    vhost: vhost.clone(),
                    durable: q.durable,
                    auto_delete: q.auto_delete,
                    arguments: table_to_json(&q.arguments),
                });
            }
            for x in self.exchanges(vhost).unwrap_or_default() {
                if x.name.is_empty() || x.name.starts_with("amq.") {
                    continue;
                }
                exchanges.push(ExchangeOut {
                    name: x.name,
                    vhost: vhost.clone(),
                    kind: x.kind,
                    durable: x.durable,
                    auto_delete: x.auto_delete,
                    internal: x.internal,
                    arguments: table_to_json(&x.arguments),
                });
            }
            let mut these: Vec<BindingOut> = self
                .bindings(vhost)
                .unwrap_or_default()
                .into_iter()
                .filter(|b| {
                    !(b.destination_kind == "queue" && exclusive.contains(b.destination.as_str()))
                })
                .map(|b| BindingOut {
                    source: b.source,
                    vhost: vhost.clone(),
                    destination: b.destination,
                    destination_type: b.destination_kind,
                    routing_key: b.routing_key,
                    arguments: table_to_json(&b.arguments),
                })
                .collect();
            these.sort_by_cached_key(|b| {
                (
                    b.source.clone(),
                    b.destination_type,
                    b.destination.clone(),
                    b.routing_key.clone(),
                    Value::Object(b.arguments.clone()).to_string(),
                )
            });
            bindings.extend(these);
        }
        let out = Export {
            rabbit_version: FORMAT_VERSION,
            rabbitmq_version: FORMAT_VERSION,
            product_name: "Warren",
            product_version: env!("CARGO_PKG_VERSION"),
            users,
            vhosts: vhosts.into_iter().map(|name| VhostOut { name }).collect(),
            permissions,
            topic_permissions: Vec::new(),
            parameters,
            global_parameters: Vec::new(),
            policies: policies
                .into_iter()
                .map(|p| PolicyOut {
                    definition: json_object(&p.definition),
                    vhost: p.vhost,
                    name: p.name,
                    pattern: p.pattern,
                    apply_to: p.apply_to,
                    priority: p.priority,
                })
                .collect(),
            queues,
            exchanges,
            bindings,
        };
        // Serializing plain structs, strings and JSON values cannot fail.
        serde_json::to_string_pretty(&out).unwrap_or_default()
    }

    /// Imports definitions in RabbitMQ's JSON format (from `rabbitmqctl export_definitions`,
    /// the management API, or [`BrokerHandle::export_definitions`]), as RabbitMQ's
    /// `import_definitions` does.
    ///
    /// The whole file is checked first: its shape, every password hash, permission and
    /// policy pattern, queue argument, exchange and binding (exchanges, queues and bindings
    /// are declared on a scratch copy of each virtual host's topology, through the code
    /// clients go through). A malformed file is refused with [`Error::Definitions`], naming
    /// the entry and what is wrong (e.g. `queues[3]: PRECONDITION_FAILED - invalid arg
    /// 'x-max-length' ...`), and nothing is changed. Then the entries are applied in
    /// RabbitMQ's order (users, virtual hosts, permissions, policies, queues, exchanges,
    /// bindings), each as the handle or a client would, so each is kept in the data directory
    /// exactly as it would be. A failure while applying (the store failing) leaves what was
    /// applied before it.
    ///
    /// As in RabbitMQ: users, permissions and policies replace those of the same name
    /// (a replaced user keeps its other permissions); existing virtual hosts, queues,
    /// exchanges and bindings are left as they are (a different existing queue or exchange
    /// gets a note in the report, not an error); queues and exchanges named `amq.*`, and
    /// bindings whose source or destination does not exist (RabbitMQ 3.10's `rabbitmqctl`
    /// exports the bindings of exclusive queues but not the queues, and leaves out internal
    /// exchanges), are skipped with a note. Tags may be a list or a comma-separated string.
    ///
    /// Not supported, each ignored with a note: topic permissions (Warren does not check
    /// them), vhost-scoped and global runtime parameters (vhost limits, operator policies,
    /// federation and shovel settings, `cluster_name`), user limits. Vhost metadata is
    /// ignored. Policies are kept, persisted and exported, but do not act yet. Only
    /// `rabbit_password_hashing_sha256` hashes are accepted.
    pub fn import_definitions(&self, json: &str) -> Result<ImportReport, Error> {
        let doc: Value =
            serde_json::from_str(json).map_err(|e| invalid(format!("not valid JSON: {e}")))?;
        let Value::Object(doc) = doc else {
            return Err(invalid(format!(
                "expected a JSON object at the top level, got {}",
                kind(&doc)
            )));
        };
        let mut report = ImportReport::default();
        let plan = Plan::read(&self.shared, &doc, &mut report.notes)?;
        let skipped = plan.dry_run(&self.shared, &mut report.notes)?;
        plan.apply(self, &skipped, &mut report)?;
        Ok(report)
    }
}

/// A stored definition (JSON object text) as a JSON value.
fn json_object(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::Object(Map::new()))
}

// ---- export ----------------------------------------------------------------------------------

/// The file, in the management API's key order.
#[derive(Serialize)]
struct Export {
    rabbit_version: &'static str,
    rabbitmq_version: &'static str,
    product_name: &'static str,
    product_version: &'static str,
    users: Vec<UserOut>,
    vhosts: Vec<VhostOut>,
    permissions: Vec<PermissionOut>,
    topic_permissions: Vec<Value>,
    parameters: Vec<Value>,
    global_parameters: Vec<Value>,
    policies: Vec<PolicyOut>,
    queues: Vec<QueueOut>,
    exchanges: Vec<ExchangeOut>,
    bindings: Vec<BindingOut>,
}

#[derive(Serialize)]
struct UserOut {
    name: String,
    password_hash: String,
    hashing_algorithm: &'static str,
    /// A list, as RabbitMQ 3.10 writes them (older releases wrote "a,b").
    tags: Vec<String>,
    limits: Map<String, Value>,
}

#[derive(Serialize)]
struct VhostOut {
    name: String,
}

#[derive(Serialize)]
struct PermissionOut {
    user: String,
    vhost: String,
    configure: String,
    write: String,
    read: String,
}

#[derive(Serialize)]
struct PolicyOut {
    vhost: String,
    name: String,
    pattern: String,
    #[serde(rename = "apply-to")]
    apply_to: String,
    definition: Value,
    priority: i64,
}

#[derive(Serialize)]
struct QueueOut {
    name: String,
    vhost: String,
    durable: bool,
    auto_delete: bool,
    arguments: Map<String, Value>,
}

#[derive(Serialize)]
struct ExchangeOut {
    name: String,
    vhost: String,
    #[serde(rename = "type")]
    kind: String,
    durable: bool,
    auto_delete: bool,
    internal: bool,
    arguments: Map<String, Value>,
}

#[derive(Serialize)]
struct BindingOut {
    source: String,
    vhost: String,
    destination: String,
    destination_type: &'static str,
    routing_key: String,
    arguments: Map<String, Value>,
}

/// A field table as RabbitMQ writes it: an object (keys sorted, the first of duplicates kept).
fn table_to_json(t: &FieldTable) -> Map<String, Value> {
    let mut m = Map::new();
    for (k, v) in t.iter() {
        m.entry(k.to_string()).or_insert_with(|| value_to_json(v));
    }
    m
}

fn value_to_json(v: &FieldValue) -> Value {
    let float = |f: f64| Number::from_f64(f).map_or(Value::Null, Value::Number);
    match v {
        FieldValue::Bool(b) => Value::Bool(*b),
        FieldValue::Timestamp(t) => Value::from(*t),
        FieldValue::F32(f) => float(f64::from(*f)),
        FieldValue::F64(f) => float(*f),
        FieldValue::Decimal(d) => float(f64::from(d.value) / 10f64.powi(i32::from(d.scale))),
        FieldValue::LongStr(s) => text_to_json(s.as_bytes()),
        FieldValue::Bytes(b) => text_to_json(b),
        FieldValue::Array(a) => Value::Array(a.0.iter().map(value_to_json).collect()),
        FieldValue::Table(t) => Value::Object(table_to_json(t)),
        FieldValue::Void => Value::Null,
        other => other.as_i64().map_or(Value::Null, Value::from),
    }
}

/// A string, or RabbitMQ's rendering of octets that are not UTF-8.
fn text_to_json(b: &[u8]) -> Value {
    match std::str::from_utf8(b) {
        Ok(s) => Value::from(s),
        Err(_) => Value::from(format!(
            "Not UTF-8, base64 is: {}",
            base64::engine::general_purpose::STANDARD.encode(b)
        )),
    }
}

// ---- import: reading -------------------------------------------------------------------------

/// A JSON value's kind, for messages.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// One entry of a list in the file, with its place for messages (`queues[3]`).
struct Item<'a> {
    at: String,
    map: &'a Map<String, Value>,
}

impl<'a> Item<'a> {
    fn error(&self, field: &str, what: impl std::fmt::Display) -> Error {
        invalid(format!("{}.{field}: {what}", self.at))
    }

    /// A field, `None` if missing or null.
    fn get(&self, field: &str) -> Option<&'a Value> {
        self.map.get(field).filter(|v| !v.is_null())
    }

    fn opt_string(&self, field: &str) -> Result<Option<&'a str>, Error> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(self.error(field, format!("expected a string, got {}", kind(v)))),
        }
    }

    fn string(&self, field: &str) -> Result<&'a str, Error> {
        self.opt_string(field)?
            .ok_or_else(|| self.error(field, "missing"))
    }

    /// A name or routing key: a string of at most 255 octets.
    fn short(&self, field: &str) -> Result<ShortStr, Error> {
        let s = self.string(field)?;
        ShortStr::from_bytes(s.as_bytes().to_vec())
            .map_err(|_| self.error(field, "longer than 255 octets"))
    }

    fn flag(&self, field: &str, default: Option<bool>) -> Result<bool, Error> {
        match (self.get(field), default) {
            (Some(Value::Bool(b)), _) => Ok(*b),
            (None, Some(d)) => Ok(d),
            (None, None) => Err(self.error(field, "missing")),
            (Some(v), _) => Err(self.error(field, format!("expected a boolean, got {}", kind(v)))),
        }
    }

    fn arguments(&self) -> Result<FieldTable, Error> {
        match self.get("arguments") {
            None => Ok(FieldTable::new()),
            Some(Value::Object(m)) => table_from_json(m, 0).map_err(|e| self.error("arguments", e)),
            Some(v) => Err(self.error("arguments", format!("expected an object, got {}", kind(v)))),
        }
    }

    /// The virtual host named by `vhost`, which must exist or be in the file.
    fn vhost(&self, known: &Known) -> Result<String, Error> {
        let v = self.string("vhost")?;
        if !known.vhosts.contains(v) {
            return Err(self.error(
                "vhost",
                format!("no vhost '{v}' (neither in the file nor in the broker)"),
            ));
        }
        Ok(v.to_string())
    }
}

/// The entries of the list `key` (missing or null: none).
fn items<'a>(doc: &'a Map<String, Value>, key: &str) -> Result<Vec<Item<'a>>, Error> {
    match doc.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(a)) => a
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::Object(map) => Ok(Item {
                    at: format!("{key}[{i}]"),
                    map,
                }),
                v => Err(invalid(format!(
                    "{key}[{i}]: expected an object, got {}",
                    kind(v)
                ))),
            })
            .collect(),
        Some(v) => Err(invalid(format!(
            "{key}: expected an array, got {}",
            kind(v)
        ))),
    }
}

/// A JSON object as a field table, as RabbitMQ converts one: integers are `l` (signed 64-bit),
/// other numbers `d`, strings `S`, booleans `t`, arrays `A`, objects `F`. Keys come in
/// sorted order, as RabbitMQ's maps give them. `null` becomes `V` (void), where RabbitMQ
/// refuses it.
pub(crate) fn table_from_json(m: &Map<String, Value>, depth: usize) -> Result<FieldTable, String> {
    let mut t = FieldTable::new();
    for (k, v) in m {
        let key = ShortStr::from_bytes(k.as_bytes().to_vec())
            .map_err(|_| format!("key '{k}' is longer than 255 octets"))?;
        let value = value_from_json(v, depth).map_err(|e| format!("'{k}': {e}"))?;
        t.push(key, value);
    }
    Ok(t)
}

fn value_from_json(v: &Value, depth: usize) -> Result<FieldValue, String> {
    Ok(match v {
        Value::Null => FieldValue::Void,
        Value::Bool(b) => FieldValue::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => FieldValue::I64(i),
            None if n.is_u64() => return Err(format!("{n} is out of the range of a long")),
            None => FieldValue::F64(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => FieldValue::LongStr(LongStr::from(s.clone())),
        Value::Array(_) | Value::Object(_) if depth + 1 > MAX_NESTING => {
            return Err(format!("nested deeper than {MAX_NESTING} levels"));
        }
        Value::Array(a) => FieldValue::Array(FieldArray(
            a.iter()
                .map(|x| value_from_json(x, depth + 1))
                .collect::<Result<_, _>>()?,
        )),
        Value::Object(m) => FieldValue::Table(table_from_json(m, depth + 1)?),
    })
}

/// What exists, in the broker or in the file.
struct Known {
    users: HashSet<String>,
    vhosts: HashSet<String>,
}

/// Everything the file asks for, checked.
struct Plan {
    users: Vec<User>,
    vhosts: Vec<String>,
    /// (user, vhost, configure, write, read)
    permissions: Vec<(String, String, String, String, String)>,
    policies: Vec<Policy>,
    /// (entry, vhost, name, declaration)
    queues: Vec<(String, String, ShortStr, QueueDecl)>,
    /// (entry, vhost, exchange)
    exchanges: Vec<(String, String, ExchangeSpec)>,
    /// (entry, vhost, binding)
    bindings: Vec<(String, String, BindingSpec)>,
}

impl Plan {
    fn read(
        shared: &Shared,
        doc: &Map<String, Value>,
        notes: &mut Vec<String>,
    ) -> Result<Plan, Error> {
        let mut known = Known {
            users: shared
                .users
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .list()
                .map(|u| u.name.clone())
                .collect(),
            vhosts: shared
                .vhosts
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .keys()
                .cloned()
                .collect(),
        };
        let mut plan = Plan {
            users: Vec::new(),
            vhosts: Vec::new(),
            permissions: Vec::new(),
            policies: Vec::new(),
            queues: Vec::new(),
            exchanges: Vec::new(),
            bindings: Vec::new(),
        };
        for u in items(doc, "users")? {
            let user = read_user(&u, notes)?;
            known.users.insert(user.name.clone());
            plan.users.push(user);
        }
        for v in items(doc, "vhosts")? {
            let name = v.string("name")?.to_string();
            known.vhosts.insert(name.clone());
            plan.vhosts.push(name);
        }
        for p in items(doc, "permissions")? {
            let user = p.string("user")?;
            if !known.users.contains(user) {
                return Err(p.error(
                    "user",
                    format!("no user '{user}' (neither in the file nor in the broker)"),
                ));
            }
            let vhost = p.vhost(&known)?;
            let pattern = |field: &str| {
                let s = p.string(field)?;
                regex::Regex::new(s)
                    .map_err(|e| p.error(field, format!("invalid regular expression: {e}")))?;
                Ok::<_, Error>(s.to_string())
            };
            let (c, w, r) = (pattern("configure")?, pattern("write")?, pattern("read")?);
            plan.permissions.push((user.to_string(), vhost, c, w, r));
        }
        for t in items(doc, "topic_permissions")? {
            notes.push(format!(
                "{}: topic permissions are not supported (user '{}', exchange '{}' in vhost '{}'); ignored",
                t.at,
                t.opt_string("user").ok().flatten().unwrap_or("?"),
                t.opt_string("exchange").ok().flatten().unwrap_or("?"),
                t.opt_string("vhost").ok().flatten().unwrap_or("?"),
            ));
        }
        for p in items(doc, "parameters")? {
            if p.opt_string("component")? == Some("operator_policy") {
                plan.policies.push(read_operator_policy(&p, &known)?);
                continue;
            }
            notes.push(format!(
                "{}: runtime parameters are not supported ('{}' of component '{}' in vhost '{}'); ignored",
                p.at,
                p.opt_string("name").ok().flatten().unwrap_or("?"),
                p.opt_string("component").ok().flatten().unwrap_or("?"),
                p.opt_string("vhost").ok().flatten().unwrap_or("?"),
            ));
        }
        for p in items(doc, "global_parameters")? {
            notes.push(format!(
                "{}: global parameters are not supported ('{}'); ignored",
                p.at,
                p.opt_string("name").ok().flatten().unwrap_or("?"),
            ));
        }
        for p in items(doc, "policies")? {
            plan.policies
                .push(read_policy(&p, &known, PolicyKind::Policy)?);
        }
        for q in items(doc, "queues")? {
            let vhost = q.vhost(&known)?;
            let name = warren_routing::strip_cr_lf(&q.short("name")?);
            if name.is_empty() {
                return Err(q.error("name", "empty (server-named queues are not exported)"));
            }
            if name.as_bytes().starts_with(b"amq.") {
                notes.push(format!(
                    "{}: queue '{name}' in vhost '{vhost}' has the reserved prefix 'amq.'; skipped",
                    q.at
                ));
                continue;
            }
            let decl = QueueDecl {
                durable: q.flag("durable", None)?,
                exclusive: false,
                auto_delete: q.flag("auto_delete", None)?,
                arguments: q.arguments()?,
            };
            declare::validate_arguments(&decl, &name, &vhost)
                .map_err(|e| invalid(format!("{}: {}", q.at, e.reply_text())))?;
            plan.queues.push((q.at, vhost, name, decl));
        }
        for x in items(doc, "exchanges")? {
            let vhost = x.vhost(&known)?;
            let name = warren_routing::strip_cr_lf(&x.short("name")?);
            if name.is_empty() || name.as_bytes().starts_with(b"amq.") {
                notes.push(format!(
                    "{}: exchange '{name}' in vhost '{vhost}' is built in or has the reserved prefix 'amq.'; skipped",
                    x.at
                ));
                continue;
            }
            let spec = ExchangeSpec {
                name,
                kind: x.short("type")?,
                durable: x.flag("durable", None)?,
                auto_delete: x.flag("auto_delete", None)?,
                internal: x.flag("internal", Some(false))?,
                arguments: x.arguments()?,
            };
            plan.exchanges.push((x.at, vhost, spec));
        }
        for b in items(doc, "bindings")? {
            let vhost = b.vhost(&known)?;
            let source = b.short("source")?;
            let destination = b.short("destination")?;
            let destination = match b.string("destination_type")? {
                "queue" => DestinationName::Queue(destination),
                "exchange" => DestinationName::Exchange(destination),
                other => {
                    return Err(b.error(
                        "destination_type",
                        format!("expected \"queue\" or \"exchange\", got \"{other}\""),
                    ));
                }
            };
            let spec = BindingSpec {
                source,
                destination,
                key: b.short("routing_key")?,
                arguments: b.arguments()?,
            };
            plan.bindings.push((b.at, vhost, spec));
        }
        Ok(plan)
    }

    /// Declares the exchanges, queues and bindings on a scratch copy of each virtual host's
    /// topology, so that what the topology would refuse is refused before anything changes.
    /// Returns which bindings to skip: those whose source or destination does not exist.
    fn dry_run(&self, shared: &Shared, notes: &mut Vec<String>) -> Result<Vec<bool>, Error> {
        let mut skipped = vec![false; self.bindings.len()];
        let vhosts: BTreeSet<&str> = self
            .exchanges
            .iter()
            .map(|(_, v, _)| v.as_str())
            .chain(self.queues.iter().map(|(_, v, _, _)| v.as_str()))
            .chain(self.bindings.iter().map(|(_, v, _)| v.as_str()))
            .collect();
        for vhost in vhosts {
            let mut scratch = Topology::new(vhost, crate::random_u64());
            if let Some(v) = shared.vhost(vhost) {
                let state = v.read();
                for (_, x) in state.topology.exchanges() {
                    if scratch.exchange_id(x.name.as_bytes()).is_none() {
                        let _ = scratch.declare_exchange(x.clone());
                    }
                }
                for q in state.queues() {
                    scratch.declare_queue(&q.name);
                }
            }
            for (at, _, spec) in self.exchanges.iter().filter(|(_, v, _)| v == vhost) {
                // An existing one is left as it is.
                if scratch.exchange_id(spec.name.as_bytes()).is_none() {
                    scratch
                        .declare_exchange(spec.clone())
                        .map_err(|e| invalid(format!("{at}: {}", e.exception().reply_text())))?;
                }
            }
            for (_, _, name, _) in self.queues.iter().filter(|(_, v, _, _)| v == vhost) {
                scratch.declare_queue(name);
            }
            for (i, (at, v, spec)) in self.bindings.iter().enumerate() {
                if v != vhost {
                    continue;
                }
                match scratch.bind(spec) {
                    Ok(_) => {}
                    Err(
                        e @ (RoutingError::ExchangeNotFound { .. }
                        | RoutingError::QueueNotFound { .. }),
                    ) => {
                        if let Some(s) = skipped.get_mut(i) {
                            *s = true;
                        }
                        notes.push(format!("{at}: {e}; skipped"));
                    }
                    Err(e) => {
                        return Err(invalid(format!("{at}: {}", e.exception().reply_text())));
                    }
                }
            }
        }
        Ok(skipped)
    }

    fn apply(
        self,
        handle: &BrokerHandle,
        skipped: &[bool],
        report: &mut ImportReport,
    ) -> Result<(), Error> {
        let shared = &handle.shared;
        for user in self.users {
            handle.put_user(user);
            report.users += 1;
        }
        for v in &self.vhosts {
            if shared.vhost(v).is_none() {
                handle.add_vhost(v);
                report.vhosts += 1;
            }
        }
        for (u, v, c, w, r) in &self.permissions {
            handle.set_permissions(u, v, c, w, r)?;
            report.permissions += 1;
        }
        let vhost = |at: &str, name: &str| {
            shared
                .vhost(name)
                .ok_or_else(|| invalid(format!("{at}: vhost '{name}' was deleted meanwhile")))
        };
        for p in self.policies {
            let v = vhost("policies", &p.vhost)?;
            v.change_policy(Ok(p))
                .map_err(|why| invalid(format!("policies: {why}")))?;
            report.policies += 1;
        }
        for (at, v, name, decl) in &self.queues {
            let vhost = vhost(at, v)?;
            let existed = vhost.read().queue_named(name).is_some();
            match vhost.declare_queue(name, decl, None, || Ok(())) {
                Ok((_, true)) => report.queues += 1,
                Ok((_, false)) => {}
                Err(e) if existed => report.notes.push(format!(
                    "{at}: {}; the queue is left as it is",
                    e.reply_text()
                )),
                Err(e) => return Err(invalid(format!("{at}: {}", e.reply_text()))),
            }
        }
        for (at, v, spec) in &self.exchanges {
            let vhost = vhost(at, v)?;
            let existed = vhost
                .read()
                .topology
                .exchange_id(spec.name.as_bytes())
                .is_some();
            match vhost.declare_exchange(spec.clone()) {
                Ok(d) if d.created => report.exchanges += 1,
                Ok(_) => {}
                Err(e) if existed => report.notes.push(format!(
                    "{at}: {}; the exchange is left as it is",
                    e.reply_text()
                )),
                Err(e) => return Err(invalid(format!("{at}: {}", e.reply_text()))),
            }
        }
        for ((at, v, spec), skip) in self.bindings.iter().zip(skipped) {
            if *skip {
                continue;
            }
            let vhost = vhost(at, v)?;
            match vhost.bind(spec, None) {
                Ok(true) => report.bindings += 1,
                Ok(false) => {}
                Err(e) if matches!(e.code, ReplyCode::NotFound | ReplyCode::ResourceLocked) => {
                    report
                        .notes
                        .push(format!("{at}: {}; skipped", e.reply_text()));
                }
                Err(e) => return Err(invalid(format!("{at}: {}", e.reply_text()))),
            }
        }
        Ok(())
    }
}

fn read_user(u: &Item<'_>, notes: &mut Vec<String>) -> Result<User, Error> {
    let name = u.string("name")?.to_string();
    let password_hash = match (u.opt_string("password_hash")?, u.opt_string("password")?) {
        // No password: the user cannot log in with one (RabbitMQ's users for other
        // mechanisms).
        (Some(""), _) => None,
        (Some(hash), _) => {
            let algorithm = u.opt_string("hashing_algorithm")?.unwrap_or(SHA256);
            if algorithm != SHA256 {
                return Err(u.error(
                    "hashing_algorithm",
                    format!("'{algorithm}' is not supported (only {SHA256})"),
                ));
            }
            Some(PasswordHash::from_base64(hash).ok_or_else(|| {
                u.error(
                    "password_hash",
                    "not a base64 salted SHA-256 hash (4 octets of salt, 32 of digest)",
                )
            })?)
        }
        (None, Some(password)) => Some(PasswordHash::new(password)),
        (None, None) => {
            return Err(invalid(format!(
                "{}: user '{name}' has neither password_hash nor password",
                u.at
            )));
        }
    };
    let tags = match u.get("tags") {
        None => Vec::new(),
        // RabbitMQ before 3.9 (and hand-written files): "administrator,management".
        Some(Value::String(s)) => s
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .collect(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|t| match t {
                Value::String(s) => Ok(s.clone()),
                v => Err(u.error("tags", format!("expected strings, got {}", kind(v)))),
            })
            .collect::<Result<_, _>>()?,
        Some(v) => {
            return Err(u.error(
                "tags",
                format!(
                    "expected a list or a comma-separated string, got {}",
                    kind(v)
                ),
            ));
        }
    };
    if u.get("limits")
        .is_some_and(|l| l.as_object().is_none_or(|m| !m.is_empty()))
    {
        notes.push(format!(
            "{}.limits: user limits are not supported (user '{name}'); ignored",
            u.at
        ));
    }
    Ok(User {
        name,
        password_hash,
        tags,
    })
}

fn read_policy(p: &Item<'_>, known: &Known, policy_kind: PolicyKind) -> Result<Policy, Error> {
    let vhost = p.vhost(known)?;
    let name = p.string("name")?.to_string();
    let pattern = p.string("pattern")?.to_string();
    let apply_to = p.opt_string("apply-to")?.unwrap_or("all").to_string();
    let definition = match p.get("definition") {
        Some(Value::Object(m)) => Value::Object(m.clone()).to_string(),
        // `rabbitmqctl export_definitions` writes an operator policy's definition as a
        // list of [key, value] pairs.
        Some(Value::Array(pairs)) => {
            let mut m = Map::new();
            for pair in pairs {
                match pair {
                    Value::Array(kv) if kv.len() == 2 => {
                        let (Some(Value::String(k)), Some(v)) = (kv.first(), kv.get(1)) else {
                            return Err(p.error("definition", "expected [key, value] pairs"));
                        };
                        m.insert(k.clone(), v.clone());
                    }
                    _ => return Err(p.error("definition", "expected [key, value] pairs")),
                }
            }
            Value::Object(m).to_string()
        }
        Some(v) => {
            return Err(p.error("definition", format!("expected an object, got {}", kind(v))));
        }
        None => return Err(p.error("definition", "missing")),
    };
    let priority = match p.get("priority") {
        None => 0,
        Some(Value::Number(n)) if n.is_i64() => n.as_i64().unwrap_or(0),
        Some(v) => {
            return Err(p.error("priority", format!("expected an integer, got {}", kind(v))));
        }
    };
    Policy::new(
        &vhost,
        &name,
        policy_kind,
        &pattern,
        &apply_to,
        priority,
        &definition,
    )
    .map_err(|(field, why)| p.error(field, why))
}

/// An operator policy: a runtime parameter of component `operator_policy` whose `value`
/// holds what a policy entry holds.
fn read_operator_policy(p: &Item<'_>, known: &Known) -> Result<Policy, Error> {
    let value = match p.get("value") {
        Some(Value::Object(m)) => m,
        Some(v) => return Err(p.error("value", format!("expected an object, got {}", kind(v)))),
        None => return Err(p.error("value", "missing")),
    };
    let mut merged = value.clone();
    for field in ["vhost", "name"] {
        if let Some(v) = p.get(field) {
            merged.insert(field.to_string(), v.clone());
        }
    }
    let item = Item {
        at: p.at.clone(),
        map: &merged,
    };
    read_policy(&item, known, PolicyKind::Operator)
}
