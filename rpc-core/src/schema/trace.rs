//! The tracer: learns a type's structure by running its own `Deserialize` against a
//! deserializer that records what it is asked for and answers with placeholder values.
//!
//! One deserialization yields one value, so it takes one variant of each enum it meets; the
//! tracer runs the type again while some enum it met has variants it has not taken, and merges
//! what each run learned. Recursion (`enum List { Nil, Cons(Box<List>) }`, `struct Tree {
//! children: Vec<Tree> }`) is cut where a type is met inside itself: a sequence, map or option
//! there is empty, and an enum takes a variant already known to end.

use std::collections::{BTreeMap, HashMap};

use serde::de::{self, DeserializeOwned, DeserializeSeed, IntoDeserializer, Visitor};

use super::{Field, Fields, Shape, Type, Variant};

/// Runs of one type before the tracer settles for what it has.
const MAX_RUNS: usize = 4096;
/// Nesting of one run beyond which it fails (a type that cannot be finite).
const MAX_DEPTH: usize = 256;

/// What a run learned of a value; `Unknown` where it did not get there.
#[derive(Debug, Clone, PartialEq)]
enum Found {
    Unknown,
    Known(Type),
    Option(Box<Found>),
    Seq(Box<Found>),
    Map(Box<Found>, Box<Found>),
    Tuple(Vec<Found>),
    Array(Box<Found>, u64),
}

impl Found {
    /// `self` with what `other` knows that `self` does not.
    fn merge(&mut self, other: Found) {
        match (self, other) {
            (_, Found::Unknown) => {}
            (this @ Found::Unknown, other) => *this = other,
            (Found::Option(a), Found::Option(b))
            | (Found::Seq(a), Found::Seq(b))
            | (Found::Array(a, _), Found::Array(b, _)) => a.merge(*b),
            (Found::Map(ka, va), Found::Map(kb, vb)) => {
                ka.merge(*kb);
                va.merge(*vb);
            }
            (Found::Tuple(a), Found::Tuple(b)) => {
                for (a, b) in a.iter_mut().zip(b) {
                    a.merge(b);
                }
            }
            _ => {}
        }
    }

    fn finish(self) -> Type {
        match self {
            Found::Unknown => Type::Unknown("the tracer never reached this value".to_owned()),
            Found::Known(ty) => ty,
            Found::Option(t) => Type::Option(Box::new(t.finish())),
            Found::Seq(t) => Type::Seq(Box::new(t.finish())),
            Found::Map(k, v) => Type::Map { key: Box::new(k.finish()), value: Box::new(v.finish()) },
            Found::Tuple(ts) => Type::Tuple(ts.into_iter().map(Found::finish).collect()),
            Found::Array(t, len) => Type::Array { item: Box::new(t.finish()), len },
        }
    }
}

/// What is learned of a struct's or a variant's fields.
#[derive(Debug, Clone)]
enum FoundFields {
    Unit,
    Newtype(Found),
    Tuple(Vec<Found>),
    Struct(Vec<(&'static str, Found)>),
}

impl FoundFields {
    fn merge(&mut self, other: FoundFields) {
        match (self, other) {
            (FoundFields::Newtype(a), FoundFields::Newtype(b)) => a.merge(b),
            (FoundFields::Tuple(a), FoundFields::Tuple(b)) => a.iter_mut().zip(b).for_each(|(a, b)| a.merge(b)),
            (FoundFields::Struct(a), FoundFields::Struct(b)) => {
                a.iter_mut().zip(b).for_each(|((_, a), (_, b))| a.merge(b))
            }
            _ => {}
        }
    }

    fn finish(self) -> Fields {
        match self {
            FoundFields::Unit => Fields::Unit,
            FoundFields::Newtype(t) => Fields::Newtype(t.finish()),
            FoundFields::Tuple(ts) => Fields::Tuple(ts.into_iter().map(Found::finish).collect()),
            FoundFields::Struct(fs) => Fields::Struct(fs.into_iter().map(|(n, t)| Field::new(n, t.finish())).collect()),
        }
    }
}

#[derive(Debug)]
enum FoundShape {
    Struct(FoundFields),
    Enum { names: &'static [&'static str], variants: BTreeMap<u32, FoundFields> },
}

/// Traces types into named structs and enums; one per service schema.
#[derive(Debug, Default)]
pub(crate) struct Tracer {
    types: BTreeMap<String, FoundShape>,
    /// Named types being deserialized in this run, innermost last.
    stack: Vec<&'static str>,
    /// Enums whose variants ended without meeting themselves (safe to take when recursing).
    ends: HashMap<&'static str, u32>,
    /// Set when a run took an enum variant never taken before: run again.
    learned: bool,
    /// How often each enum was entered, to tell a variant that meets its enum again.
    entries: HashMap<&'static str, u64>,
}

/// A tracing failure, as serde's deserializer errors are made.
#[derive(Debug)]
pub(crate) struct TraceError(String);

impl std::fmt::Display for TraceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TraceError {}

impl de::Error for TraceError {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        TraceError(msg.to_string())
    }
}

impl Tracer {
    /// The structure of `T`.
    pub(crate) fn trace<T: DeserializeOwned>(&mut self) -> Result<Type, TraceError> {
        let mut found = Found::Unknown;
        for _ in 0..MAX_RUNS {
            self.learned = false;
            self.stack.clear();
            let mut slot = Found::Unknown;
            T::deserialize(TraceDe { tracer: self, slot: &mut slot, depth: 0 })?;
            found.merge(slot);
            // A run that took no new variant will not take one next time either.
            if !self.learned {
                break;
            }
        }
        Ok(found.finish())
    }

    /// The named types found, for the schema.
    pub(crate) fn finish(self) -> Vec<super::TypeDef> {
        self.types
            .into_iter()
            .map(|(name, shape)| super::TypeDef {
                name,
                shape: match shape {
                    FoundShape::Struct(fields) => Shape::Struct(fields.finish()),
                    FoundShape::Enum { names, variants } => Shape::Enum(
                        (0..names.len() as u32)
                            .map(|index| Variant {
                                name: names[index as usize].to_owned(),
                                index,
                                fields: variants.get(&index).cloned().map(FoundFields::finish).unwrap_or(
                                    Fields::Newtype(Type::Unknown("a variant the tracer could not reach".to_owned())),
                                ),
                            })
                            .collect(),
                    ),
                },
            })
            .collect()
    }

    fn record_struct(&mut self, name: &str, fields: FoundFields) {
        match self.types.get_mut(name) {
            Some(FoundShape::Struct(known)) => known.merge(fields),
            _ => {
                self.types.insert(name.to_owned(), FoundShape::Struct(fields));
            }
        }
    }

    /// Whether `name` is being deserialized inside itself.
    fn recursing(&self) -> bool {
        self.stack.iter().enumerate().any(|(i, n)| self.stack[i + 1..].contains(n))
    }
}

/// The recording deserializer for one value.
struct TraceDe<'t> {
    tracer: &'t mut Tracer,
    slot: &'t mut Found,
    depth: usize,
}

impl<'t> TraceDe<'t> {
    fn deeper(&self) -> Result<usize, TraceError> {
        if self.depth >= MAX_DEPTH {
            return Err(TraceError(format!("a type nested more than {MAX_DEPTH} deep (is it infinite?)")));
        }
        Ok(self.depth + 1)
    }

    fn known<V>(self, ty: Type, value: V) -> Result<V, TraceError> {
        self.slot.merge(Found::Known(ty));
        Ok(value)
    }

    /// The struct `name` of `len` fields (named or a tuple struct's, as `fields` makes them of
    /// what was found in each): every field traced in turn, then the struct recorded.
    fn fields_of<'de, V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
        fields: impl FnOnce(Vec<Found>) -> FoundFields,
    ) -> Result<V::Value, TraceError> {
        let depth = self.deeper()?;
        self.tracer.stack.push(name);
        let mut slots = vec![Found::Unknown; len];
        let value = visitor.visit_seq(SeqOf { tracer: self.tracer, slots: slots.iter_mut(), depth })?;
        self.tracer.stack.pop();
        self.tracer.record_struct(name, fields(slots));
        self.known(Type::Named(name.to_owned()), value)
    }
}

/// Feeds `slots` as a sequence: each element is deserialized into its own slot.
struct SeqOf<'t, 's> {
    tracer: &'t mut Tracer,
    slots: std::slice::IterMut<'s, Found>,
    depth: usize,
}

impl<'de> de::SeqAccess<'de> for SeqOf<'_, '_> {
    type Error = TraceError;

    fn next_element_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<Option<S::Value>, TraceError> {
        let Some(slot) = self.slots.next() else { return Ok(None) };
        seed.deserialize(TraceDe { tracer: self.tracer, slot, depth: self.depth }).map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.slots.len())
    }
}

/// One map entry, or none.
struct MapOf<'t, 's> {
    tracer: &'t mut Tracer,
    entry: Option<(&'s mut Found, &'s mut Found)>,
    value: Option<&'s mut Found>,
    depth: usize,
}

impl<'de> de::MapAccess<'de> for MapOf<'_, '_> {
    type Error = TraceError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, TraceError> {
        let Some((key, value)) = self.entry.take() else { return Ok(None) };
        self.value = Some(value);
        seed.deserialize(TraceDe { tracer: self.tracer, slot: key, depth: self.depth }).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, TraceError> {
        let slot = self.value.take().ok_or_else(|| TraceError("a map value without its key".to_owned()))?;
        seed.deserialize(TraceDe { tracer: self.tracer, slot, depth: self.depth })
    }
}

/// An enum: its variant's index, then its fields.
struct EnumOf<'t> {
    tracer: &'t mut Tracer,
    index: u32,
    fields: &'t mut Option<FoundFields>,
    depth: usize,
}

impl<'de, 't> de::EnumAccess<'de> for EnumOf<'t> {
    type Error = TraceError;
    type Variant = EnumOf<'t>;

    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Self), TraceError> {
        let value = seed.deserialize(IntoDeserializer::<TraceError>::into_deserializer(u64::from(self.index)))?;
        Ok((value, self))
    }
}

impl<'de> de::VariantAccess<'de> for EnumOf<'_> {
    type Error = TraceError;

    fn unit_variant(self) -> Result<(), TraceError> {
        *self.fields = Some(FoundFields::Unit);
        Ok(())
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, TraceError> {
        let mut slot = Found::Unknown;
        let value = seed.deserialize(TraceDe { tracer: self.tracer, slot: &mut slot, depth: self.depth })?;
        *self.fields = Some(FoundFields::Newtype(slot));
        Ok(value)
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, TraceError> {
        let mut slots = vec![Found::Unknown; len];
        let value = visitor.visit_seq(SeqOf { tracer: self.tracer, slots: slots.iter_mut(), depth: self.depth })?;
        *self.fields = Some(FoundFields::Tuple(slots));
        Ok(value)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        let mut slots = vec![Found::Unknown; fields.len()];
        let value = visitor.visit_seq(SeqOf { tracer: self.tracer, slots: slots.iter_mut(), depth: self.depth })?;
        *self.fields = Some(FoundFields::Struct(fields.iter().copied().zip(slots).collect()));
        Ok(value)
    }
}

macro_rules! primitive {
    ($($method:ident => $ty:ident, $visit:ident($value:expr);)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
            let value = visitor.$visit($value)?;
            self.known(Type::$ty, value)
        }
    )*};
}

impl<'de> de::Deserializer<'de> for TraceDe<'_> {
    type Error = TraceError;

    primitive! {
        deserialize_bool => Bool, visit_bool(false);
        deserialize_i8 => I8, visit_i8(0);
        deserialize_i16 => I16, visit_i16(0);
        deserialize_i32 => I32, visit_i32(0);
        deserialize_i64 => I64, visit_i64(0);
        deserialize_i128 => I128, visit_i128(0);
        deserialize_u8 => U8, visit_u8(0);
        deserialize_u16 => U16, visit_u16(0);
        deserialize_u32 => U32, visit_u32(0);
        deserialize_u64 => U64, visit_u64(0);
        deserialize_u128 => U128, visit_u128(0);
        deserialize_f32 => F32, visit_f32(0.0);
        deserialize_f64 => F64, visit_f64(0.0);
        deserialize_char => Char, visit_char('a');
        deserialize_str => Str, visit_str("");
        deserialize_string => Str, visit_string(String::new());
        deserialize_bytes => Bytes, visit_bytes(&[]);
        deserialize_byte_buf => Bytes, visit_byte_buf(Vec::new());
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        let value = visitor.visit_unit()?;
        self.known(Type::Unit, value)
    }

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, TraceError> {
        Err(TraceError(
            "a type that deserializes by what it finds (deserialize_any: untagged or flattened serde attributes), which postcard cannot carry"
                .to_owned(),
        ))
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        self.deserialize_any(visitor)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        visitor.visit_u64(0)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        let depth = self.deeper()?;
        let mut inner = Found::Unknown;
        let value = if self.tracer.recursing() {
            visitor.visit_none()?
        } else {
            visitor.visit_some(TraceDe { tracer: self.tracer, slot: &mut inner, depth })?
        };
        self.slot.merge(Found::Option(Box::new(inner)));
        Ok(value)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        let depth = self.deeper()?;
        let mut slots = vec![Found::Unknown; usize::from(!self.tracer.recursing())];
        let value = visitor.visit_seq(SeqOf { tracer: self.tracer, slots: slots.iter_mut(), depth })?;
        self.slot.merge(Found::Seq(Box::new(slots.pop().unwrap_or(Found::Unknown))));
        Ok(value)
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, TraceError> {
        let depth = self.deeper()?;
        let mut slots = vec![Found::Unknown; len];
        let value = visitor.visit_seq(SeqOf { tracer: self.tracer, slots: slots.iter_mut(), depth })?;
        // serde writes `[T; N]` as a tuple of N: one type repeated is taken as an array.
        let found = match slots.first() {
            Some(first) if len > 1 && slots.iter().all(|s| s == first) && !matches!(first, Found::Unknown) => {
                Found::Array(Box::new(first.clone()), len as u64)
            }
            _ => Found::Tuple(slots),
        };
        self.slot.merge(found);
        Ok(value)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        let depth = self.deeper()?;
        let (mut key, mut val) = (Found::Unknown, Found::Unknown);
        let entry = if self.tracer.recursing() { None } else { Some((&mut key, &mut val)) };
        let value = visitor.visit_map(MapOf { tracer: self.tracer, entry, value: None, depth })?;
        self.slot.merge(Found::Map(Box::new(key), Box::new(val)));
        Ok(value)
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(self, name: &'static str, visitor: V) -> Result<V::Value, TraceError> {
        self.tracer.record_struct(name, FoundFields::Unit);
        let value = visitor.visit_unit()?;
        self.known(Type::Named(name.to_owned()), value)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        let depth = self.deeper()?;
        self.tracer.stack.push(name);
        let mut inner = Found::Unknown;
        let value = visitor.visit_newtype_struct(TraceDe { tracer: self.tracer, slot: &mut inner, depth })?;
        self.tracer.stack.pop();
        self.tracer.record_struct(name, FoundFields::Newtype(inner));
        self.known(Type::Named(name.to_owned()), value)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        self.fields_of(name, len, visitor, FoundFields::Tuple)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        self.fields_of(name, fields.len(), visitor, |slots| {
            FoundFields::Struct(fields.iter().copied().zip(slots).collect())
        })
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        if variants.is_empty() {
            return Err(TraceError(format!("the enum `{name}` has no variants: no value of it can travel")));
        }
        let depth = self.deeper()?;
        let tracer = &mut *self.tracer;
        let known: Vec<u32> = match tracer.types.get(name) {
            Some(FoundShape::Enum { variants, .. }) => variants.keys().copied().collect(),
            _ => Vec::new(),
        };
        let inside_itself = tracer.stack.contains(&name);
        // Inside itself, a variant known to end (else the last, where base cases tend to be
        // written last when not first); outside, the first variant not yet taken.
        let index = if inside_itself {
            tracer.ends.get(name).copied().unwrap_or(variants.len() as u32 - 1)
        } else {
            (0..variants.len() as u32).find(|i| !known.contains(i)).unwrap_or(0)
        };
        let entered = tracer.entries.entry(name).or_default();
        *entered += 1;
        let before = *entered;
        tracer.stack.push(name);
        let mut fields = None;
        let value = visitor.visit_enum(EnumOf { tracer, index, fields: &mut fields, depth })?;
        let tracer = &mut *self.tracer;
        tracer.stack.pop();
        let fields = fields.ok_or_else(|| TraceError(format!("a variant of `{name}` read without its fields")))?;
        // A variant that did not meet its own enum again ends: safe to take inside itself.
        if tracer.entries.get(name) == Some(&before) {
            tracer.ends.entry(name).or_insert(index);
        }
        match tracer
            .types
            .entry(name.to_owned())
            .or_insert_with(|| FoundShape::Enum { names: variants, variants: BTreeMap::new() })
        {
            FoundShape::Enum { variants: known, .. } => match known.get_mut(&index) {
                Some(existing) => existing.merge(fields),
                None => {
                    known.insert(index, fields);
                    tracer.learned = true;
                }
            },
            FoundShape::Struct(_) => return Err(TraceError(format!("`{name}` is both a struct and an enum"))),
        }
        self.known(Type::Named(name.to_owned()), value)
    }

    fn is_human_readable(&self) -> bool {
        // As postcard: types then take the shape they have on the wire.
        false
    }
}
