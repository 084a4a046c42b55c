//! Users, password hashes and per-vhost permissions, checked as RabbitMQ checks them.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use regex::Regex;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::IpAddr;
use warren_amqp_codec::{AmqpException, ReplyCode};

/// A password hash in RabbitMQ's default scheme (`rabbit_password_hashing_sha256`): a 4-octet
/// salt followed by SHA-256(salt ‖ password), base64-encoded in definitions files.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash {
    salt: [u8; 4],
    digest: [u8; 32],
}

impl std::fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PasswordHash(..)")
    }
}

impl PasswordHash {
    /// Hashes `password` with a fresh random salt.
    pub fn new(password: &str) -> Self {
        let mut salt = [0u8; 4];
        // A failing system random source leaves a zero salt: still a valid hash.
        let _ = getrandom::fill(&mut salt);
        Self::with_salt(salt, password)
    }

    fn with_salt(salt: [u8; 4], password: &str) -> Self {
        let mut h = Sha256::new();
        h.update(salt);
        h.update(password.as_bytes());
        Self {
            salt,
            digest: h.finalize().into(),
        }
    }

    /// Reads the base64 form RabbitMQ exports (`password_hash` in definitions).
    pub fn from_base64(s: &str) -> Option<Self> {
        let raw = STANDARD.decode(s.trim()).ok()?;
        let (salt, digest) = raw.split_first_chunk::<4>()?;
        Some(Self {
            salt: *salt,
            digest: digest.try_into().ok()?,
        })
    }

    /// The base64 form.
    pub fn to_base64(&self) -> String {
        let mut raw = self.salt.to_vec();
        raw.extend_from_slice(&self.digest);
        STANDARD.encode(raw)
    }

    /// Whether `password` matches, compared in constant time.
    pub fn verify(&self, password: &str) -> bool {
        let other = Self::with_salt(self.salt, password);
        self.digest
            .iter()
            .zip(other.digest.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

/// A user.
#[derive(Debug, Clone)]
pub(crate) struct User {
    /// Name.
    pub(crate) name: String,
    /// Password hash (`None`: cannot log in with a password).
    pub(crate) password_hash: Option<PasswordHash>,
    /// Tags such as `administrator`, as in RabbitMQ.
    pub(crate) tags: Vec<String>,
}

/// One user's rights in one virtual host: regular expressions over resource names, as in
/// RabbitMQ (an empty pattern matches nothing).
#[derive(Debug, Clone)]
pub struct Permissions {
    configure: Pattern,
    write: Pattern,
    read: Pattern,
}

#[derive(Debug, Clone)]
struct Pattern {
    source: String,
    regex: Regex,
}

impl Pattern {
    fn new(source: &str) -> Result<Self, regex::Error> {
        // RabbitMQ treats "" as "^$".
        let regex = Regex::new(if source.is_empty() { "^$" } else { source })?;
        Ok(Self {
            source: source.to_string(),
            regex,
        })
    }
}

impl Permissions {
    /// Compiles the three patterns.
    pub fn new(configure: &str, write: &str, read: &str) -> Result<Self, regex::Error> {
        Ok(Self {
            configure: Pattern::new(configure)?,
            write: Pattern::new(write)?,
            read: Pattern::new(read)?,
        })
    }

    /// Full rights: `.*` for all three.
    pub fn all() -> Self {
        Self::new(".*", ".*", ".*").unwrap_or_else(|_| unreachable!(".* compiles"))
    }

    /// The patterns as given: configure, write, read.
    pub fn patterns(&self) -> (&str, &str, &str) {
        (
            &self.configure.source,
            &self.write.source,
            &self.read.source,
        )
    }

    fn pattern(&self, access: Access) -> &Regex {
        match access {
            Access::Configure => &self.configure.regex,
            Access::Write => &self.write.regex,
            Access::Read => &self.read.regex,
        }
    }
}

/// The three kinds of access RabbitMQ checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Access {
    Configure,
    Write,
    Read,
}

/// The kind of a resource, as RabbitMQ names it in refusals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum ResourceKind {
    Exchange,
    Queue,
}

impl ResourceKind {
    fn name(self) -> &'static str {
        match self {
            ResourceKind::Exchange => "exchange",
            ResourceKind::Queue => "queue",
        }
    }
}

/// Users and their permissions.
#[derive(Debug, Default)]
pub(crate) struct Users {
    users: HashMap<String, User>,
    /// (user, vhost) → permissions.
    permissions: HashMap<(String, String), Permissions>,
    /// Users that may only connect from a loopback address (RabbitMQ's `loopback_users`).
    pub(crate) loopback_only: Vec<String>,
}

impl Users {
    pub(crate) fn add(&mut self, user: User) {
        self.users.insert(user.name.clone(), user);
    }

    pub(crate) fn remove(&mut self, name: &str) -> bool {
        self.permissions.retain(|(u, _), _| u != name);
        self.users.remove(name).is_some()
    }

    pub(crate) fn set_permissions(&mut self, user: &str, vhost: &str, p: Permissions) {
        self.permissions
            .insert((user.to_string(), vhost.to_string()), p);
    }

    pub(crate) fn clear_vhost(&mut self, vhost: &str) {
        self.permissions.retain(|(_, v), _| v != vhost);
    }

    pub(crate) fn list(&self) -> impl Iterator<Item = &User> {
        self.users.values()
    }

    pub(crate) fn permissions(&self) -> impl Iterator<Item = (&str, &str, &Permissions)> {
        self.permissions
            .iter()
            .map(|((u, v), p)| (u.as_str(), v.as_str(), p))
    }

    /// Checks a login. Refusal reasons are for the log only: the client is told the same
    /// thing whatever went wrong, as RabbitMQ does.
    pub(crate) fn authenticate(
        &self,
        name: &str,
        password: &str,
        peer: Option<IpAddr>,
    ) -> Result<User, String> {
        let user = self
            .users
            .get(name)
            .ok_or_else(|| format!("user '{name}' - invalid credentials"))?;
        let ok = user
            .password_hash
            .as_ref()
            .is_some_and(|h| h.verify(password));
        if !ok {
            return Err(format!("user '{name}' - invalid credentials"));
        }
        if self.loopback_only.iter().any(|u| u == name) && !peer.is_none_or(|p| p.is_loopback()) {
            return Err(format!("user '{name}' can only connect via localhost"));
        }
        Ok(user.clone())
    }

    /// The user's permissions in `vhost`, or RabbitMQ's refusal of the vhost.
    pub(crate) fn vhost_access(
        &self,
        user: &str,
        vhost: &str,
    ) -> Result<Permissions, AmqpException> {
        self.permissions
            .get(&(user.to_string(), vhost.to_string()))
            .cloned()
            .ok_or_else(|| {
                AmqpException::connection(
                    ReplyCode::NotAllowed,
                    format!("access to vhost '{vhost}' refused for user '{user}'"),
                )
            })
    }
}

/// Checks one access to a named resource: RabbitMQ's 403 ACCESS_REFUSED if the pattern does
/// not match. The default exchange is checked under the name `amq.default`, as RabbitMQ does.
pub(crate) fn check(
    permissions: &Permissions,
    user: &str,
    vhost: &str,
    access: Access,
    kind: ResourceKind,
    name: &[u8],
) -> Result<(), AmqpException> {
    let name = String::from_utf8_lossy(name);
    let name = if kind == ResourceKind::Exchange && name.is_empty() {
        "amq.default".into()
    } else {
        name
    };
    if permissions.pattern(access).is_match(&name) {
        Ok(())
    } else {
        Err(AmqpException::channel(
            ReplyCode::AccessRefused,
            format!(
                "access to {} '{name}' in vhost '{vhost}' refused for user '{user}'",
                kind.name()
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rabbitmq_hashes_verify() {
        // `rabbitmqctl hash_password guest` style output for "guest" with a fixed salt.
        let h = PasswordHash::with_salt([1, 2, 3, 4], "guest");
        let back = PasswordHash::from_base64(&h.to_base64()).unwrap();
        assert!(back.verify("guest"));
        assert!(!back.verify("guesT"));
        assert_eq!(h.to_base64().len(), 48);
    }

    #[test]
    fn empty_pattern_matches_nothing_but_the_empty_name() {
        let p = Permissions::new("", "^amq\\.default$", ".*").unwrap();
        assert!(check(&p, "u", "/", Access::Configure, ResourceKind::Queue, b"q").is_err());
        assert!(check(&p, "u", "/", Access::Write, ResourceKind::Exchange, b"").is_ok());
        let e = check(&p, "u", "/", Access::Write, ResourceKind::Queue, b"q").unwrap_err();
        assert_eq!(
            e.reply_text(),
            "ACCESS_REFUSED - access to queue 'q' in vhost '/' refused for user 'u'"
        );
    }
}
