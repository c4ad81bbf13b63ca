//! Schemas: the full structure of every method's arguments, result and error, as the reflection
//! service reports them and as a client that has no Rust types (the `rpc` tool, a client in
//! another language) encodes and decodes calls by.
//!
//! `#[service]` builds a [`ServiceSchema`] for each service, the first time one is asked for,
//! by tracing its types: the tracer runs each type's own `Deserialize` against a recording
//! deserializer, so nothing beyond the serde derives is asked of the user.
//!
//! Why a tracer of our own: `serde-reflection` does this (and was tried first), but it stops
//! exploring a sequence, option or map once it knows the element's type, so an enum met only
//! inside a `Vec` or `Option` keeps just its first variant unless every such enum is traced by
//! name, which would ask the user to list them. `postcard-schema` needs a derive of its own on
//! every type. Ours (`schema/trace.rs`, about 400 lines) runs a type again until every enum it
//! reaches has shown every variant. The types of this module are what travels and what other
//! clients are written against, so they change only with [`SCHEMA_VERSION`].
//!
//! # The format, version 1
//!
//! A [`Type`] is a primitive, a composite of types (option, sequence, map, tuple, array), or
//! [`Type::Named`]: a struct or enum described once in [`ServiceSchema::types`] under its serde
//! name. Values travel as postcard encodes the Rust types they come from: integers above 8 bits
//! as varints (signed ones zigzagged), floats little-endian, strings, byte strings, sequences and
//! maps with a varint length, options and enum variants with a varint tag (the variant's
//! [`Variant::index`]), struct fields and tuple elements in order with nothing between them.
//! A method's arguments travel as one tuple of [`MethodSchema::args`]; the answer of a method
//! with an [`error`](MethodSchema::error) is `Result<returns, error>`, that is an enum whose
//! variant 0 is `Ok(returns)` and variant 1 `Err(error)`.
//!
//! A type the tracer cannot follow (a `Deserialize` that rejects the tracer's placeholder values,
//! `#[serde(untagged)]` or `flatten`, `deserialize_any`) is [`Type::Unknown`], with the reason: the method is
//! still listed, but cannot be called without its Rust types.

mod trace;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::descriptor::MethodDescriptor;

/// The version of the schema format described in the [module docs](self). Bumped whenever a
/// type of this module changes in a way an older reader would misread.
pub const SCHEMA_VERSION: u32 = 1;

/// The structure of a value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Type {
    /// `()`: nothing on the wire.
    Unit,
    /// `bool`: one byte, 0 or 1.
    Bool,
    /// `i8`.
    I8,
    /// `i16`.
    I16,
    /// `i32`.
    I32,
    /// `i64`.
    I64,
    /// `i128`.
    I128,
    /// `u8`.
    U8,
    /// `u16`.
    U16,
    /// `u32`.
    U32,
    /// `u64`.
    U64,
    /// `u128`.
    U128,
    /// `f32`.
    F32,
    /// `f64`.
    F64,
    /// `char`, encoded as a string of one character.
    Char,
    /// A UTF-8 string.
    Str,
    /// A byte string (`rpc::Bytes`, `serde_bytes`).
    Bytes,
    /// `Option<T>`.
    Option(Box<Type>),
    /// A sequence (`Vec<T>`, `HashSet<T>`, ...).
    Seq(Box<Type>),
    /// A map (`HashMap<K, V>`, `BTreeMap<K, V>`).
    Map {
        /// The keys' type.
        key: Box<Type>,
        /// The values' type.
        value: Box<Type>,
    },
    /// A tuple `(A, B, ...)`.
    Tuple(Vec<Type>),
    /// An array `[T; N]`.
    Array {
        /// The elements' type.
        item: Box<Type>,
        /// The number of elements.
        len: u64,
    },
    /// A struct or enum of [`ServiceSchema::types`], by its serde name.
    Named(String),
    /// A type the tracer could not follow; the reason.
    Unknown(String),
}

/// A named field of a struct, of a struct variant, or a method's argument.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Field {
    /// The field's (serde) name.
    pub name: String,
    /// Its type.
    pub ty: Type,
}

impl Field {
    /// A field called `name` of type `ty`.
    pub fn new(name: impl Into<String>, ty: Type) -> Self {
        Field { name: name.into(), ty }
    }
}

/// The shape of a struct or of an enum variant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Fields {
    /// `struct A;`, `A` in `enum E { A }`: nothing on the wire.
    Unit,
    /// `struct A(T);`, `A(T)`: the inner value.
    Newtype(Type),
    /// `struct A(T, U);`, `A(T, U)`: the elements in order.
    Tuple(Vec<Type>),
    /// `struct A { .. }`, `A { .. }`: the fields in order.
    Struct(Vec<Field>),
}

/// One variant of an enum.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Variant {
    /// The variant's (serde) name.
    pub name: String,
    /// Its tag on the wire.
    pub index: u32,
    /// What follows the tag.
    pub fields: Fields,
}

/// A struct or an enum.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Shape {
    /// A struct.
    Struct(Fields),
    /// An enum, its variants in tag order.
    Enum(Vec<Variant>),
}

/// A named type: what a [`Type::Named`] refers to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TypeDef {
    /// The serde name (the Rust name unless renamed).
    pub name: String,
    /// Its structure.
    pub shape: Shape,
}

/// How a method answers and what it takes besides its arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MethodKind {
    /// One request, one answer.
    Unary,
    /// The server answers with a stream of [`MethodSchema::returns`] items.
    ServerStream,
    /// The client sends a stream ([`MethodSchema::stream_arg`]) and gets one answer.
    ClientStream,
}

/// One method.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MethodSchema {
    /// The method's name (`add`).
    pub name: String,
    /// Its wire id.
    pub id: u32,
    /// Its signature as compared in the hello exchange, e.g. `(i64, i64) -> i64`.
    pub signature: String,
    /// Its doc comment, without the `///`.
    pub docs: String,
    /// Unary or streaming.
    pub kind: MethodKind,
    /// The arguments that travel in the request, in order (not the stream argument).
    pub args: Vec<Field>,
    /// The stream argument of a [`MethodKind::ClientStream`] method: its name and item type.
    pub stream_arg: Option<Field>,
    /// The value returned (`T` of `Result<T, E>`), or each item of a returned stream.
    pub returns: Type,
    /// The application's error type, for a method declared `-> Result<T, E>`.
    pub error: Option<Type>,
}

/// One service: its methods and the named types they use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSchema {
    /// The service's name, as a client names it in its hello.
    pub name: String,
    /// The trait's doc comment.
    pub docs: String,
    /// Every method, in declaration order.
    pub methods: Vec<MethodSchema>,
    /// Every struct and enum the methods use, by name.
    pub types: Vec<TypeDef>,
}

impl ServiceSchema {
    /// The method called `name`.
    pub fn method(&self, name: &str) -> Option<&MethodSchema> {
        self.methods.iter().find(|m| m.name == name)
    }

    /// The named type `name`.
    pub fn type_def(&self, name: &str) -> Option<&TypeDef> {
        self.types.iter().find(|t| t.name == name)
    }
}

/// Builds a [`ServiceSchema`] by tracing types; used by the code `#[service]` generates.
pub struct SchemaBuilder {
    tracer: trace::Tracer,
    methods: Vec<MethodSchema>,
}

impl std::fmt::Debug for SchemaBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchemaBuilder").field("methods", &self.methods.len()).finish_non_exhaustive()
    }
}

impl SchemaBuilder {
    /// The schema of the service `name` with doc comment `docs`, whose methods `trace` adds.
    pub fn build(name: &str, docs: &str, trace: impl FnOnce(&mut SchemaBuilder)) -> ServiceSchema {
        let mut builder = SchemaBuilder { tracer: trace::Tracer::default(), methods: Vec::new() };
        trace(&mut builder);
        ServiceSchema {
            name: name.to_owned(),
            docs: docs.to_owned(),
            methods: builder.methods,
            types: builder.tracer.finish(),
        }
    }

    /// The structure of `T`, tracing it (and the types it names) into this schema.
    pub fn ty<T: DeserializeOwned>(&mut self) -> Type {
        self.tracer.trace::<T>().unwrap_or_else(|e| Type::Unknown(format!("{}: {e}", std::any::type_name::<T>())))
    }

    /// Adds a method.
    #[allow(clippy::too_many_arguments)]
    pub fn method(
        &mut self,
        descriptor: &MethodDescriptor,
        docs: &str,
        kind: MethodKind,
        args: Vec<Field>,
        stream_arg: Option<Field>,
        returns: Type,
        error: Option<Type>,
    ) {
        self.methods.push(MethodSchema {
            name: descriptor.name.to_owned(),
            id: descriptor.id,
            signature: descriptor.signature.to_owned(),
            docs: docs.to_owned(),
            kind,
            args,
            stream_arg,
            returns,
            error,
        });
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[derive(Serialize, Deserialize)]
    #[allow(dead_code)]
    enum Shape2 {
        Circle { r: f64 },
        Square(u32),
        Nothing,
    }

    #[derive(Serialize, Deserialize)]
    #[allow(dead_code)]
    struct Outer {
        name: String,
        shapes: Vec<Shape2>,
        tags: HashMap<String, Option<i64>>,
        pair: (u8, bool),
    }

    #[test]
    fn nested_types_are_traced_with_every_variant() {
        let mut types = Vec::new();
        let schema = SchemaBuilder::build("S", "", |builder| {
            types = vec![builder.ty::<Outer>(), builder.ty::<Option<Vec<i64>>>()];
        });
        assert_eq!(types[0], Type::Named("Outer".into()));
        assert_eq!(types[1], Type::Option(Box::new(Type::Seq(Box::new(Type::I64)))));
        let outer = schema.type_def("Outer").unwrap();
        assert_eq!(
            outer.shape,
            Shape::Struct(Fields::Struct(vec![
                Field::new("name", Type::Str),
                Field::new("shapes", Type::Seq(Box::new(Type::Named("Shape2".into())))),
                Field::new(
                    "tags",
                    Type::Map { key: Box::new(Type::Str), value: Box::new(Type::Option(Box::new(Type::I64))) }
                ),
                Field::new("pair", Type::Tuple(vec![Type::U8, Type::Bool])),
            ]))
        );
        let Shape::Enum(variants) = &schema.type_def("Shape2").unwrap().shape else { panic!() };
        let names: Vec<_> = variants.iter().map(|v| (v.index, v.name.as_str())).collect();
        assert_eq!(names, [(0, "Circle"), (1, "Square"), (2, "Nothing")]);
        assert_eq!(variants[0].fields, Fields::Struct(vec![Field::new("r", Type::F64)]));
    }

    #[derive(Serialize, Deserialize)]
    #[allow(dead_code)]
    enum List {
        Cons(i64, Box<List>),
        Nil,
    }

    #[derive(Serialize, Deserialize)]
    #[allow(dead_code)]
    struct Tree {
        children: Vec<Tree>,
        next: Option<Box<Tree>>,
        list: List,
        key: [u8; 4],
    }

    #[test]
    fn recursive_types_end_and_are_complete() {
        let mut ty = Type::Unit;
        let schema = SchemaBuilder::build("S", "", |builder| ty = builder.ty::<Tree>());
        assert_eq!(ty, Type::Named("Tree".into()));
        assert_eq!(
            schema.type_def("Tree").unwrap().shape,
            Shape::Struct(Fields::Struct(vec![
                Field::new("children", Type::Seq(Box::new(Type::Named("Tree".into())))),
                Field::new("next", Type::Option(Box::new(Type::Named("Tree".into())))),
                Field::new("list", Type::Named("List".into())),
                Field::new("key", Type::Array { item: Box::new(Type::U8), len: 4 }),
            ]))
        );
        let Shape::Enum(variants) = &schema.type_def("List").unwrap().shape else { panic!() };
        assert_eq!(variants[0].fields, Fields::Tuple(vec![Type::I64, Type::Named("List".into())]));
        assert_eq!(variants[1].fields, Fields::Unit);
    }

    #[test]
    fn an_untraceable_type_is_unknown_not_a_panic() {
        #[derive(Serialize)]
        struct Picky;
        impl<'de> Deserialize<'de> for Picky {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let n = u32::deserialize(d)?;
                if n == 0 {
                    return Err(serde::de::Error::custom("zero"));
                }
                Ok(Picky)
            }
        }
        SchemaBuilder::build("S", "", |builder| assert!(matches!(builder.ty::<Picky>(), Type::Unknown(_))));
    }
}
