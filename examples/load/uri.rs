//! `amqp://user:password@host:port/vhost` URIs, as RabbitMQ's URI specification reads them.
//!
//! - every part is optional: `amqp://` alone means `guest:guest@localhost:5672`, vhost `/`;
//! - user, password and vhost are percent-decoded (`%2f` is `/`);
//! - no path at all means the default vhost `/`; a path of just `/` means the vhost `""`;
//! - an IPv6 host is written in brackets: `amqp://[::1]:5672`;
//! - a query string (`?heartbeat=10`) is accepted and ignored (the tool has flags for that);
//! - `amqps` (TLS) is refused: the load tool speaks plain TCP only.

use std::fmt;

/// Where and as whom to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AmqpUri {
    /// Host name or address (without brackets for IPv6).
    pub(crate) host: String,
    /// TCP port.
    pub(crate) port: u16,
    /// User name for PLAIN authentication.
    pub(crate) user: String,
    /// Password for PLAIN authentication.
    pub(crate) password: String,
    /// Virtual host.
    pub(crate) vhost: String,
}

impl AmqpUri {
    /// `host:port` for `TcpStream::connect` (brackets around IPv6 addresses).
    pub(crate) fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Shown in reports: everything but the password.
impl fmt::Display for AmqpUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "amqp://{}@{}/{}", self.user, self.address(), self.vhost)
    }
}

/// Parses an `amqp://` URI; the error says what is wrong with it.
pub(crate) fn parse(uri: &str) -> Result<AmqpUri, String> {
    let rest = if let Some(rest) = strip_prefix_ci(uri, "amqp://") {
        rest
    } else if strip_prefix_ci(uri, "amqps://").is_some() {
        return Err("amqps:// (TLS) is not supported by the load tool".into());
    } else {
        return Err(format!("{uri:?}: expected a URI starting with amqp://"));
    };
    let rest = rest
        .split_once(['?', '#'])
        .map_or(rest, |(before, _)| before);
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    };
    let (userinfo, hostport) = match authority.rfind('@') {
        Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
        None => (None, authority),
    };
    let (user, password) = match userinfo {
        None => ("guest".to_owned(), "guest".to_owned()),
        Some(info) => match info.split_once(':') {
            Some((u, p)) => (decode(u)?, decode(p)?),
            None => (decode(info)?, "guest".to_owned()),
        },
    };
    let (host, port) = split_host_port(hostport)?;
    let vhost = match path {
        None => "/".to_owned(),
        Some(p) => {
            if p.contains('/') {
                return Err(format!(
                    "vhost {p:?} contains an unescaped '/'; write it as %2f"
                ));
            }
            decode(p)?
        }
    };
    Ok(AmqpUri {
        host,
        port,
        user,
        password,
        vhost,
    })
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    if head.eq_ignore_ascii_case(prefix) {
        s.get(prefix.len()..)
    } else {
        None
    }
}

fn split_host_port(hostport: &str) -> Result<(String, u16), String> {
    let (host, port) = if let Some(inner) = hostport.strip_prefix('[') {
        let (host, after) = inner
            .split_once(']')
            .ok_or_else(|| format!("{hostport:?}: missing ']' after an IPv6 address"))?;
        match after {
            "" => (host, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => return Err(format!("{hostport:?}: expected ':port' after ']'")),
            },
        }
    } else {
        match hostport.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (hostport, None),
        }
    };
    let port = match port {
        None | Some("") => 5672,
        Some(p) => p
            .parse::<u16>()
            .map_err(|_| format!("{p:?} is not a valid port"))?,
    };
    let host = if host.is_empty() {
        "localhost".to_owned()
    } else {
        decode(host)?
    };
    Ok((host, port))
}

/// Percent-decoding; the result must be UTF-8.
fn decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("{s:?}: bad percent-escape"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{s:?}: percent-escapes are not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(host: &str, port: u16, user: &str, password: &str, vhost: &str) -> AmqpUri {
        AmqpUri {
            host: host.into(),
            port,
            user: user.into(),
            password: password.into(),
            vhost: vhost.into(),
        }
    }

    #[test]
    fn full_uri() {
        assert_eq!(
            parse("amqp://guest:guest@127.0.0.1:5672/%2f").unwrap(),
            uri("127.0.0.1", 5672, "guest", "guest", "/")
        );
        assert_eq!(
            parse("AMQP://u%40x:p%3Aw@host.example:5673/my%20vhost").unwrap(),
            uri("host.example", 5673, "u@x", "p:w", "my vhost")
        );
    }

    #[test]
    fn defaults() {
        assert_eq!(
            parse("amqp://").unwrap(),
            uri("localhost", 5672, "guest", "guest", "/")
        );
        assert_eq!(
            parse("amqp://broker").unwrap(),
            uri("broker", 5672, "guest", "guest", "/")
        );
        // Just "/" names the empty vhost, as in RabbitMQ's URI spec.
        assert_eq!(
            parse("amqp://broker/").unwrap(),
            uri("broker", 5672, "guest", "guest", "")
        );
        assert_eq!(
            parse("amqp://alice@broker:1234/v?heartbeat=10").unwrap(),
            uri("broker", 1234, "alice", "guest", "v")
        );
        assert_eq!(
            parse("amqp://a:@:7/x").unwrap(),
            uri("localhost", 7, "a", "", "x")
        );
    }

    #[test]
    fn ipv6() {
        let u = parse("amqp://[::1]:5673/%2F").unwrap();
        assert_eq!(u, uri("::1", 5673, "guest", "guest", "/"));
        assert_eq!(u.address(), "[::1]:5673");
        assert_eq!(parse("amqp://[fe80::1]").unwrap().port, 5672);
    }

    #[test]
    fn errors() {
        assert!(parse("http://x").is_err());
        assert!(parse("amqps://x").is_err());
        assert!(parse("amqp://x:99999").is_err());
        assert!(parse("amqp://x:port").is_err());
        assert!(parse("amqp://x/a/b").is_err());
        assert!(parse("amqp://x/%zz").is_err());
        assert!(parse("amqp://x/%2").is_err());
        assert!(parse("amqp://x/%ff").is_err());
        assert!(parse("amqp://[::1/").is_err());
        assert!(parse("amqp://[::1]x/").is_err());
        // Multi-byte input never panics on slicing.
        assert!(parse("ämqp://x").is_err());
        assert!(parse("amqp://é:ü@ö/ß").is_ok());
    }

    #[test]
    fn display_hides_the_password() {
        let u = parse("amqp://me:secret@h:1/v").unwrap();
        assert_eq!(u.to_string(), "amqp://me@h:1/v");
    }
}
