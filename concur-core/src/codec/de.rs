//! The bounded decoder: a `serde::Deserializer` wrapper around bincode's
//! that makes decoding bytes from another process safe whatever they hold.
//!
//! bincode's own serde decoder trusts the lengths it reads: a string that
//! claims 1 TiB is allocated before its bytes are looked for, a value nested
//! 100,000 deep recurses 100,000 times, and a sequence of zero-sized
//! elements that claims 2^60 of them loops 2^60 times. The guard here stops
//! each of those before it happens:
//!
//! - **Strings and byte buffers** are read as slices borrowed from the input
//!   (bincode checks the claimed length against the bytes that are left) and
//!   only then copied into an owned `String` / `Vec<u8>` of that length. A
//!   claimed length the input cannot hold fails before anything is allocated.
//! - **Sequence and map lengths** are input-claimed too. Every element that
//!   takes at least one byte starts at its own byte of the input, so their
//!   sum over the whole decode is at most the input's length; only elements
//!   that encode to nothing (`()`, empty structs) can go past it, and those
//!   get [`ZERO_SIZE_SLACK`] more. A length past what is left of that budget
//!   fails before the first element is read.
//! - **Size hints** (what `Vec` and `HashMap` preallocate from) are capped so
//!   that all hints of one decode add up to at most the input's length in
//!   elements; a collection that really is longer grows as its elements
//!   arrive, each of which was read from the input.
//! - **Nesting** (sequences, tuples, structs, maps, enums, options, newtypes)
//!   deeper than [`MAX_DEPTH`] fails instead of recursing on.
//!
//! Why not bincode's `with_limit`: see [`super::decode`].

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, Visitor};

use super::MAX_DEPTH;

/// How many zero-byte elements (of `Vec<()>` and the like) a decode may
/// hold beyond one element per input byte. Costs only CPU (they allocate
/// nothing); bounds the loop a forged length can make.
pub const ZERO_SIZE_SLACK: usize = 1 << 20;

/// The budgets of one decode.
pub(super) struct Limits {
    depth: Cell<usize>,
    /// Elements the remaining input can still claim.
    elements: Cell<usize>,
    /// Elements the remaining size hints may still announce.
    hints: Cell<usize>,
}

impl Limits {
    pub(super) fn for_input(len: usize) -> Self {
        Limits {
            depth: Cell::new(0),
            elements: Cell::new(len.saturating_add(ZERO_SIZE_SLACK)),
            hints: Cell::new(len),
        }
    }

    fn enter<E: de::Error>(&self) -> Result<(), E> {
        let d = self.depth.get() + 1;
        if d > MAX_DEPTH {
            return Err(E::custom(format_args!(
                "value nested deeper than {MAX_DEPTH} levels"
            )));
        }
        self.depth.set(d);
        Ok(())
    }

    fn leave(&self) {
        self.depth.set(self.depth.get() - 1);
    }

    /// Takes `len` input-claimed elements from the budget.
    fn claim<E: de::Error>(&self, len: usize) -> Result<(), E> {
        let left = self.elements.get();
        if len > left {
            return Err(E::custom(format_args!(
                "a length of {len} is more than the input can hold ({left} elements at most)"
            )));
        }
        self.elements.set(left - len);
        Ok(())
    }

    /// The size hint to pass on for a collection of `len` elements.
    fn hint(&self, len: Option<usize>) -> Option<usize> {
        let len = len?;
        let granted = len.min(self.hints.get());
        self.hints.set(self.hints.get() - granted);
        Some(granted)
    }
}

/// Runs a compound deserialization one level deeper.
fn nested<T, E: de::Error>(limits: &Limits, f: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
    limits.enter()?;
    let r = f();
    limits.leave();
    r
}

/// The deserializer handed to every value: forwards to bincode's and wraps
/// what comes back so nested values are guarded too.
pub(super) struct Guard<'a, D> {
    pub(super) inner: D,
    pub(super) limits: &'a Limits,
}

/// What the visitor is being asked for, when that changes how it is called.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Want {
    /// Forward every call as it comes.
    AsIs,
    /// An owned `String` / `Vec<u8>` was asked for and a borrowed one read.
    Owned,
    /// A sequence or map whose length came from the input.
    Claimed,
}

struct GuardVisitor<'a, V> {
    inner: V,
    limits: &'a Limits,
    want: Want,
}

struct GuardSeed<'a, S> {
    inner: S,
    limits: &'a Limits,
}

struct GuardAccess<'a, A> {
    inner: A,
    limits: &'a Limits,
}

impl<'a, D> Guard<'a, D> {
    fn visitor<V>(&self, inner: V, want: Want) -> GuardVisitor<'a, V> {
        GuardVisitor {
            inner,
            limits: self.limits,
            want,
        }
    }
}

macro_rules! forward_plain {
    ($($method:ident),* $(,)?) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
            let v = self.visitor(visitor, Want::AsIs);
            self.inner.$method(v)
        }
    )*};
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Guard<'_, D> {
    type Error = D::Error;

    forward_plain!(
        deserialize_any,
        deserialize_bool,
        deserialize_i8,
        deserialize_i16,
        deserialize_i32,
        deserialize_i64,
        deserialize_i128,
        deserialize_u8,
        deserialize_u16,
        deserialize_u32,
        deserialize_u64,
        deserialize_u128,
        deserialize_f32,
        deserialize_f64,
        deserialize_char,
        deserialize_str,
        deserialize_bytes,
        deserialize_unit,
        deserialize_identifier,
        deserialize_ignored_any,
    );

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        // Borrowed: the claimed length is checked against the input first.
        let v = self.visitor(visitor, Want::Owned);
        self.inner.deserialize_str(v)
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        let v = self.visitor(visitor, Want::Owned);
        self.inner.deserialize_bytes(v)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        let v = self.visitor(visitor, Want::AsIs);
        nested(self.limits, || self.inner.deserialize_option(v))
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        let v = self.visitor(visitor, Want::AsIs);
        self.inner.deserialize_unit_struct(name, v)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        let v = self.visitor(visitor, Want::AsIs);
        nested(self.limits, || {
            self.inner.deserialize_newtype_struct(name, v)
        })
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        let v = self.visitor(visitor, Want::Claimed);
        nested(self.limits, || self.inner.deserialize_seq(v))
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        let v = self.visitor(visitor, Want::AsIs);
        nested(self.limits, || self.inner.deserialize_tuple(len, v))
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        let v = self.visitor(visitor, Want::AsIs);
        nested(self.limits, || {
            self.inner.deserialize_tuple_struct(name, len, v)
        })
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        let v = self.visitor(visitor, Want::Claimed);
        nested(self.limits, || self.inner.deserialize_map(v))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        let v = self.visitor(visitor, Want::AsIs);
        nested(self.limits, || {
            self.inner.deserialize_struct(name, fields, v)
        })
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        let v = self.visitor(visitor, Want::AsIs);
        nested(self.limits, || {
            self.inner.deserialize_enum(name, variants, v)
        })
    }

    fn is_human_readable(&self) -> bool {
        self.inner.is_human_readable()
    }
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for GuardSeed<'_, S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<S::Value, D::Error> {
        self.inner.deserialize(Guard {
            inner: d,
            limits: self.limits,
        })
    }
}

macro_rules! forward_visit {
    ($($method:ident($ty:ty)),* $(,)?) => {$(
        fn $method<E: de::Error>(self, v: $ty) -> Result<Self::Value, E> {
            self.inner.$method(v)
        }
    )*};
}

impl<'de, V: Visitor<'de>> Visitor<'de> for GuardVisitor<'_, V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.expecting(f)
    }

    forward_visit!(
        visit_bool(bool),
        visit_i8(i8),
        visit_i16(i16),
        visit_i32(i32),
        visit_i64(i64),
        visit_i128(i128),
        visit_u8(u8),
        visit_u16(u16),
        visit_u32(u32),
        visit_u64(u64),
        visit_u128(u128),
        visit_f32(f32),
        visit_f64(f64),
        visit_char(char),
        visit_str(&str),
        visit_string(String),
        visit_bytes(&[u8]),
        visit_byte_buf(Vec<u8>),
    );

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<V::Value, E> {
        if self.want == Want::Owned {
            self.inner.visit_string(v.to_owned())
        } else {
            self.inner.visit_borrowed_str(v)
        }
    }

    fn visit_borrowed_bytes<E: de::Error>(self, v: &'de [u8]) -> Result<V::Value, E> {
        if self.want == Want::Owned {
            self.inner.visit_byte_buf(v.to_vec())
        } else {
            self.inner.visit_borrowed_bytes(v)
        }
    }

    fn visit_none<E: de::Error>(self) -> Result<V::Value, E> {
        self.inner.visit_none()
    }

    fn visit_unit<E: de::Error>(self) -> Result<V::Value, E> {
        self.inner.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        self.inner.visit_some(Guard {
            inner: d,
            limits: self.limits,
        })
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        self.inner.visit_newtype_struct(Guard {
            inner: d,
            limits: self.limits,
        })
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
        if self.want == Want::Claimed {
            self.limits.claim(seq.size_hint().unwrap_or(0))?;
        }
        self.inner.visit_seq(GuardAccess {
            inner: seq,
            limits: self.limits,
        })
    }

    fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        if self.want == Want::Claimed {
            self.limits.claim(map.size_hint().unwrap_or(0))?;
        }
        self.inner.visit_map(GuardAccess {
            inner: map,
            limits: self.limits,
        })
    }

    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<V::Value, A::Error> {
        self.inner.visit_enum(GuardAccess {
            inner: data,
            limits: self.limits,
        })
    }
}

impl<'a, A> GuardAccess<'a, A> {
    fn seed<S>(&self, inner: S) -> GuardSeed<'a, S> {
        GuardSeed {
            inner,
            limits: self.limits,
        }
    }
}

impl<'de, A: de::SeqAccess<'de>> de::SeqAccess<'de> for GuardAccess<'_, A> {
    type Error = A::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, A::Error> {
        let seed = self.seed(seed);
        self.inner.next_element_seed(seed)
    }

    fn size_hint(&self) -> Option<usize> {
        self.limits.hint(self.inner.size_hint())
    }
}

impl<'de, A: de::MapAccess<'de>> de::MapAccess<'de> for GuardAccess<'_, A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        let seed = self.seed(seed);
        self.inner.next_key_seed(seed)
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, A::Error> {
        let seed = self.seed(seed);
        self.inner.next_value_seed(seed)
    }

    fn size_hint(&self) -> Option<usize> {
        self.limits.hint(self.inner.size_hint())
    }
}

impl<'a, 'de, A: de::EnumAccess<'de>> de::EnumAccess<'de> for GuardAccess<'a, A> {
    type Error = A::Error;
    type Variant = GuardAccess<'a, A::Variant>;

    fn variant_seed<S: DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<(S::Value, Self::Variant), A::Error> {
        // The variant's index is read by bincode's own integer decoder.
        let (value, variant) = self.inner.variant_seed(seed)?;
        Ok((
            value,
            GuardAccess {
                inner: variant,
                limits: self.limits,
            },
        ))
    }
}

impl<'de, A: de::VariantAccess<'de>> de::VariantAccess<'de> for GuardAccess<'_, A> {
    type Error = A::Error;

    fn unit_variant(self) -> Result<(), A::Error> {
        self.inner.unit_variant()
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, A::Error> {
        let seed = self.seed(seed);
        self.inner.newtype_variant_seed(seed)
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, A::Error> {
        let v = GuardVisitor {
            inner: visitor,
            limits: self.limits,
            want: Want::AsIs,
        };
        self.inner.tuple_variant(len, v)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        let v = GuardVisitor {
            inner: visitor,
            limits: self.limits,
            want: Want::AsIs,
        };
        self.inner.struct_variant(fields, v)
    }
}

/// Guards `D::deserialize` with fresh limits for an input of `len` bytes.
pub(super) fn guarded<'de, T: de::Deserialize<'de>, D: Deserializer<'de>>(
    d: D,
    len: usize,
) -> Result<T, D::Error> {
    let limits = Limits::for_input(len);
    T::deserialize(Guard {
        inner: d,
        limits: &limits,
    })
}
