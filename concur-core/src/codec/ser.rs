//! The depth-limited encoder: a `serde::Serializer` wrapper around
//! bincode's that fails a value nested deeper than [`MAX_DEPTH`] with an
//! error instead of overflowing the stack, so anything encoded can also be
//! decoded (the decoder has the same limit).
//!
//! Only compound values (sequences, tuples, structs, maps, variants,
//! options, newtypes) count a level; primitives go straight through, so the
//! hot path (a long `Vec<u8>`, say) pays one inlined wrapper per element and
//! no copy.

use std::cell::Cell;

use serde::ser::{self, Serialize, Serializer};

use super::MAX_DEPTH;

/// The nesting of one encode.
pub(super) struct Depth {
    now: Cell<usize>,
}

impl Depth {
    pub(super) fn new() -> Self {
        Depth { now: Cell::new(0) }
    }

    fn enter<E: ser::Error>(&self) -> Result<(), E> {
        let d = self.now.get() + 1;
        if d > MAX_DEPTH {
            return Err(E::custom(format_args!(
                "value nested deeper than {MAX_DEPTH} levels"
            )));
        }
        self.now.set(d);
        Ok(())
    }

    fn leave(&self) {
        self.now.set(self.now.get() - 1);
    }

    /// `value`, to be serialized one level inside the current one.
    #[inline]
    pub(super) fn guard<'a, T: ?Sized>(&'a self, value: &'a T) -> Guarded<'a, T> {
        Guarded { value, depth: self }
    }

    /// Runs `write` (which writes one nested value) a level deeper.
    #[inline]
    fn nested<R, E: ser::Error>(&self, write: impl FnOnce() -> Result<R, E>) -> Result<R, E> {
        self.enter()?;
        let r = write();
        self.leave();
        r
    }
}

/// A value to serialize with the guard around every serializer it meets.
pub(super) struct Guarded<'a, T: ?Sized> {
    value: &'a T,
    depth: &'a Depth,
}

impl<T: Serialize + ?Sized> Serialize for Guarded<'_, T> {
    #[inline]
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.value.serialize(Guard {
            inner: s,
            depth: self.depth,
        })
    }
}

struct Guard<'a, S> {
    inner: S,
    depth: &'a Depth,
}

/// A compound being written (the serializer's `Serialize*` state): its
/// nested values are guarded, and it leaves its level when it ends.
struct Compound<'a, C> {
    inner: C,
    depth: &'a Depth,
}

impl<'a, S> Guard<'a, S> {
    fn compound<C, E: ser::Error>(
        depth: &'a Depth,
        start: impl FnOnce() -> Result<C, E>,
    ) -> Result<Compound<'a, C>, E> {
        depth.enter()?;
        Ok(Compound {
            inner: start()?,
            depth,
        })
    }
}

macro_rules! forward_prim {
    ($($method:ident($ty:ty)),* $(,)?) => {$(
        #[inline]
        fn $method(self, v: $ty) -> Result<S::Ok, S::Error> {
            self.inner.$method(v)
        }
    )*};
}

impl<'a, S: Serializer> Serializer for Guard<'a, S> {
    type Ok = S::Ok;
    type Error = S::Error;
    type SerializeSeq = Compound<'a, S::SerializeSeq>;
    type SerializeTuple = Compound<'a, S::SerializeTuple>;
    type SerializeTupleStruct = Compound<'a, S::SerializeTupleStruct>;
    type SerializeTupleVariant = Compound<'a, S::SerializeTupleVariant>;
    type SerializeMap = Compound<'a, S::SerializeMap>;
    type SerializeStruct = Compound<'a, S::SerializeStruct>;
    type SerializeStructVariant = Compound<'a, S::SerializeStructVariant>;

    forward_prim!(
        serialize_bool(bool),
        serialize_i8(i8),
        serialize_i16(i16),
        serialize_i32(i32),
        serialize_i64(i64),
        serialize_i128(i128),
        serialize_u8(u8),
        serialize_u16(u16),
        serialize_u32(u32),
        serialize_u64(u64),
        serialize_u128(u128),
        serialize_f32(f32),
        serialize_f64(f64),
        serialize_char(char),
        serialize_str(&str),
        serialize_bytes(&[u8]),
    );

    fn serialize_none(self) -> Result<S::Ok, S::Error> {
        self.inner.serialize_none()
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<S::Ok, S::Error> {
        let depth = self.depth;
        depth.nested(|| self.inner.serialize_some(&depth.guard(value)))
    }

    fn serialize_unit(self) -> Result<S::Ok, S::Error> {
        self.inner.serialize_unit()
    }

    fn serialize_unit_struct(self, name: &'static str) -> Result<S::Ok, S::Error> {
        self.inner.serialize_unit_struct(name)
    }

    fn serialize_unit_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
    ) -> Result<S::Ok, S::Error> {
        self.inner.serialize_unit_variant(name, index, variant)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        value: &T,
    ) -> Result<S::Ok, S::Error> {
        let depth = self.depth;
        depth.nested(|| {
            self.inner
                .serialize_newtype_struct(name, &depth.guard(value))
        })
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<S::Ok, S::Error> {
        let depth = self.depth;
        depth.nested(|| {
            self.inner
                .serialize_newtype_variant(name, index, variant, &depth.guard(value))
        })
    }

    fn serialize_seq(self, len: Option<usize>) -> Result<Self::SerializeSeq, S::Error> {
        Self::compound(self.depth, || self.inner.serialize_seq(len))
    }

    fn serialize_tuple(self, len: usize) -> Result<Self::SerializeTuple, S::Error> {
        Self::compound(self.depth, || self.inner.serialize_tuple(len))
    }

    fn serialize_tuple_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleStruct, S::Error> {
        Self::compound(self.depth, || self.inner.serialize_tuple_struct(name, len))
    }

    fn serialize_tuple_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleVariant, S::Error> {
        Self::compound(self.depth, || {
            self.inner
                .serialize_tuple_variant(name, index, variant, len)
        })
    }

    fn serialize_map(self, len: Option<usize>) -> Result<Self::SerializeMap, S::Error> {
        Self::compound(self.depth, || self.inner.serialize_map(len))
    }

    fn serialize_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStruct, S::Error> {
        Self::compound(self.depth, || self.inner.serialize_struct(name, len))
    }

    fn serialize_struct_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStructVariant, S::Error> {
        Self::compound(self.depth, || {
            self.inner
                .serialize_struct_variant(name, index, variant, len)
        })
    }

    fn is_human_readable(&self) -> bool {
        self.inner.is_human_readable()
    }
}

impl<C> Compound<'_, C> {
    fn end_with<R>(self, end: impl FnOnce(C) -> R) -> R {
        self.depth.leave();
        end(self.inner)
    }
}

/// The `Serialize*` impls of [`Compound`]: each method that writes a
/// nested value writes it guarded; `end` leaves the level.
macro_rules! compound {
    ($($trait:ident { $($method:ident($($arg:ident: $ty:ty),*);)* $(@ $skip:ident;)? })*) => {$(
        impl<C: ser::$trait> ser::$trait for Compound<'_, C> {
            type Ok = C::Ok;
            type Error = C::Error;

            $(
                #[inline]
                fn $method<T: Serialize + ?Sized>(
                    &mut self,
                    $($arg: $ty,)*
                    value: &T,
                ) -> Result<(), C::Error> {
                    self.inner.$method($($arg,)* &self.depth.guard(value))
                }
            )*

            $(
                fn $skip(&mut self, key: &'static str) -> Result<(), C::Error> {
                    self.inner.$skip(key)
                }
            )?

            fn end(self) -> Result<C::Ok, C::Error> {
                self.end_with(C::end)
            }
        }
    )*};
}

compound! {
    SerializeSeq { serialize_element(); }
    SerializeTuple { serialize_element(); }
    SerializeTupleStruct { serialize_field(); }
    SerializeTupleVariant { serialize_field(); }
    SerializeMap { serialize_key(); serialize_value(); }
    SerializeStruct { serialize_field(key: &'static str); @ skip_field; }
    SerializeStructVariant { serialize_field(key: &'static str); @ skip_field; }
}
