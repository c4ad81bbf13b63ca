//! What `rpc list` prints: each service with its methods as signatures, their docs under them,
//! and the named types they use.

use std::fmt::Write as _;

use rpc::reflection::ServerDescription;
use rpc::schema::{Fields, MethodKind, MethodSchema, ServiceSchema, Shape, TypeDef};

use crate::codec::type_name;

/// The whole listing of a server.
pub fn server(description: &ServerDescription, with_types: bool) -> String {
    let mut out = String::new();
    let version = description.server_version.as_deref().map(|v| format!(" {v}")).unwrap_or_default();
    let _ = writeln!(
        out,
        "server {}{version} (protocol {}, schema {}, rpc {})",
        description.server_name,
        description.protocol_version,
        description.schema_version,
        description.framework_version
    );
    for service in &description.services {
        out.push('\n');
        out.push_str(&self::service(service, with_types));
    }
    out
}

fn docs(out: &mut String, text: &str, indent: &str) {
    for line in text.lines() {
        let _ = writeln!(out, "{indent}{}", line.strip_prefix(' ').unwrap_or(line));
    }
}

/// One service.
pub fn service(service: &ServiceSchema, with_types: bool) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "service {}", service.name);
    docs(&mut out, &service.docs, "  ");
    for method in &service.methods {
        let _ = writeln!(out, "  {}", signature(&service.name, method));
        docs(&mut out, &method.docs, "      ");
    }
    if with_types && !service.types.is_empty() {
        let _ = writeln!(out, "  types:");
        for def in &service.types {
            let _ = writeln!(out, "    {}", type_def(def));
        }
    }
    out
}

/// `Calculator.add(a: i64, b: i64) -> i64`, with streams and errors as written in Rust.
pub fn signature(service: &str, method: &MethodSchema) -> String {
    let mut args: Vec<String> = method.args.iter().map(|a| format!("{}: {}", a.name, type_name(&a.ty))).collect();
    if let Some(stream) = &method.stream_arg {
        args.push(format!("{}: Stream<{}>", stream.name, type_name(&stream.ty)));
    }
    let returns = type_name(&method.returns);
    let returns = match (&method.kind, &method.error) {
        (MethodKind::ServerStream, _) => format!("Stream<{returns}>"),
        (_, Some(error)) => format!("Result<{returns}, {}>", type_name(error)),
        _ => returns,
    };
    format!("{service}.{}({}) -> {returns}", method.name, args.join(", "))
}

fn fields(fields: &Fields) -> String {
    match fields {
        Fields::Unit => String::new(),
        Fields::Newtype(t) => format!("({})", type_name(t)),
        Fields::Tuple(ts) => format!("({})", ts.iter().map(type_name).collect::<Vec<_>>().join(", ")),
        Fields::Struct(fs) => {
            format!(
                " {{ {} }}",
                fs.iter().map(|f| format!("{}: {}", f.name, type_name(&f.ty))).collect::<Vec<_>>().join(", ")
            )
        }
    }
}

/// `struct Item { id: u64, name: String }`, `enum Shape { Circle { r: f64 }, Empty }`.
pub fn type_def(def: &TypeDef) -> String {
    match &def.shape {
        Shape::Struct(f) => format!("struct {}{}", def.name, fields(f)),
        Shape::Enum(variants) => format!(
            "enum {} {{ {} }}",
            def.name,
            variants.iter().map(|v| format!("{}{}", v.name, fields(&v.fields))).collect::<Vec<_>>().join(", ")
        ),
    }
}
