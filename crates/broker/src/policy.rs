//! Policies and operator policies: kept per virtual host, persisted, and applied to the queues
//! and exchanges whose names they match, when those are declared and whenever a policy is set
//! or cleared. What a definition may say and how it combines with a queue's arguments are
//! `warren_queue::policy`'s rules; this module matches names (regular expressions) and
//! applies the result.

use crate::broker::Error;
use serde_json::Value;
use std::sync::Arc;
use warren_queue::policy::{ApplyTo, Definition, PolicyKind, Target, choose};

/// A policy or operator policy, as set.
#[derive(Debug, Clone)]
pub(crate) struct Policy {
    pub(crate) vhost: String,
    pub(crate) name: String,
    pub(crate) kind: PolicyKind,
    /// The regular expression over names.
    pub(crate) pattern: String,
    pub(crate) apply_to: ApplyTo,
    pub(crate) priority: i64,
    /// The definition: a JSON object, as text (what is stored and exported).
    pub(crate) definition: String,
    parsed: Definition,
    regex: regex::Regex,
}

impl Policy {
    /// A policy, checked as RabbitMQ checks `set_policy`: the pattern must be a regular
    /// expression, `apply_to` one RabbitMQ knows, the definition an object of known keys with
    /// valid values. The error names the field at fault (`pattern`, `apply-to`, `definition`)
    /// and gives RabbitMQ's text.
    pub(crate) fn new(
        vhost: &str,
        name: &str,
        kind: PolicyKind,
        pattern: &str,
        apply_to: &str,
        priority: i64,
        definition: &str,
    ) -> Result<Policy, (&'static str, String)> {
        let regex = regex::Regex::new(pattern).map_err(|e| {
            (
                "pattern",
                format!("pattern should be regular expression but is invalid: {e}"),
            )
        })?;
        let apply_to = ApplyTo::parse(apply_to).map_err(|e| ("apply-to", e))?;
        let bad = |why: String| ("definition", why);
        let json: Value = serde_json::from_str(definition)
            .map_err(|e| bad(format!("the definition is not JSON: {e}")))?;
        let Value::Object(map) = &json else {
            return Err(bad(format!(
                "the definition must be a JSON object, got {json}"
            )));
        };
        let table = crate::definitions::table_from_json(map, 0).map_err(bad)?;
        let parsed = Definition::parse(&table, kind).map_err(bad)?;
        Ok(Policy {
            vhost: vhost.to_string(),
            name: name.to_string(),
            kind,
            pattern: pattern.to_string(),
            apply_to,
            priority,
            definition: json.to_string(),
            parsed,
            regex,
        })
    }

    fn matches(&self, name: &[u8], target: Target) -> bool {
        self.apply_to.applies(target) && self.regex.is_match(&String::from_utf8_lossy(name))
    }
}

/// What applies to one queue or exchange: the policy and operator policy that won, and their
/// combined definition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Applied {
    /// The policy's name.
    pub(crate) policy: Option<String>,
    /// The operator policy's name.
    pub(crate) operator_policy: Option<String>,
    /// The policy, with the operator policy's limits over it.
    pub(crate) definition: Option<Definition>,
}

/// A virtual host's policies of both kinds.
#[derive(Debug, Default, Clone)]
pub(crate) struct Policies {
    items: Vec<Arc<Policy>>,
}

impl Policies {
    /// Adds or replaces (by kind and name).
    pub(crate) fn set(&mut self, p: Policy) {
        self.items
            .retain(|q| (q.kind, &q.name) != (p.kind, &p.name));
        self.items.push(Arc::new(p));
    }

    /// Whether one of that kind and name exists.
    pub(crate) fn has(&self, kind: PolicyKind, name: &str) -> bool {
        self.items
            .iter()
            .any(|q| (q.kind, q.name.as_str()) == (kind, name))
    }

    /// Removes one; returns whether it existed.
    pub(crate) fn clear(&mut self, kind: PolicyKind, name: &str) -> bool {
        let before = self.items.len();
        self.items
            .retain(|q| (q.kind, q.name.as_str()) != (kind, name));
        self.items.len() != before
    }

    /// Those of one kind, by name.
    pub(crate) fn list(&self, kind: PolicyKind) -> Vec<Arc<Policy>> {
        let mut v: Vec<Arc<Policy>> = self
            .items
            .iter()
            .filter(|p| p.kind == kind)
            .cloned()
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    fn winner(&self, kind: PolicyKind, name: &[u8], target: Target) -> Option<&Arc<Policy>> {
        choose(
            self.items
                .iter()
                .filter(|p| p.kind == kind && p.matches(name, target)),
            |p| (p.priority, p.name.as_str()),
        )
    }

    /// What applies to the queue or exchange `name`.
    pub(crate) fn applied(&self, name: &[u8], target: Target) -> Applied {
        let policy = self.winner(PolicyKind::Policy, name, target);
        let operator = self.winner(PolicyKind::Operator, name, target);
        let definition = match (policy, operator) {
            (None, None) => None,
            (Some(p), None) => Some(p.parsed.clone()),
            (p, Some(o)) => Some(
                p.map(|p| p.parsed.clone())
                    .unwrap_or_default()
                    .with_operator(&o.parsed),
            ),
        };
        Applied {
            policy: policy.map(|p| p.name.clone()),
            operator_policy: operator.map(|p| p.name.clone()),
            definition,
        }
    }
}

/// A policy as [`crate::BrokerHandle::set_policy`] takes it and
/// [`crate::BrokerHandle::policies`] lists it.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyInfo {
    /// The virtual host (ignored by `set_policy`, which takes it apart).
    pub vhost: String,
    /// Its name, unique per virtual host and kind.
    pub name: String,
    /// A regular expression: the policy applies to queues and exchanges whose whole name or
    /// part of it matches (anchor it with `^...$` for whole names, as in RabbitMQ).
    pub pattern: String,
    /// `all`, `queues`, `exchanges` (and `classic_queues`, `quorum_queues`, `streams`).
    pub apply_to: String,
    /// Of several matching policies, only the one of the highest priority applies.
    pub priority: i64,
    /// The definition, a JSON object: `{"max-length": 1000, "dead-letter-exchange": "dlx"}`.
    pub definition: String,
}

impl PolicyInfo {
    /// A policy that applies to all, priority 0.
    pub fn new(name: &str, pattern: &str, definition: &str) -> Self {
        Self {
            vhost: String::new(),
            name: name.to_string(),
            pattern: pattern.to_string(),
            apply_to: "all".to_string(),
            priority: 0,
            definition: definition.to_string(),
        }
    }

    /// What it applies to: `all`, `queues` or `exchanges`.
    pub fn apply_to(mut self, apply_to: &str) -> Self {
        self.apply_to = apply_to.to_string();
        self
    }

    /// Its priority.
    pub fn priority(mut self, priority: i64) -> Self {
        self.priority = priority;
        self
    }

    pub(crate) fn of(p: &Policy) -> Self {
        Self {
            vhost: p.vhost.clone(),
            name: p.name.clone(),
            pattern: p.pattern.clone(),
            apply_to: p.apply_to.as_str().to_string(),
            priority: p.priority,
            definition: p.definition.clone(),
        }
    }

    pub(crate) fn check(&self, vhost: &str, kind: PolicyKind) -> Result<Policy, Error> {
        Policy::new(
            vhost,
            &self.name,
            kind,
            &self.pattern,
            &self.apply_to,
            self.priority,
            &self.definition,
        )
        .map_err(|(_, why)| Error::Policy(why))
    }
}
