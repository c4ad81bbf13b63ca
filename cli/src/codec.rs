//! JSON to the wire and back, by a [schema](rpc::schema): what lets the `rpc` tool call a method
//! whose Rust types it does not have.
//!
//! Encoding first checks a JSON value against a [`Type`] and builds a [`Value`], reporting the
//! first mismatch with its place ("expected i64 for argument `b`, got \"x\""); the value then
//! serializes through postcard itself, so the bytes are the ones the Rust types would give.
//! Decoding drives postcard's deserializer with the schema (`Decode`).
//!
//! The JSON shapes are serde_json's for the same Rust types: structs are objects, tuples and
//! tuple structs arrays, a newtype struct its inner value, unit `null`, an option `null` or its
//! value, a unit variant its name as a string, any other variant `{"Name": payload}`, a map an
//! object (keys that are not strings given as JSON text, e.g. `{"1": "a"}`) or an array of
//! `[key, value]` pairs, bytes an array of numbers (or a string, taken as its UTF-8 bytes).

use std::fmt;

use rpc::schema::{Fields, MethodSchema, ServiceSchema, Shape, Type};
use serde::de::{self, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq, SerializeTuple, Serializer};
use serde::Serialize;
use serde_json::Value as Json;

/// Nesting beyond this is refused both ways, so that a deep value cannot exhaust the stack.
const MAX_DEPTH: usize = 128;

/// A value checked against its type, ready to serialize as postcard does the Rust type.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `()`, a unit struct, nothing on the wire.
    Unit,
    /// `bool`.
    Bool(bool),
    /// `i8`.
    I8(i8),
    /// `i16`.
    I16(i16),
    /// `i32`.
    I32(i32),
    /// `i64`.
    I64(i64),
    /// `i128`.
    I128(i128),
    /// `u8`.
    U8(u8),
    /// `u16`.
    U16(u16),
    /// `u32`.
    U32(u32),
    /// `u64`.
    U64(u64),
    /// `u128`.
    U128(u128),
    /// `f32`.
    F32(f32),
    /// `f64`.
    F64(f64),
    /// `char`.
    Char(char),
    /// A string.
    Str(String),
    /// A byte string.
    Bytes(Vec<u8>),
    /// An option.
    Option(Option<Box<Value>>),
    /// A length-prefixed sequence.
    Seq(Vec<Value>),
    /// A length-prefixed map.
    Map(Vec<(Value, Value)>),
    /// Values one after another: a tuple, an array, a struct's fields.
    Tuple(Vec<Value>),
    /// An enum variant: its tag, then its fields.
    Variant(u32, Box<Value>),
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Unit => s.serialize_unit(),
            Value::Bool(v) => s.serialize_bool(*v),
            Value::I8(v) => s.serialize_i8(*v),
            Value::I16(v) => s.serialize_i16(*v),
            Value::I32(v) => s.serialize_i32(*v),
            Value::I64(v) => s.serialize_i64(*v),
            Value::I128(v) => s.serialize_i128(*v),
            Value::U8(v) => s.serialize_u8(*v),
            Value::U16(v) => s.serialize_u16(*v),
            Value::U32(v) => s.serialize_u32(*v),
            Value::U64(v) => s.serialize_u64(*v),
            Value::U128(v) => s.serialize_u128(*v),
            Value::F32(v) => s.serialize_f32(*v),
            Value::F64(v) => s.serialize_f64(*v),
            Value::Char(v) => s.serialize_char(*v),
            Value::Str(v) => s.serialize_str(v),
            Value::Bytes(v) => s.serialize_bytes(v),
            Value::Option(None) => s.serialize_none(),
            Value::Option(Some(v)) => s.serialize_some(v),
            Value::Seq(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Value::Map(entries) => {
                let mut map = s.serialize_map(Some(entries.len()))?;
                for (k, v) in entries {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
            Value::Tuple(items) => {
                let mut tuple = s.serialize_tuple(items.len())?;
                for item in items {
                    tuple.serialize_element(item)?;
                }
                tuple.end()
            }
            // postcard writes the tag as a varint, then the payload; names are not sent.
            Value::Variant(index, payload) => s.serialize_newtype_variant("", *index, "", payload),
        }
    }
}

/// A JSON value that does not fit its type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodeError(pub String);

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for EncodeError {}

/// The arguments of `method` from the command line: one JSON text per argument, in order, or a
/// single JSON object with the arguments by name. A text that is not JSON is taken as a string.
pub fn encode_args(schema: &ServiceSchema, method: &MethodSchema, given: &[String]) -> Result<Value, EncodeError> {
    let parsed: Vec<Json> =
        given.iter().map(|text| serde_json::from_str(text).unwrap_or_else(|_| Json::String(text.clone()))).collect();
    let by_name = match parsed.as_slice() {
        [Json::Object(fields)] => {
            let names_match =
                fields.len() == method.args.len() && method.args.iter().all(|a| fields.contains_key(&a.name));
            names_match && (method.args.len() != 1 || !fields.is_empty())
        }
        _ => false,
    };
    let values: Vec<Json> = if by_name {
        let Json::Object(fields) = &parsed[0] else { unreachable!("checked above") };
        method.args.iter().map(|a| fields[&a.name].clone()).collect()
    } else {
        parsed
    };
    if values.len() != method.args.len() {
        let names: Vec<String> = method.args.iter().map(|a| format!("{}: {}", a.name, type_name(&a.ty))).collect();
        return Err(EncodeError(format!(
            "`{}` takes {} argument{} ({}), got {}",
            method.name,
            method.args.len(),
            if method.args.len() == 1 { "" } else { "s" },
            names.join(", "),
            values.len()
        )));
    }
    let encoder = Encoder { schema };
    let items = method
        .args
        .iter()
        .zip(&values)
        .map(|(arg, json)| encoder.value(&arg.ty, json, &format!("argument `{}`", arg.name), 0))
        .collect::<Result<_, _>>()?;
    Ok(Value::Tuple(items))
}

/// One JSON value of type `ty` (an item of a stream argument, say); `what` names it in errors.
pub fn encode_value(schema: &ServiceSchema, ty: &Type, json: &Json, what: &str) -> Result<Value, EncodeError> {
    Encoder { schema }.value(ty, json, what, 0)
}

struct Encoder<'a> {
    schema: &'a ServiceSchema,
}

fn got(json: &Json) -> String {
    let text = json.to_string();
    if text.chars().count() > 60 {
        format!("{}...", text.chars().take(60).collect::<String>())
    } else {
        text
    }
}

impl Encoder<'_> {
    fn mismatch(&self, expected: &str, what: &str, json: &Json) -> EncodeError {
        EncodeError(format!("expected {expected} for {what}, got {}", got(json)))
    }

    fn value(&self, ty: &Type, json: &Json, what: &str, depth: usize) -> Result<Value, EncodeError> {
        if depth > MAX_DEPTH {
            return Err(EncodeError(format!("{what} is nested more than {MAX_DEPTH} levels deep")));
        }
        let int = |name: &str| -> Result<i128, EncodeError> {
            let n = match json {
                Json::Number(n) => n.as_i64().map(i128::from).or_else(|| n.as_u64().map(i128::from)),
                // Beyond what a JSON number holds exactly: 128-bit values as strings.
                Json::String(s) if name.ends_with("128") => s.parse().ok(),
                _ => None,
            };
            n.ok_or_else(|| self.mismatch(name, what, json))
        };
        let ranged = |name: &str, min: i128, max: i128| -> Result<i128, EncodeError> {
            let n = int(name)?;
            if n < min || n > max {
                return Err(EncodeError(format!("{n} is out of range for {what} ({name}: {min}..={max})")));
            }
            Ok(n)
        };
        Ok(match ty {
            Type::Unit => match json {
                Json::Null => Value::Unit,
                _ => return Err(self.mismatch("null", what, json)),
            },
            Type::Bool => Value::Bool(json.as_bool().ok_or_else(|| self.mismatch("a boolean", what, json))?),
            Type::I8 => Value::I8(ranged("i8", i8::MIN.into(), i8::MAX.into())? as i8),
            Type::I16 => Value::I16(ranged("i16", i16::MIN.into(), i16::MAX.into())? as i16),
            Type::I32 => Value::I32(ranged("i32", i32::MIN.into(), i32::MAX.into())? as i32),
            Type::I64 => Value::I64(ranged("i64", i64::MIN.into(), i64::MAX.into())? as i64),
            Type::U8 => Value::U8(ranged("u8", 0, u8::MAX.into())? as u8),
            Type::U16 => Value::U16(ranged("u16", 0, u16::MAX.into())? as u16),
            Type::U32 => Value::U32(ranged("u32", 0, u32::MAX.into())? as u32),
            Type::U64 => Value::U64(ranged("u64", 0, u64::MAX.into())? as u64),
            Type::I128 => Value::I128(int("i128")?),
            Type::U128 => match json {
                Json::String(s) => Value::U128(s.parse().map_err(|_| self.mismatch("u128", what, json))?),
                _ => Value::U128(u128::try_from(int("u128")?).map_err(|_| self.mismatch("u128", what, json))?),
            },
            Type::F32 => Value::F32(json.as_f64().ok_or_else(|| self.mismatch("f32", what, json))? as f32),
            Type::F64 => Value::F64(json.as_f64().ok_or_else(|| self.mismatch("f64", what, json))?),
            Type::Char => {
                let mut chars = json.as_str().map(str::chars).into_iter().flatten();
                match (chars.next(), chars.next()) {
                    (Some(c), None) => Value::Char(c),
                    _ => return Err(self.mismatch("a string of one character", what, json)),
                }
            }
            Type::Str => Value::Str(json.as_str().ok_or_else(|| self.mismatch("a string", what, json))?.to_owned()),
            Type::Bytes => match json {
                Json::String(s) => Value::Bytes(s.as_bytes().to_vec()),
                Json::Array(items) => Value::Bytes(
                    items
                        .iter()
                        .enumerate()
                        .map(|(i, b)| {
                            b.as_u64()
                                .and_then(|b| u8::try_from(b).ok())
                                .ok_or_else(|| self.mismatch("a byte (0..=255)", &format!("{what}[{i}]"), b))
                        })
                        .collect::<Result<_, _>>()?,
                ),
                _ => return Err(self.mismatch("bytes (an array of numbers or a string)", what, json)),
            },
            Type::Option(inner) => match json {
                Json::Null => Value::Option(None),
                _ => Value::Option(Some(Box::new(self.value(inner, json, what, depth + 1)?))),
            },
            Type::Seq(item) => {
                let items = json
                    .as_array()
                    .ok_or_else(|| self.mismatch(&format!("an array of {}", type_name(item)), what, json))?;
                Value::Seq(self.elements(items.iter().map(|j| (&**item, j)), what, depth)?)
            }
            Type::Tuple(types) => Value::Tuple(self.fixed(types, json, what, depth)?),
            Type::Array { item, len } => {
                let types = vec![(**item).clone(); (*len).min(1 << 20) as usize];
                Value::Tuple(self.fixed(&types, json, what, depth)?)
            }
            Type::Map { key, value } => self.map(key, value, json, what, depth)?,
            Type::Named(name) => self.named(name, json, what, depth)?,
            Type::Unknown(why) => {
                return Err(EncodeError(format!("{what} has a type the server could not describe ({why})")))
            }
        })
    }

    fn elements<'j>(
        &self,
        items: impl Iterator<Item = (&'j Type, &'j Json)>,
        what: &str,
        depth: usize,
    ) -> Result<Vec<Value>, EncodeError> {
        items.enumerate().map(|(i, (ty, json))| self.value(ty, json, &format!("{what}[{i}]"), depth + 1)).collect()
    }

    fn fixed(&self, types: &[Type], json: &Json, what: &str, depth: usize) -> Result<Vec<Value>, EncodeError> {
        let expected =
            || format!("an array of {} ({})", types.len(), types.iter().map(type_name).collect::<Vec<_>>().join(", "));
        match json {
            Json::Array(items) if items.len() == types.len() => self.elements(types.iter().zip(items), what, depth),
            _ => Err(self.mismatch(&expected(), what, json)),
        }
    }

    fn map(&self, key: &Type, value: &Type, json: &Json, what: &str, depth: usize) -> Result<Value, EncodeError> {
        let entries = match json {
            Json::Object(fields) => fields
                .iter()
                .map(|(k, v)| {
                    let key_json = match key {
                        Type::Str | Type::Char => Json::String(k.clone()),
                        _ => serde_json::from_str(k).unwrap_or_else(|_| Json::String(k.clone())),
                    };
                    let place = format!("{what}[{}]", Json::String(k.clone()));
                    Ok((
                        self.value(key, &key_json, &format!("a key of {what}"), depth + 1)?,
                        self.value(value, v, &place, depth + 1)?,
                    ))
                })
                .collect::<Result<_, EncodeError>>()?,
            Json::Array(pairs) => pairs
                .iter()
                .enumerate()
                .map(|(i, pair)| match pair.as_array().map(Vec::as_slice) {
                    Some([k, v]) => Ok((
                        self.value(key, k, &format!("{what}[{i}] key"), depth + 1)?,
                        self.value(value, v, &format!("{what}[{i}] value"), depth + 1)?,
                    )),
                    _ => Err(self.mismatch("a [key, value] pair", &format!("{what}[{i}]"), pair)),
                })
                .collect::<Result<_, EncodeError>>()?,
            _ => {
                return Err(self.mismatch(
                    &format!(
                        "a map {} (an object or [key, value] pairs)",
                        type_name(&Type::Map { key: Box::new(key.clone()), value: Box::new(value.clone()) })
                    ),
                    what,
                    json,
                ))
            }
        };
        Ok(Value::Map(entries))
    }

    fn named(&self, name: &str, json: &Json, what: &str, depth: usize) -> Result<Value, EncodeError> {
        let def = self
            .schema
            .type_def(name)
            .ok_or_else(|| EncodeError(format!("{what} is of type `{name}`, which the schema does not define")))?;
        match &def.shape {
            Shape::Struct(fields) => self.fields(fields, json, &format!("`{name}`"), what, depth),
            Shape::Enum(variants) => {
                let (variant_name, payload) = match json {
                    Json::String(v) => (v.as_str(), &Json::Null),
                    Json::Object(map) if map.len() == 1 => {
                        let (k, v) = map.iter().next().expect("one entry");
                        (k.as_str(), v)
                    }
                    _ => {
                        let names: Vec<&str> = variants.iter().map(|v| v.name.as_str()).collect();
                        return Err(self.mismatch(
                            &format!(
                                "a variant of `{name}` (\"Variant\" or {{\"Variant\": ...}}; one of {})",
                                names.join(", ")
                            ),
                            what,
                            json,
                        ));
                    }
                };
                let variant = variants.iter().find(|v| v.name == variant_name).ok_or_else(|| {
                    let names: Vec<&str> = variants.iter().map(|v| v.name.as_str()).collect();
                    EncodeError(format!(
                        "`{name}` has no variant `{variant_name}` (for {what}); it has {}",
                        names.join(", ")
                    ))
                })?;
                let payload = self.fields(
                    &variant.fields,
                    payload,
                    &format!("`{name}::{variant_name}`"),
                    &format!("{what}.{variant_name}"),
                    depth,
                )?;
                Ok(Value::Variant(variant.index, Box::new(payload)))
            }
        }
    }

    fn fields(&self, fields: &Fields, json: &Json, of: &str, what: &str, depth: usize) -> Result<Value, EncodeError> {
        match fields {
            Fields::Unit => match json {
                Json::Null => Ok(Value::Unit),
                _ => Err(self.mismatch(&format!("null ({of} has no fields)"), what, json)),
            },
            Fields::Newtype(inner) => self.value(inner, json, what, depth + 1),
            Fields::Tuple(types) => Ok(Value::Tuple(self.fixed(types, json, what, depth)?)),
            Fields::Struct(named) => {
                let Json::Object(map) = json else {
                    let names: Vec<&str> = named.iter().map(|f| f.name.as_str()).collect();
                    return Err(self.mismatch(&format!("an object {of} {{{}}}", names.join(", ")), what, json));
                };
                if let Some(unknown) = map.keys().find(|k| !named.iter().any(|f| &f.name == *k)) {
                    return Err(EncodeError(format!("{of} has no field `{unknown}` (in {what})")));
                }
                let values = named
                    .iter()
                    .map(|f| match map.get(&f.name) {
                        Some(v) => self.value(&f.ty, v, &format!("{what}.{}", f.name), depth + 1),
                        None if matches!(f.ty, Type::Option(_)) => Ok(Value::Option(None)),
                        None => Err(EncodeError(format!("missing field `{}` of {of} in {what}", f.name))),
                    })
                    .collect::<Result<_, _>>()?;
                Ok(Value::Tuple(values))
            }
        }
    }
}

/// A type as a Rust programmer would write it: `Vec<Option<i64>>`, `Map<String, Item>`.
pub fn type_name(ty: &Type) -> String {
    match ty {
        Type::Unit => "()".into(),
        Type::Bool => "bool".into(),
        Type::I8 => "i8".into(),
        Type::I16 => "i16".into(),
        Type::I32 => "i32".into(),
        Type::I64 => "i64".into(),
        Type::I128 => "i128".into(),
        Type::U8 => "u8".into(),
        Type::U16 => "u16".into(),
        Type::U32 => "u32".into(),
        Type::U64 => "u64".into(),
        Type::U128 => "u128".into(),
        Type::F32 => "f32".into(),
        Type::F64 => "f64".into(),
        Type::Char => "char".into(),
        Type::Str => "String".into(),
        Type::Bytes => "Bytes".into(),
        Type::Option(t) => format!("Option<{}>", type_name(t)),
        Type::Seq(t) => format!("Vec<{}>", type_name(t)),
        Type::Map { key, value } => format!("Map<{}, {}>", type_name(key), type_name(value)),
        Type::Tuple(items) if items.len() == 1 => format!("({},)", type_name(&items[0])),
        Type::Tuple(items) => format!("({})", items.iter().map(type_name).collect::<Vec<_>>().join(", ")),
        Type::Array { item, len } => format!("[{}; {len}]", type_name(item)),
        Type::Named(name) => name.clone(),
        Type::Unknown(_) => "?".into(),
    }
}

/// Decodes postcard bytes of type `ty` into JSON; every byte must be used.
pub fn decode(schema: &ServiceSchema, ty: &Type, bytes: &[u8]) -> Result<Json, String> {
    let mut de = postcard::Deserializer::from_bytes(bytes);
    let value = Decode { schema, ty, depth: 0 }.deserialize(&mut de).map_err(|e| e.to_string())?;
    let rest = de.finalize().map_err(|e| e.to_string())?;
    if !rest.is_empty() {
        return Err(format!("{} bytes left over after the value", rest.len()));
    }
    Ok(value)
}

/// The answer of a method declared `-> Result<T, E>`: `Ok(T)` or `Err(E)` as JSON.
pub fn decode_fallible(
    schema: &ServiceSchema,
    ok: &Type,
    err: &Type,
    bytes: &[u8],
) -> Result<Result<Json, Json>, String> {
    let mut de = postcard::Deserializer::from_bytes(bytes);
    let value = ResultSeed { schema, ok, err }.deserialize(&mut de).map_err(|e| e.to_string())?;
    let rest = de.finalize().map_err(|e| e.to_string())?;
    if !rest.is_empty() {
        return Err(format!("{} bytes left over after the value", rest.len()));
    }
    Ok(value)
}

struct ResultSeed<'a> {
    schema: &'a ServiceSchema,
    ok: &'a Type,
    err: &'a Type,
}

impl<'de> DeserializeSeed<'de> for ResultSeed<'_> {
    type Value = Result<Json, Json>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_enum("Result", &["Ok", "Err"], self)
    }
}

impl<'de> Visitor<'de> for ResultSeed<'_> {
    type Value = Result<Json, Json>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a result")
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Self::Value, A::Error> {
        let (index, variant): (u32, _) = data.variant()?;
        match index {
            0 => Ok(Ok(variant.newtype_variant_seed(Decode { schema: self.schema, ty: self.ok, depth: 0 })?)),
            1 => Ok(Err(variant.newtype_variant_seed(Decode { schema: self.schema, ty: self.err, depth: 0 })?)),
            n => Err(de::Error::custom(format!("a result with tag {n}"))),
        }
    }
}

/// Decodes one value of `ty` into JSON.
#[derive(Clone, Copy)]
struct Decode<'a> {
    schema: &'a ServiceSchema,
    ty: &'a Type,
    depth: usize,
}

impl<'a> Decode<'a> {
    fn inner(&self, ty: &'a Type) -> Decode<'a> {
        Decode { schema: self.schema, ty, depth: self.depth + 1 }
    }
}

fn number<E: de::Error>(n: Option<serde_json::Number>) -> Result<Json, E> {
    Ok(n.map(Json::Number).unwrap_or(Json::Null))
}

impl<'de> DeserializeSeed<'de> for Decode<'_> {
    type Value = Json;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Json, D::Error> {
        if self.depth > MAX_DEPTH {
            return Err(de::Error::custom(format!("a value nested more than {MAX_DEPTH} levels deep")));
        }
        match self.ty {
            Type::Unit => d.deserialize_unit(self),
            Type::Bool => d.deserialize_bool(self),
            Type::I8 => d.deserialize_i8(self),
            Type::I16 => d.deserialize_i16(self),
            Type::I32 => d.deserialize_i32(self),
            Type::I64 => d.deserialize_i64(self),
            Type::I128 => d.deserialize_i128(self),
            Type::U8 => d.deserialize_u8(self),
            Type::U16 => d.deserialize_u16(self),
            Type::U32 => d.deserialize_u32(self),
            Type::U64 => d.deserialize_u64(self),
            Type::U128 => d.deserialize_u128(self),
            Type::F32 => d.deserialize_f32(self),
            Type::F64 => d.deserialize_f64(self),
            Type::Char => d.deserialize_char(self),
            Type::Str => d.deserialize_string(self),
            Type::Bytes => d.deserialize_byte_buf(self),
            Type::Option(_) => d.deserialize_option(self),
            Type::Seq(_) => d.deserialize_seq(self),
            Type::Map { .. } => d.deserialize_map(self),
            Type::Tuple(items) => d.deserialize_tuple(items.len(), self),
            Type::Array { len, .. } => d.deserialize_tuple(*len as usize, self),
            Type::Named(name) => {
                let def = self
                    .schema
                    .type_def(name)
                    .ok_or_else(|| de::Error::custom(format!("the schema does not define `{name}`")))?;
                match &def.shape {
                    Shape::Enum(_) => d.deserialize_enum("", &[], self),
                    Shape::Struct(Fields::Unit) => d.deserialize_unit(self),
                    Shape::Struct(Fields::Newtype(inner)) => self.inner(inner).deserialize(d),
                    // postcard reads a struct as a tuple of its fields.
                    Shape::Struct(Fields::Tuple(items)) => d.deserialize_tuple(items.len(), self),
                    Shape::Struct(Fields::Struct(fields)) => d.deserialize_tuple(fields.len(), self),
                }
            }
            Type::Unknown(why) => Err(de::Error::custom(format!("a type the server could not describe ({why})"))),
        }
    }
}

impl<'de> Visitor<'de> for Decode<'_> {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", type_name(self.ty))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Json, E> {
        Ok(Json::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Json, E> {
        Ok(Json::from(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Json, E> {
        Ok(Json::from(v))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Json, E> {
        Ok(i64::try_from(v).map(Json::from).unwrap_or_else(|_| Json::String(v.to_string())))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Json, E> {
        Ok(u64::try_from(v).map(Json::from).unwrap_or_else(|_| Json::String(v.to_string())))
    }
    fn visit_f32<E: de::Error>(self, v: f32) -> Result<Json, E> {
        number(serde_json::Number::from_f64(f64::from(v)))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Json, E> {
        number(serde_json::Number::from_f64(v))
    }
    fn visit_char<E: de::Error>(self, v: char) -> Result<Json, E> {
        Ok(Json::String(v.to_string()))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Json, E> {
        Ok(Json::String(v.to_owned()))
    }
    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Json, E> {
        Ok(Json::Array(v.iter().map(|&b| Json::from(b)).collect()))
    }
    fn visit_none<E: de::Error>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Json, D::Error> {
        let Type::Option(inner) = self.ty else { return Err(de::Error::custom("an option where none was expected")) };
        self.inner(inner).deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let next = |seq: &mut A, ty| {
            seq.next_element_seed(self.inner(ty))?.ok_or_else(|| de::Error::custom("a sequence ended early"))
        };
        match self.ty {
            Type::Seq(item) => {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element_seed(self.inner(item))? {
                    items.push(item);
                }
                Ok(Json::Array(items))
            }
            Type::Tuple(types) => Ok(Json::Array(types.iter().map(|t| next(&mut seq, t)).collect::<Result<_, _>>()?)),
            Type::Array { item, len } => {
                Ok(Json::Array((0..*len).map(|_| next(&mut seq, item)).collect::<Result<_, _>>()?))
            }
            Type::Named(name) => match self.schema.type_def(name).map(|d| &d.shape) {
                Some(Shape::Struct(Fields::Tuple(types))) => {
                    Ok(Json::Array(types.iter().map(|t| next(&mut seq, t)).collect::<Result<_, _>>()?))
                }
                Some(Shape::Struct(Fields::Struct(fields))) => {
                    let mut object = serde_json::Map::new();
                    for f in fields {
                        object.insert(f.name.clone(), next(&mut seq, &f.ty)?);
                    }
                    Ok(Json::Object(object))
                }
                _ => Err(de::Error::custom(format!("`{name}` read as a sequence"))),
            },
            _ => Err(de::Error::custom("a sequence where none was expected")),
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let Type::Map { key, value } = self.ty else { return Err(de::Error::custom("a map where none was expected")) };
        let mut pairs = Vec::new();
        while let Some(k) = map.next_key_seed(self.inner(key))? {
            pairs.push((k, map.next_value_seed(self.inner(value))?));
        }
        // An object where the keys are strings (or numbers, written as their text); pairs else.
        let keyed = pairs.iter().all(|(k, _)| matches!(k, Json::String(_) | Json::Number(_)));
        if keyed
            && matches!(
                **key,
                Type::Str
                    | Type::Char
                    | Type::I8
                    | Type::I16
                    | Type::I32
                    | Type::I64
                    | Type::U8
                    | Type::U16
                    | Type::U32
                    | Type::U64
            )
        {
            Ok(Json::Object(
                pairs
                    .into_iter()
                    .map(|(k, v)| (k.as_str().map(str::to_owned).unwrap_or_else(|| k.to_string()), v))
                    .collect(),
            ))
        } else {
            Ok(Json::Array(pairs.into_iter().map(|(k, v)| Json::Array(vec![k, v])).collect()))
        }
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Json, A::Error> {
        let Type::Named(name) = self.ty else { return Err(de::Error::custom("an enum where none was expected")) };
        let Some(Shape::Enum(variants)) = self.schema.type_def(name).map(|d| &d.shape) else {
            return Err(de::Error::custom(format!("`{name}` read as an enum")));
        };
        let (index, access): (u32, _) = data.variant()?;
        let variant = variants
            .iter()
            .find(|v| v.index == index)
            .ok_or_else(|| de::Error::custom(format!("`{name}` has no variant with tag {index}")))?;
        let payload = match &variant.fields {
            Fields::Unit => {
                access.unit_variant()?;
                return Ok(Json::String(variant.name.clone()));
            }
            Fields::Newtype(inner) => access.newtype_variant_seed(self.inner(inner))?,
            Fields::Tuple(types) => {
                let ty = Type::Tuple(types.clone());
                access.tuple_variant(types.len(), Decode { schema: self.schema, ty: &ty, depth: self.depth + 1 })?
            }
            Fields::Struct(fields) => {
                access.tuple_variant(fields.len(), Fields0 { schema: self.schema, fields, depth: self.depth + 1 })?
            }
        };
        let mut object = serde_json::Map::new();
        object.insert(variant.name.clone(), payload);
        Ok(Json::Object(object))
    }
}

/// The fields of a struct variant, read as the tuple postcard writes.
struct Fields0<'a> {
    schema: &'a ServiceSchema,
    fields: &'a [rpc::schema::Field],
    depth: usize,
}

impl<'de> Visitor<'de> for Fields0<'_> {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the fields of a variant")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut object = serde_json::Map::new();
        for f in self.fields {
            let value = seq
                .next_element_seed(Decode { schema: self.schema, ty: &f.ty, depth: self.depth })?
                .ok_or_else(|| de::Error::custom("a variant ended early"))?;
            object.insert(f.name.clone(), value);
        }
        Ok(Json::Object(object))
    }
}

#[cfg(test)]
mod tests;
