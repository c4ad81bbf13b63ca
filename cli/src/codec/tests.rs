//! The codec against postcard and serde_json themselves: JSON encoded by the schema gives the
//! bytes the Rust types give, and those bytes decode to the JSON serde_json writes.

use std::collections::BTreeMap;

use rpc::schema::{SchemaBuilder, ServiceSchema, Type};
use serde::{Deserialize, Serialize};

use super::*;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Shape {
    Circle { r: f64 },
    Rect(u32, u32),
    Tag(String),
    Empty,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Id(u64);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Item {
    id: Id,
    name: String,
    small: i8,
    wide: i128,
    shapes: Vec<Shape>,
    tags: BTreeMap<String, Option<i32>>,
    by_number: BTreeMap<u16, bool>,
    pair: (u8, char),
    note: Option<String>,
    raw: rpc::Bytes,
}

fn sample() -> Item {
    Item {
        id: Id(7),
        name: "widget".into(),
        small: -3,
        wide: -(1i128 << 100),
        shapes: vec![Shape::Circle { r: 1.5 }, Shape::Rect(2, 3), Shape::Tag("t".into()), Shape::Empty],
        tags: BTreeMap::from([("a".into(), Some(1)), ("b".into(), None)]),
        by_number: BTreeMap::from([(300, true)]),
        pair: (255, 'é'),
        note: None,
        raw: rpc::Bytes::from(vec![0u8, 1, 255]),
    }
}

/// serde_json's JSON for `item`, with the i128 as a string (a JSON number cannot hold it) and
/// the byte string as an array of numbers.
fn json_of(item: &Item) -> Json {
    let mut json = serde_json::to_value(Item { wide: 0, ..item.clone() }).unwrap();
    json["wide"] = Json::String(item.wide.to_string());
    json["raw"] = Json::Array(item.raw.iter().map(|&b| Json::from(b)).collect());
    json
}

fn schema_of<T: serde::de::DeserializeOwned>() -> (ServiceSchema, Type) {
    let mut ty = Type::Unit;
    let schema = SchemaBuilder::build("T", "", |builder| ty = builder.ty::<T>());
    (schema, ty)
}

#[test]
fn json_encodes_to_the_bytes_of_the_rust_value_and_back() {
    let (schema, ty) = schema_of::<Item>();
    let item = sample();
    let json = json_of(&item);
    let value = encode_value(&schema, &ty, &json, "item").unwrap();
    let bytes = postcard::to_stdvec(&value).unwrap();
    assert_eq!(bytes, postcard::to_stdvec(&item).unwrap());
    assert_eq!(decode(&schema, &ty, &bytes).unwrap(), json);
}

#[test]
fn a_missing_option_field_is_none_and_the_result_decodes_both_ways() {
    let (schema, ty) = schema_of::<Item>();
    let mut json = json_of(&sample());
    json.as_object_mut().unwrap().remove("note");
    json["wide"] = Json::from(5);
    json["raw"] = Json::String("hi".into());
    let bytes = postcard::to_stdvec(&encode_value(&schema, &ty, &json, "item").unwrap()).unwrap();
    let back: Item = postcard::from_bytes(&bytes).unwrap();
    assert_eq!(back.note, None);
    assert_eq!(back.raw.as_ref(), b"hi");

    let (mut ok, mut err) = (Type::Unit, Type::Unit);
    let schema = SchemaBuilder::build("T", "", |builder| (ok, err) = (builder.ty::<u64>(), builder.ty::<Shape>()));
    let answer: Result<u64, Shape> = Err(Shape::Rect(1, 2));
    let decoded = decode_fallible(&schema, &ok, &err, &postcard::to_stdvec(&answer).unwrap()).unwrap();
    assert_eq!(decoded, Err(serde_json::json!({"Rect": [1, 2]})));
    let answer: Result<u64, Shape> = Ok(9);
    assert_eq!(decode_fallible(&schema, &ok, &err, &postcard::to_stdvec(&answer).unwrap()).unwrap(), Ok(Json::from(9)));
}

#[test]
fn mismatches_say_what_was_expected_and_where() {
    let (schema, ty) = schema_of::<Item>();
    let json = json_of(&sample());
    let with = |path: &str, value: Json| {
        let mut json = json.clone();
        json.pointer_mut(path).map(|slot| *slot = value).unwrap();
        encode_value(&schema, &ty, &json, "argument `item`").unwrap_err().to_string()
    };
    assert_eq!(with("/name", Json::from(1)), "expected a string for argument `item`.name, got 1");
    assert_eq!(with("/small", Json::from(200)), "200 is out of range for argument `item`.small (i8: -128..=127)");
    assert_eq!(with("/tags/a", Json::from("x")), "expected i32 for argument `item`.tags[\"a\"], got \"x\"");
    assert!(with("/shapes/0", Json::from("Square")).contains("`Shape` has no variant `Square`"));
    assert!(with("/pair", Json::from(1)).starts_with("expected an array of 2 (u8, char) for argument `item`.pair"));
    let mut extra = json.clone();
    extra["colour"] = Json::from("red");
    assert!(encode_value(&schema, &ty, &extra, "x").unwrap_err().to_string().contains("no field `colour`"));
}

#[test]
fn truncated_or_padded_bytes_are_errors_not_panics() {
    let (schema, ty) = schema_of::<Item>();
    let bytes = postcard::to_stdvec(&sample()).unwrap();
    for len in 0..bytes.len() {
        assert!(decode(&schema, &ty, &bytes[..len]).is_err(), "{len} bytes decoded");
    }
    let mut padded = bytes.clone();
    padded.push(0);
    assert!(decode(&schema, &ty, &padded).unwrap_err().contains("left over"));
}

#[test]
fn deep_nesting_is_refused() {
    let mut json = Json::Null;
    let mut ty = Type::I64;
    for _ in 0..200 {
        json = Json::Array(vec![json]);
        ty = Type::Seq(Box::new(ty));
    }
    let schema = SchemaBuilder::build("T", "", |_| {});
    assert!(encode_value(&schema, &ty, &json, "x").unwrap_err().to_string().contains("nested"));
    let bytes = vec![1u8; 300];
    // postcard keeps no message of a custom error: that it is an error, not a stack overflow.
    assert!(decode(&schema, &ty, &bytes).is_err());
}
