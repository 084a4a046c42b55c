//! `cargo xtask codegen`: generates `crates/amqp-codec/src/generated.rs` from RabbitMQ's
//! `amqp-rabbitmq-0.9.1.json`.
//!
//! Output: the `ReplyCode` enum (from the spec's constants), one struct per method, the
//! `Method` enum with ids, names and flags, argument decoding and encoding (bits packed as the
//! spec says), and `BasicProperties` with its property-flag codec. The text is passed through
//! rustfmt so that the committed file is formatted and the `--check` comparison is exact.

use serde_json::Value;
use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

pub(crate) const SPEC: &str = "crates/amqp-codec/spec/amqp-rabbitmq-0.9.1.json";
pub(crate) const OUT: &str = "crates/amqp-codec/src/generated.rs";

/// Writes the generated file, or with `check` fails if it differs from the committed one.
pub(crate) fn run(root: &Path, check: bool) -> Result<(), String> {
    let text = generate(root)?;
    let out = root.join(OUT);
    if check {
        let current = std::fs::read_to_string(&out).map_err(|e| format!("{OUT}: {e}"))?;
        if current != text {
            return Err(format!(
                "{OUT} is stale: run `cargo xtask codegen` and commit the result"
            ));
        }
        return Ok(());
    }
    std::fs::write(&out, text).map_err(|e| format!("{OUT}: {e}"))
}

/// The formatted text of the generated file.
pub(crate) fn generate(root: &Path) -> Result<String, String> {
    let spec = std::fs::read_to_string(root.join(SPEC)).map_err(|e| format!("{SPEC}: {e}"))?;
    let spec: Value = serde_json::from_str(&spec).map_err(|e| format!("{SPEC}: {e}"))?;
    let raw = Generator::new(&spec)?.emit()?;
    rustfmt(&raw)
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
            Ty::Octet => format!("buf.put_u8({expr});"),
            Ty::Short => format!("buf.put_u16({expr});"),
            Ty::Long => format!("buf.put_u32({expr});"),
            Ty::LongLong | Ty::Timestamp => format!("buf.put_u64({expr});"),
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
             use crate::wire::{Reader, put_longstr, put_shortstr, put_table};\n\
             use crate::{CodecError, FieldTable, LongStr, ShortStr};\n\
             use bytes::{BufMut, BytesMut};\n\n",
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
                None => {
                    let _ = writeln!(
                        o,
                        "/// `{name}` from the specification.\npub const {}: u32 = {value};",
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
                let _ = writeln!(o, "let {} = {};", f.name, f.ty.read());
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
                let _ = writeln!(o, "buf.put_u8({});", parts.join(" | "));
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
        o.push_str("/// Encodes class id, method id and arguments: a method frame's payload.\npub fn encode(&self, buf: &mut BytesMut) {\nbuf.put_u16(self.class_id());\nbuf.put_u16(self.method_id());\nmatch self {\n");
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
        o.push_str("flags\n}\n\n/// Decodes the property list for `flags` (already read).\npub(crate) fn decode(flags: u16, r: &mut Reader<'_>) -> Result<Self, CodecError> {\nif flags & !Self::FLAG_MASK != 0 {\nreturn Err(CodecError::BadPropertyFlags(flags));\n}\nlet mut p = Self::default();\n");
        for (i, (name, ty)) in fields.iter().enumerate() {
            let _ = writeln!(
                o,
                "if flags & (1 << {}) != 0 {{ p.{name} = Some({}); }}",
                15 - i,
                ty.read()
            );
        }
        o.push_str("Ok(p)\n}\n\n/// Encodes flags and property list.\npub fn encode(&self, buf: &mut BytesMut) {\nbuf.put_u16(self.flags());\n");
        for (name, ty) in &fields {
            let w = ty.write("*v").replace("&*v", "v");
            let _ = writeln!(o, "if let Some(v) = &self.{name} {{ {w} }}");
        }
        o.push_str("}\n}\n");
        Ok(())
    }
}
