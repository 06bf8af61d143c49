//! Durations written like `250ms`, `3s`, `5m`, `1h` (humantime syntax).

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// A duration parsed from its human form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = HumanDuration;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration like 250ms, 3s, 5m or 1h")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<HumanDuration, E> {
                humantime::parse_duration(text.trim())
                    .map(HumanDuration)
                    .map_err(|err| E::custom(format!("invalid duration {text:?}: {err}")))
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<HumanDuration, E> {
                // A bare 0 is unambiguous; any other bare number lacks its unit.
                if n == 0 {
                    Ok(HumanDuration(Duration::ZERO))
                } else {
                    Err(E::custom(format!("duration {n} needs a unit, like {n}s or {n}ms")))
                }
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<HumanDuration, E> {
                Err(E::custom(format!("duration {n} needs a unit, like 3s or 250ms")))
            }
        }
        de.deserialize_any(Visitor)
    }
}

/// `#[serde(with = "opt_duration")]` for `Option<HumanDuration>` fields.
pub mod opt_duration {
    use super::HumanDuration;
    use serde::{Deserialize, Deserializer};

    /// Deserializes an optional human duration.
    pub fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<Option<HumanDuration>, D::Error> {
        Option::<HumanDuration>::deserialize(de)
    }
}
