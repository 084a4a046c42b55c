//! `cargo xtask codegen`: generates `crates/amqp-codec/src/generated.rs` and the codec's
//! property-test strategies `crates/amqp-codec/tests/it/gen_strategies.rs` from RabbitMQ's
//! `amqp-rabbitmq-0.9.1.json`.
//!
//! `generated.rs`: the `ReplyCode` enum (from the spec's constants), one struct per method, the
//! `Method` enum with ids, names and flags, argument decoding and encoding (bits packed as the
//! spec says), and `BasicProperties` with its property-flag codec.
//!
//! `gen_strategies.rs`: a proptest strategy per method struct with every field random, the
//! list of them by method name, and `any_method()`. The strategies for strings and tables are
//! hand-written in the test module `properties.rs`, which the generated file imports.
//!
//! Both texts are passed through rustfmt so that the committed files are formatted and the
//! `--check` comparison is exact.

use serde_json::Value;
use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

pub(crate) const SPEC: &str = "crates/amqp-codec/spec/amqp-rabbitmq-0.9.1.json";
pub(crate) const OUT: &str = "crates/amqp-codec/src/generated.rs";
pub(crate) const OUT_STRATEGIES: &str = "crates/amqp-codec/tests/it/gen_strategies.rs";

/// Writes the generated files, or with `check` fails if any differs from the committed one.
///
/// Files whose text is already up to date are not rewritten, so their modification time (and
/// cargo's rebuilds) stay as they are.
pub(crate) fn run(root: &Path, check: bool) -> Result<(), String> {
    let mut stale = Vec::new();
    for (path, text) in generate(root)? {
        let out = root.join(path);
        let current = match std::fs::read_to_string(&out) {
            Ok(current) => Some(current),
            Err(e) if check || e.kind() != std::io::ErrorKind::NotFound => {
                return Err(format!("{path}: {e}"));
            }
            Err(_) => None,
        };
        if current.as_deref() == Some(text.as_str()) {
            continue;
        }
        if check {
            stale.push(path);
        } else {
            std::fs::write(&out, text).map_err(|e| format!("{path}: {e}"))?;
        }
    }
    if stale.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "stale generated code in {}: run `cargo xtask codegen` and commit the result",
            stale.join(", ")
        ))
    }
}

/// Every generated file: its path relative to the workspace root and its formatted text.
pub(crate) fn generate(root: &Path) -> Result<Vec<(&'static str, String)>, String> {
    let spec = std::fs::read_to_string(root.join(SPEC)).map_err(|e| format!("{SPEC}: {e}"))?;
    let spec: Value = serde_json::from_str(&spec).map_err(|e| format!("{SPEC}: {e}"))?;
    let generator = Generator::new(&spec)?;
    Ok(vec![
        (OUT, rustfmt(&generator.emit()?)?),
        (OUT_STRATEGIES, rustfmt(&generator.emit_strategies())?),
    ])
}

fn rustfmt(src: &str) -> Result<String, String> {
    use std::io::Write;
    let mut child = Command::new("rustfmt")
        .args(["--edition", "2024", "--emit", "stdout"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("running rustfmt: {e}"))?;
    child
        .stdin
        .take()
        .ok_or("rustfmt stdin")?
        .write_all(src.as_bytes())
        .map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err("rustfmt failed on generated code".into());
    }
    String::from_utf8(out.stdout).map_err(|e| e.to_string())
}

/// An argument or property type, resolved through the spec's domains.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ty {
    Bit,
    Octet,
    Short,
    Long,
    LongLong,
    ShortStr,
    LongStr,
    Table,
    Timestamp,
}

impl Ty {
    fn parse(s: &str) -> Result<Ty, String> {
        Ok(match s {
            "bit" => Ty::Bit,
            "octet" => Ty::Octet,
            "short" => Ty::Short,
            "long" => Ty::Long,
            "longlong" => Ty::LongLong,
            "shortstr" => Ty::ShortStr,
            "longstr" => Ty::LongStr,
            "table" => Ty::Table,
            "timestamp" => Ty::Timestamp,
            other => return Err(format!("unknown AMQP type {other}")),
        })
    }

    fn rust(self) -> &'static str {
        match self {
            Ty::Bit => "bool",
            Ty::Octet => "u8",
            Ty::Short => "u16",
            Ty::Long => "u32",
            Ty::LongLong | Ty::Timestamp => "u64",
            Ty::ShortStr => "ShortStr",
            Ty::LongStr => "LongStr",
            Ty::Table => "FieldTable",
        }
    }

    fn read(self) -> &'static str {
        match self {
            Ty::Bit => unreachable_bit(),
            Ty::Octet => "r.octet()?",
            Ty::Short => "r.short()?",
            Ty::Long => "r.long()?",
            Ty::LongLong => "r.longlong()?",
            Ty::Timestamp => "r.timestamp()?",
            Ty::ShortStr => "r.shortstr()?",
            Ty::LongStr => "r.longstr()?",
            Ty::Table => "r.table()?",
        }
    }

    fn write(self, expr: &str) -> String {
        match self {
            Ty::Bit => unreachable_bit().into(),
            Ty::Octet => format!("put_octet(buf, {expr});"),
            Ty::Short => format!("put_short(buf, {expr});"),
            Ty::Long => format!("put_long(buf, {expr});"),
            Ty::LongLong | Ty::Timestamp => format!("put_longlong(buf, {expr});"),
            Ty::ShortStr => format!("put_shortstr(buf, &{expr});"),
            Ty::LongStr => format!("put_longstr(buf, &{expr});"),
            Ty::Table => format!("put_table(buf, &{expr});"),
        }
    }
}

fn unreachable_bit() -> &'static str {
    // Bits are packed by the caller; never read or written one at a time.
    "/* bit */"
}

struct Field {
    name: String,
    ty: Ty,
    default: Option<Value>,
}

struct MethodDef {
    class_name: String,
    class_id: u64,
    name: String,
    id: u64,
    synchronous: bool,
    content: bool,
    fields: Vec<Field>,
}

struct Generator<'a> {
    spec: &'a Value,
    methods: Vec<MethodDef>,
}

fn camel(s: &str) -> String {
    s.split(['-', ' ', '.'])
        .filter(|w| !w.is_empty())
        .map(|w| {
            let mut c = w.chars();
            match c.next() {
                Some(f) => f.to_ascii_uppercase().to_string() + c.as_str(),
                None => String::new(),
            }
        })
        .collect()
}

fn snake(s: &str) -> String {
    let s = s.replace(['-', ' '], "_");
    // `type` is a keyword: the exchange type and the `type` property become `kind`.
    if s == "type" { "kind".into() } else { s }
}

impl<'a> Generator<'a> {
    fn new(spec: &'a Value) -> Result<Self, String> {
        let domains: Vec<(String, String)> = spec["domains"]
            .as_array()
            .ok_or("domains")?
            .iter()
            .filter_map(|d| Some((d[0].as_str()?.to_string(), d[1].as_str()?.to_string())))
            .collect();
        let resolve = |arg: &Value| -> Result<Ty, String> {
            if let Some(t) = arg["type"].as_str() {
                return Ty::parse(t);
            }
            let d = arg["domain"]
                .as_str()
                .ok_or("argument without type or domain")?;
            let base = domains
                .iter()
                .find(|(n, _)| n == d)
                .map(|(_, t)| t.as_str())
                .ok_or(format!("unknown domain {d}"))?;
            Ty::parse(base)
        };
        let mut methods = Vec::new();
        let mut classes: Vec<&Value> = spec["classes"]
            .as_array()
            .ok_or("classes")?
            .iter()
            .collect();
        classes.sort_by_key(|c| c["id"].as_u64());
        for class in classes {
            let class_name = class["name"].as_str().ok_or("class name")?.to_string();
            let class_id = class["id"].as_u64().ok_or("class id")?;
            for m in class["methods"].as_array().ok_or("methods")? {
                let mut fields = Vec::new();
                for a in m["arguments"].as_array().ok_or("arguments")? {
                    fields.push(Field {
                        name: snake(a["name"].as_str().ok_or("argument name")?),
                        ty: resolve(a)?,
                        default: a.get("default-value").cloned(),
                    });
                }
                methods.push(MethodDef {
                    class_name: class_name.clone(),
                    class_id,
                    name: m["name"].as_str().ok_or("method name")?.to_string(),
                    id: m["id"].as_u64().ok_or("method id")?,
                    synchronous: m["synchronous"].as_bool().unwrap_or(false),
                    content: m["content"].as_bool().unwrap_or(false),
                    fields,
                });
            }
        }
        Ok(Self { spec, methods })
    }

    fn emit(&self) -> Result<String, String> {
        let mut o = String::new();
        o.push_str(
            "// @generated by `cargo xtask codegen` from spec/amqp-rabbitmq-0.9.1.json.\n\
             // Do not edit: change the generator (xtask/src/codegen.rs) and regenerate.\n\n\
             use crate::wire::{\n\
             Reader, put_long, put_longlong, put_longstr, put_octet, put_short, put_shortstr, put_table,\n\
             };\n\
             use crate::{CodecError, FieldTable, LongStr, ShortStr};\n\
             use bytes::BytesMut;\n\n",
        );
        self.emit_constants(&mut o)?;
        for m in &self.methods {
            self.emit_struct(&mut o, m);
        }
        self.emit_enum(&mut o);
        self.emit_properties(&mut o)?;
        Ok(o)
    }

    fn emit_constants(&self, o: &mut String) -> Result<(), String> {
        let consts = self.spec["constants"].as_array().ok_or("constants")?;
        let mut codes = Vec::new();
        for c in consts {
            let name = c["name"].as_str().ok_or("constant name")?;
            let value = c["value"].as_u64().ok_or("constant value")?;
            match c["class"].as_str() {
                Some(class) => codes.push((name, value, class == "hard-error")),
                None if name.starts_with("REPLY-") => codes.push((name, value, false)),
                // The codec enforces the 0-9-1 minimum frame size (4096, as RabbitMQ 3.x), not
                // the 8192 of RabbitMQ 4.1's file: see `connection::FRAME_MIN_SIZE`.
                None if name == "FRAME-MIN-SIZE" => {}
                None => {
                    // Frame types and the frame-end octet: single octets on the wire.
                    let value =
                        u8::try_from(value).map_err(|_| format!("{name} is not an octet"))?;
                    let _ = writeln!(
                        o,
                        "/// `{name}` from the specification.\npub const {}: u8 = {value:#04x};",
                        name.replace('-', "_")
                    );
                }
            }
        }
        o.push_str(
            "\n/// AMQP reply codes, as RabbitMQ's specification file lists them.\n\
             #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]\n#[non_exhaustive]\npub enum ReplyCode {\n",
        );
        for (name, value, hard) in &codes {
            let kind = if *hard {
                "hard error (connection)"
            } else {
                "soft error (channel)"
            };
            let kind = if *value == 200 { "success" } else { kind };
            let _ = writeln!(
                o,
                "/// {value} `{}`: {kind}.\n{} = {value},",
                name.replace('-', "_"),
                camel(&name.to_lowercase())
            );
        }
        o.push_str("}\n\nimpl ReplyCode {\n/// The numeric code.\npub fn code(self) -> u16 { self as u16 }\n\n");
        o.push_str("/// The code's name as RabbitMQ writes it at the start of a reply text, e.g. `NOT_FOUND`.\npub fn name(self) -> &'static str {\nmatch self {\n");
        for (name, _, _) in &codes {
            let _ = writeln!(
                o,
                "ReplyCode::{} => \"{}\",",
                camel(&name.to_lowercase()),
                name.replace('-', "_")
            );
        }
        o.push_str("}\n}\n\n/// Whether the specification classes this code as a hard (connection) error.\npub fn is_hard_error(self) -> bool {\nmatches!(self, ");
        let hard: Vec<String> = codes
            .iter()
            .filter(|c| c.2)
            .map(|c| format!("ReplyCode::{}", camel(&c.0.to_lowercase())))
            .collect();
        o.push_str(&hard.join(" | "));
        o.push_str(")\n}\n\n/// The code for a number, if the specification names it.\npub fn from_code(code: u16) -> Option<ReplyCode> {\nSome(match code {\n");
        for (name, value, _) in &codes {
            let _ = writeln!(o, "{value} => ReplyCode::{},", camel(&name.to_lowercase()));
        }
        o.push_str("_ => return None,\n})\n}\n}\n\n");
        Ok(())
    }

    fn struct_name(m: &MethodDef) -> String {
        camel(&format!("{}-{}", m.class_name, m.name))
    }

    fn default_expr(f: &Field) -> String {
        match (&f.default, f.ty) {
            (Some(Value::Bool(b)), _) => b.to_string(),
            (Some(Value::Number(n)), _) => n.to_string(),
            (Some(Value::String(s)), Ty::ShortStr) if !s.is_empty() => {
                format!("ShortStr::from_static({s:?})")
            }
            (Some(Value::String(s)), Ty::LongStr) if !s.is_empty() => {
                format!("LongStr::from_static({s:?})")
            }
            (_, Ty::ShortStr) => "ShortStr::new()".into(),
            (_, Ty::LongStr) => "LongStr::new()".into(),
            (_, Ty::Table) => "FieldTable::new()".into(),
            (_, Ty::Bit) => "false".into(),
            _ => "0".into(),
        }
    }

    fn emit_struct(&self, o: &mut String, m: &MethodDef) {
        let name = Self::struct_name(m);
        let _ = writeln!(
            o,
            "/// `{}.{}` (class {}, method {}){}{}.",
            m.class_name,
            m.name,
            m.class_id,
            m.id,
            if m.synchronous { ", synchronous" } else { "" },
            if m.content { ", carries content" } else { "" }
        );
        o.push_str("#[derive(Debug, Clone, PartialEq)]\n");
        let _ = writeln!(o, "pub struct {name} {{");
        for f in &m.fields {
            let _ = writeln!(
                o,
                "/// `{}`\npub {}: {},",
                f.name.replace('_', "-"),
                f.name,
                f.ty.rust()
            );
        }
        o.push_str("}\n\n");
        let _ = writeln!(
            o,
            "impl Default for {name} {{\nfn default() -> Self {{\nSelf {{"
        );
        for f in &m.fields {
            let _ = writeln!(o, "{}: {},", f.name, Self::default_expr(f));
        }
        o.push_str("}\n}\n}\n\n");
        let _ = writeln!(o, "impl {name} {{");
        // decode
        let _ = writeln!(
            o,
            "fn decode_args(r: &mut Reader<'_>) -> Result<Self, CodecError> {{"
        );
        if m.fields.is_empty() {
            o.push_str("let _ = r;\n");
        }
        let mut i = 0;
        while i < m.fields.len() {
            if m.fields[i].ty == Ty::Bit {
                let start = i;
                while i < m.fields.len() && m.fields[i].ty == Ty::Bit && i - start < 8 {
                    i += 1;
                }
                let _ = writeln!(o, "let bits_{start} = r.octet()?;");
                for (k, f) in m.fields[start..i].iter().enumerate() {
                    let _ = writeln!(o, "let {} = bits_{start} & {:#04x} != 0;", f.name, 1u8 << k);
                }
            } else {
                let f = &m.fields[i];
                // RabbitMQ rejects short strings that are not UTF-8 in the arguments of methods
                // without content; it does not look at those of content-carrying ones.
                let read = match f.ty {
                    Ty::ShortStr if !m.content => "r.shortstr_utf8()?",
                    ty => ty.read(),
                };
                let _ = writeln!(o, "let {} = {read};", f.name);
                i += 1;
            }
        }
        let names: Vec<&str> = m.fields.iter().map(|f| f.name.as_str()).collect();
        let _ = writeln!(o, "Ok(Self {{ {} }})\n}}\n", names.join(", "));
        // encode
        let _ = writeln!(o, "fn encode_args(&self, buf: &mut BytesMut) {{");
        if m.fields.is_empty() {
            o.push_str("let _ = buf;\n");
        }
        let mut i = 0;
        while i < m.fields.len() {
            if m.fields[i].ty == Ty::Bit {
                let start = i;
                while i < m.fields.len() && m.fields[i].ty == Ty::Bit && i - start < 8 {
                    i += 1;
                }
                let parts: Vec<String> = m.fields[start..i]
                    .iter()
                    .enumerate()
                    .map(|(k, f)| match k {
                        0 => format!("u8::from(self.{})", f.name),
                        _ => format!("(u8::from(self.{}) << {k})", f.name),
                    })
                    .collect();
                let _ = writeln!(o, "put_octet(buf, {});", parts.join(" | "));
            } else {
                let f = &m.fields[i];
                let _ = writeln!(o, "{}", f.ty.write(&format!("self.{}", f.name)));
                i += 1;
            }
        }
        o.push_str("}\n}\n\n");
        let _ = writeln!(
            o,
            "impl From<{name}> for Method {{\nfn from(m: {name}) -> Method {{ Method::{name}(m) }}\n}}\n"
        );
    }

    fn emit_enum(&self, o: &mut String) {
        o.push_str("/// Every method of AMQP 0-9-1 with RabbitMQ's extensions.\n#[derive(Debug, Clone, PartialEq)]\n#[non_exhaustive]\npub enum Method {\n");
        for m in &self.methods {
            let n = Self::struct_name(m);
            let _ = writeln!(o, "/// `{}.{}`\n{n}({n}),", m.class_name, m.name);
        }
        o.push_str("}\n\nimpl Method {\n");
        let arms = |o: &mut String, f: &dyn Fn(&MethodDef) -> String| {
            for m in &self.methods {
                let _ = writeln!(o, "Method::{}(_) => {},", Self::struct_name(m), f(m));
            }
        };
        o.push_str("/// The class id.\npub fn class_id(&self) -> u16 {\nmatch self {\n");
        arms(o, &|m| m.class_id.to_string());
        o.push_str("}\n}\n\n/// The method id within its class.\npub fn method_id(&self) -> u16 {\nmatch self {\n");
        arms(o, &|m| m.id.to_string());
        o.push_str("}\n}\n\n/// The name as RabbitMQ writes it, e.g. `basic.publish`.\npub fn name(&self) -> &'static str {\nmatch self {\n");
        arms(o, &|m| format!("\"{}.{}\"", m.class_name, m.name));
        o.push_str("}\n}\n\n/// Whether a content header and body frames follow this method.\npub fn has_content(&self) -> bool {\nmatches!(self, ");
        let content: Vec<String> = self
            .methods
            .iter()
            .filter(|m| m.content)
            .map(|m| format!("Method::{}(_)", Self::struct_name(m)))
            .collect();
        o.push_str(&content.join(" | "));
        o.push_str(")\n}\n\n/// Whether the specification marks the method synchronous (it expects a reply).\npub fn is_synchronous(&self) -> bool {\nmatches!(self, ");
        let sync: Vec<String> = self
            .methods
            .iter()
            .filter(|m| m.synchronous)
            .map(|m| format!("Method::{}(_)", Self::struct_name(m)))
            .collect();
        o.push_str(&sync.join(" | "));
        o.push_str(")\n}\n\n");
        o.push_str("/// Decodes the arguments of method `class_id`/`method_id`.\npub(crate) fn decode_args(class_id: u16, method_id: u16, r: &mut Reader<'_>) -> Result<Method, CodecError> {\nOk(match (class_id, method_id) {\n");
        for m in &self.methods {
            let n = Self::struct_name(m);
            let _ = writeln!(
                o,
                "({}, {}) => Method::{n}({n}::decode_args(r)?),",
                m.class_id, m.id
            );
        }
        o.push_str(
            "_ => return Err(CodecError::UnknownMethod { class_id, method_id }),\n})\n}\n\n",
        );
        o.push_str("/// Encodes class id, method id and arguments: a method frame's payload.\npub fn encode(&self, buf: &mut BytesMut) {\nput_short(buf, self.class_id());\nput_short(buf, self.method_id());\nmatch self {\n");
        for m in &self.methods {
            let _ = writeln!(
                o,
                "Method::{}(m) => m.encode_args(buf),",
                Self::struct_name(m)
            );
        }
        o.push_str("}\n}\n}\n\n/// The name of a method by its ids, e.g. `basic.publish`.\npub fn method_name(class_id: u16, method_id: u16) -> Option<&'static str> {\nSome(match (class_id, method_id) {\n");
        for m in &self.methods {
            let _ = writeln!(
                o,
                "({}, {}) => \"{}.{}\",",
                m.class_id, m.id, m.class_name, m.name
            );
        }
        o.push_str("_ => return None,\n})\n}\n\n");
    }

    fn emit_properties(&self, o: &mut String) -> Result<(), String> {
        let classes = self.spec["classes"].as_array().ok_or("classes")?;
        let basic = classes
            .iter()
            .find(|c| c["name"] == "basic")
            .ok_or("no basic class")?;
        let props = basic["properties"].as_array().ok_or("basic properties")?;
        if props.len() > 15 {
            return Err("more than 15 properties need flag continuation".into());
        }
        let fields: Vec<(String, Ty)> = props
            .iter()
            .map(|p| {
                Ok((
                    snake(p["name"].as_str().ok_or("property name")?),
                    Ty::parse(p["type"].as_str().ok_or("property type")?)?,
                ))
            })
            .collect::<Result<_, String>>()?;
        o.push_str("/// The properties of class `basic` (a content header's property list), each optional.\n#[derive(Debug, Clone, PartialEq, Default)]\npub struct BasicProperties {\n");
        for (name, ty) in &fields {
            let _ = writeln!(
                o,
                "/// `{}`\npub {name}: Option<{}>,",
                name.replace('_', "-"),
                ty.rust()
            );
        }
        o.push_str("}\n\nimpl BasicProperties {\n");
        let all_bits: u32 = (0..fields.len()).map(|i| 1u32 << (15 - i)).sum();
        let _ = writeln!(
            o,
            "/// The property-flag bits that name a property.\npub const FLAG_MASK: u16 = {all_bits:#06x};\n"
        );
        o.push_str("/// The property flags this property list encodes with.\npub fn flags(&self) -> u16 {\nlet mut flags = 0u16;\n");
        for (i, (name, _)) in fields.iter().enumerate() {
            let _ = writeln!(
                o,
                "if self.{name}.is_some() {{ flags |= 1 << {}; }}",
                15 - i
            );
        }
        // Each property is read into a local and the struct is built once at the end, so the
        // (large) value can be written straight into its final place instead of being
        // default-initialised, filled in and then moved.
        o.push_str("flags\n}\n\n/// Decodes the property list for `flags` (already read). Like RabbitMQ, flag bits that name\n/// no property (bit 1, and bit 0, the continuation flag) are ignored.\n#[inline]\npub(crate) fn decode(flags: u16, r: &mut Reader<'_>) -> Result<Self, CodecError> {\n");
        for (i, (name, ty)) in fields.iter().enumerate() {
            let _ = writeln!(
                o,
                "let {name} = if flags & (1 << {}) != 0 {{ Some({}) }} else {{ None }};",
                15 - i,
                ty.read()
            );
        }
        let names: Vec<&str> = fields.iter().map(|(name, _)| name.as_str()).collect();
        let _ = writeln!(o, "Ok(Self {{ {} }})", names.join(", "));
        o.push_str("}\n\n/// Encodes flags and property list.\npub fn encode(&self, buf: &mut BytesMut) {\nput_short(buf, self.flags());\n");
        for (name, ty) in &fields {
            let w = ty.write("*v").replace("&*v", "v");
            let _ = writeln!(o, "if let Some(v) = &self.{name} {{ {w} }}");
        }
        o.push_str("}\n}\n");
        Ok(())
    }
}

impl Ty {
    /// The proptest strategy for a random value of the type, as used by `gen_strategies.rs`.
    fn strategy(self) -> &'static str {
        match self {
            Ty::Bit => "any::<bool>()",
            Ty::Octet => "any::<u8>()",
            Ty::Short => "any::<u16>()",
            Ty::Long => "any::<u32>()",
            Ty::LongLong | Ty::Timestamp => "any::<u64>()",
            Ty::ShortStr => "shortstr()",
            Ty::LongStr => "longstr()",
            Ty::Table => "field_table()",
        }
    }
}

impl Generator<'_> {
    /// The text of `gen_strategies.rs`: a strategy per method struct, `method_strategies()` and
    /// `any_method()`.
    fn emit_strategies(&self) -> String {
        let mut o = String::new();
        o.push_str(
            "// @generated by `cargo xtask codegen` from spec/amqp-rabbitmq-0.9.1.json.\n\
             // Do not edit: change the generator (xtask/src/codegen.rs) and regenerate.\n\n\
             //! proptest strategies for every method of the spec, every field random: integers\n\
             //! and bits any value, strings and tables from the strategies in `properties.rs`.\n\n\
             use crate::properties::{field_table, longstr, shortstr, shortstr_utf8};\n\
             use proptest::prelude::*;\n\
             use proptest::strategy::Union;\n\
             use warren_amqp_codec as codec;\n\n",
        );
        for m in &self.methods {
            let name = Self::struct_name(m);
            let _ = writeln!(
                o,
                "/// `{}.{}` with random arguments.\npub(crate) fn {}() -> impl Strategy<Value = codec::{name}> {{",
                m.class_name,
                m.name,
                Self::strategy_fn(m)
            );
            let names: Vec<&str> = m.fields.iter().map(|f| f.name.as_str()).collect();
            // Short strings of methods without content must be UTF-8 (the decoder checks them).
            let strategies: Vec<&str> = m
                .fields
                .iter()
                .map(|f| match f.ty {
                    Ty::ShortStr if !m.content => "shortstr_utf8()",
                    ty => ty.strategy(),
                })
                .collect();
            match m.fields.len() {
                0 => {
                    let _ = writeln!(o, "Just(codec::{name} {{}})");
                }
                1 => {
                    let _ = writeln!(
                        o,
                        "{}.prop_map(|{}| codec::{name} {{ {} }})",
                        strategies[0], names[0], names[0]
                    );
                }
                _ => {
                    let _ = writeln!(
                        o,
                        "({}).prop_map(|({})| codec::{name} {{ {} }})",
                        strategies.join(", "),
                        names.join(", "),
                        names.join(", ")
                    );
                }
            }
            o.push_str("}\n\n");
        }
        o.push_str(
            "/// One strategy per method, with the method's name as RabbitMQ writes it, in the\n\
             /// order of the spec.\n\
             pub(crate) fn method_strategies() -> Vec<(&'static str, BoxedStrategy<codec::Method>)> {\n\
             vec![\n",
        );
        for m in &self.methods {
            let _ = writeln!(
                o,
                "(\"{}.{}\", {}().prop_map(codec::Method::{}).boxed()),",
                m.class_name,
                m.name,
                Self::strategy_fn(m),
                Self::struct_name(m)
            );
        }
        o.push_str(
            "]\n}\n\n\
             /// Any method, each of them equally likely (a `Union`: `prop_oneof!` has an arm limit).\n\
             pub(crate) fn any_method() -> impl Strategy<Value = codec::Method> {\n\
             Union::new(method_strategies().into_iter().map(|(_, s)| s))\n\
             }\n",
        );
        o
    }

    /// The name of a method's strategy function, e.g. `basic_recover_async`.
    fn strategy_fn(m: &MethodDef) -> String {
        format!("{}_{}", m.class_name, m.name).replace('-', "_")
    }
}
