//! Uses only `warren-routing`: builds a topology from a small script and routes messages
//! through it, printing which queues each message reaches. No broker, no network.
//!
//! ```text
//! cargo run --example route-table -- script.txt      # or the script on stdin
//! ```
//!
//! Script lines (a line starting with `;` is a comment):
//!
//! ```text
//! exchange <name> <type> [ae=<alternate>] [internal] [auto-delete]
//! queue <name>
//! bind <source> <queue> <key> [<arg>=<value> ...]       # value: text, or an integer
//! bind-exchange <source> <destination> <key> [<arg>=<value> ...]
//! unbind <source> <queue> <key> [<arg>=<value> ...]
//! delete-queue <name>
//! delete-exchange <name>
//! route <exchange> <routing-key> [<header>=<value> ...]  # CC=a,b and BCC=a,b give arrays
//! ```
//!
//! Use `""` for an empty name or key.

use std::io::Read;
use warren_routing::codec::{BasicProperties, FieldArray, FieldTable, FieldValue, ShortStr};
use warren_routing::{BindingSpec, ExchangeSpec, Routed, Topology};

fn main() {
    let script = match std::env::args().nth(1) {
        Some(path) => std::fs::read_to_string(&path).unwrap_or_else(|e| {
            eprintln!("cannot read {path}: {e}");
            std::process::exit(2)
        }),
        None => {
            let mut s = String::new();
            if let Err(e) = std::io::stdin().read_to_string(&mut s) {
                eprintln!("cannot read stdin: {e}");
                std::process::exit(2)
            }
            s
        }
    };
    let mut failed = false;
    for line in run(&script) {
        failed |= line.starts_with("error");
        println!("{line}");
    }
    std::process::exit(i32::from(failed));
}

/// Runs a script and returns one output line per `route` (and per failed command).
fn run(script: &str) -> Vec<String> {
    // Any fixed seed will do for a demonstration; a server passes a random one.
    let mut t = Topology::new("/", 0x5eed);
    let mut out = Vec::new();
    let mut routed = Routed::new();
    for (n, raw) in script.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with(';') {
            continue;
        }
        let words: Vec<&str> = line
            .split_whitespace()
            .map(|w| if w == "\"\"" { "" } else { w })
            .collect();
        let result = step(&mut t, &words, &mut routed);
        match result {
            Ok(Some(s)) => out.push(s),
            Ok(None) => {}
            Err(e) => out.push(format!("error on line {}: {e}", n + 1)),
        }
    }
    out
}

fn name(s: &str) -> ShortStr {
    ShortStr::from(s.to_owned())
}

fn table(pairs: &[&str]) -> Result<FieldTable, String> {
    let mut t = FieldTable::new();
    for p in pairs {
        let (k, v) = p
            .split_once('=')
            .ok_or(format!("expected key=value, got {p}"))?;
        let value = if k == "CC" || k == "BCC" {
            FieldValue::Array(FieldArray(
                v.split(',')
                    .map(|s| FieldValue::LongStr(s.to_owned().into()))
                    .collect(),
            ))
        } else {
            match v.parse::<i64>() {
                Ok(i) => FieldValue::I64(i),
                Err(_) => FieldValue::LongStr(v.to_owned().into()),
            }
        };
        t.insert(name(k), value);
    }
    Ok(t)
}

fn step(t: &mut Topology, w: &[&str], routed: &mut Routed) -> Result<Option<String>, String> {
    let err = |e: warren_routing::RoutingError| e.exception().reply_text();
    match w {
        ["exchange", x, kind, flags @ ..] => {
            let mut spec = ExchangeSpec::new(name(x), name(kind));
            for f in flags {
                match *f {
                    "internal" => spec.internal = true,
                    "auto-delete" => spec.auto_delete = true,
                    f => match f.strip_prefix("ae=") {
                        Some(ae) => spec.arguments.insert(
                            "alternate-exchange",
                            FieldValue::LongStr(ae.to_owned().into()),
                        ),
                        None => return Err(format!("unknown flag {f}")),
                    },
                }
            }
            t.declare_exchange(spec).map_err(err)?;
            Ok(None)
        }
        ["queue", q] => {
            t.declare_queue(&name(q));
            Ok(None)
        }
        [
            op @ ("bind" | "bind-exchange" | "unbind"),
            s,
            d,
            key,
            args @ ..,
        ] => {
            let spec = match *op {
                "bind-exchange" => BindingSpec::exchange(name(s), name(d), name(key)),
                _ => BindingSpec::queue(name(s), name(d), name(key)),
            }
            .with_arguments(table(args)?);
            if *op == "unbind" {
                let r = t.unbind(&spec).map_err(err)?;
                if !r.exchanges.is_empty() {
                    return Ok(Some(format!("auto-deleted {:?}", r.exchanges)));
                }
            } else {
                t.bind(&spec).map_err(err)?;
            }
            Ok(None)
        }
        ["delete-queue", q] => {
            let id = t.check_queue(&name(q)).map_err(err)?;
            let r = t.delete_queue(id);
            Ok((!r.exchanges.is_empty()).then(|| format!("auto-deleted {:?}", r.exchanges)))
        }
        ["delete-exchange", x] => {
            t.delete_exchange(&name(x), false).map_err(err)?;
            Ok(None)
        }
        ["route", x, key, headers @ ..] => {
            let props = BasicProperties {
                headers: (!headers.is_empty()).then(|| table(headers)).transpose()?,
                ..BasicProperties::default()
            };
            t.route(x.as_bytes(), key.as_bytes(), &props, routed)
                .map_err(err)?;
            let mut names: Vec<String> = routed
                .queues()
                .iter()
                .filter_map(|q| t.queue_name(*q).map(ToString::to_string))
                .collect();
            names.sort();
            Ok(Some(if routed.is_unroutable() {
                format!("{x} {key:?}: unroutable")
            } else {
                format!("{x} {key:?}: {}", names.join(" "))
            }))
        }
        _ => Err(format!("cannot parse: {}", w.join(" "))),
    }
}

#[cfg(test)]
mod tests {
    use super::run;

    #[test]
    fn a_script_routes_as_rabbitmq_would() {
        let out = run(r#"
            ; a topic exchange whose unrouted messages go to a fanout exchange
            exchange logs topic ae=unrouted
            exchange unrouted fanout
            queue errors
            queue all
            queue lost
            bind logs errors *.error
            bind logs all #
            bind unrouted lost ""
            route logs db.error
            route logs ""
            exchange h headers
            queue eu
            bind h eu "" x-match=all region=eu
            route h "" region=eu
            route h "" region=us
            exchange d direct ae=unrouted
            route d nowhere
            route nosuch k
        "#);
        assert_eq!(
            out,
            vec![
                "logs \"db.error\": all errors",
                "logs \"\": all",
                "h \"\": eu",
                "h \"\": unroutable",
                "d \"nowhere\": lost",
                "error on line 20: NOT_FOUND - no exchange 'nosuch' in vhost '/'",
            ]
        );
    }
}
