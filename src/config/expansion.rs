//! A guard against YAML alias bombs, run before the config is deserialized.
//!
//! Every alias (`*name`) replays its anchor's whole subtree, so a few kilobytes of
//! aliases to aliases can stand for billions of values. serde_yaml stops alias
//! chains nested deeply ("repetition limit exceeded"), but not one large anchor
//! aliased many times: a 50 KB file of that shape took 43 s and a 150 KB one ran
//! out of memory. This pass walks the document as the deserializer will see it,
//! storing nothing, and stops once it has seen more values than the file could
//! hold written out.

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor};

/// Values a document may expand to whatever its size: generous for any config
/// that uses aliases to share a few blocks, small enough to walk in milliseconds.
pub const MIN_EXPANDED_VALUES: usize = 100_000;

/// The most values `text` may expand to: without aliases every value takes at least
/// a byte of the file, so a file never needs more values than it has bytes.
pub fn expansion_limit(text: &str) -> usize {
    text.len().max(MIN_EXPANDED_VALUES)
}

/// Fails with the limit when `text`, aliases expanded, holds more than
/// [`expansion_limit`] values. Other problems (syntax, unknown anchors) are left to
/// the real parse, which reports them with their location.
pub fn check(text: &str) -> Result<(), usize> {
    let limit = expansion_limit(text);
    let (left, exceeded) = (Cell::new(limit), Cell::new(false));
    let counter = Counter { left: &left, exceeded: &exceeded };
    match counter.deserialize(serde_yaml::Deserializer::from_str(text)) {
        Err(_) if exceeded.get() => Err(limit),
        // Any other failure (syntax, unknown anchor) is the real parse's to report,
        // with its location.
        Ok(()) | Err(_) => Ok(()),
    }
}

/// Counts every value of the document, allowing `left` more.
#[derive(Clone, Copy)]
struct Counter<'a> {
    left: &'a Cell<usize>,
    exceeded: &'a Cell<bool>,
}

impl Counter<'_> {
    fn tick<E: de::Error>(self) -> Result<(), E> {
        match self.left.get().checked_sub(1) {
            Some(left) => {
                self.left.set(left);
                Ok(())
            }
            None => {
                self.exceeded.set(true);
                Err(E::custom("too many values"))
            }
        }
    }
}

impl<'de> DeserializeSeed<'de> for Counter<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Counter<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.tick()
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.tick()
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.tick()
    }
    fn visit_i128<E: de::Error>(self, _: i128) -> Result<(), E> {
        self.tick()
    }
    fn visit_u128<E: de::Error>(self, _: u128) -> Result<(), E> {
        self.tick()
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.tick()
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.tick()
    }
    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<(), E> {
        self.tick()
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.tick()
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.tick()
    }
    fn visit_some<D: Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
        self.tick()?;
        self.deserialize(de)
    }
    fn visit_newtype_struct<D: Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
        self.tick()?;
        self.deserialize(de)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.tick()?;
        while seq.next_element_seed(self)?.is_some() {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.tick()?;
        while map.next_key_seed(self)?.is_some() {
            map.next_value_seed(self)?;
        }
        Ok(())
    }
    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<(), A::Error> {
        // serde_yaml presents a tagged value (`!tag value`) as an enum.
        self.tick()?;
        let ((), variant) = data.variant_seed(self)?;
        variant.newtype_variant_seed(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_documents_pass() {
        assert_eq!(check("a: [1, 2, {b: c}]\nd: &x [1, 2]\ne: *x\n"), Ok(()));
        assert_eq!(check("!tagged {a: 1}"), Ok(()));
        // Broken documents are the real parser's to report.
        assert_eq!(check("a: [1, 2"), Ok(()));
        assert_eq!(check("a: *nowhere"), Ok(()));
    }

    #[test]
    fn one_anchor_aliased_many_times_is_stopped() {
        // 2 000 items aliased 2 000 times: 4 million values from 14 KB.
        let items = vec!["1"; 2_000].join(",");
        let aliases = vec!["*a"; 2_000].join(",");
        let text = format!("x: [&a [{items}], {aliases}]\n");
        assert_eq!(check(&text), Err(MIN_EXPANDED_VALUES));
    }

    #[test]
    fn a_large_file_may_hold_as_many_values_as_bytes() {
        let text = format!("x: [{}]\n", vec!["1"; 200_000].join(","));
        assert_eq!(check(&text), Ok(()));
    }
}
