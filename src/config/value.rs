//! Typed config values, parsed once while the YAML is deserialized: a bad value is
//! reported with its key path by the parser, and nothing downstream parses it again.

use std::fmt;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::str::FromStr;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;

/// Deserializes `T` from a YAML string through its `FromStr`, whose error (a
/// sentence) becomes the parser's message at the value's key path.
fn from_text<'de, D, T>(de: D, expecting: &'static str) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr<Err = String>,
{
    struct Text<T>(&'static str, std::marker::PhantomData<T>);
    impl<T: FromStr<Err = String>> Visitor<'_> for Text<T> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str(self.0)
        }
        fn visit_str<E: de::Error>(self, text: &str) -> Result<T, E> {
            text.parse().map_err(E::custom)
        }
    }
    de.deserialize_str(Text(expecting, std::marker::PhantomData))
}

/// A listen address: `IP:PORT`, or `*:PORT` / `:PORT` for every IPv4 address.
/// Keeps the spelling of the file for display (`*:8080` rather than `0.0.0.0:8080`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindAddr {
    text: String,
    addr: SocketAddr,
}

impl BindAddr {
    /// The socket address to listen on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address as written in the config.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl FromStr for BindAddr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let addr = if let Some(port) = text.strip_prefix("*:").or_else(|| text.strip_prefix(':')) {
            let port = port.parse::<u16>().map_err(|_| format!("{text:?}: invalid port"))?;
            SocketAddr::from(([0, 0, 0, 0], port))
        } else {
            text.parse::<SocketAddr>()
                .map_err(|_| format!("{text:?} is not a listen address like 127.0.0.1:8080, [::1]:8080 or *:8080"))?
        };
        Ok(BindAddr { text: text.to_string(), addr })
    }
}

impl fmt::Display for BindAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for BindAddr {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        from_text(de, "a listen address like 127.0.0.1:8080, [::1]:8080 or *:8080")
    }
}

/// One of `resolver.nameservers`: an IP address, with a port or port 53.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NameServer(pub SocketAddr);

impl FromStr for NameServer {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        if let Ok(ip) = text.parse::<std::net::IpAddr>() {
            return Ok(NameServer(SocketAddr::new(ip, 53)));
        }
        match text.parse::<SocketAddr>() {
            Ok(addr) if addr.port() != 0 => Ok(NameServer(addr)),
            _ => Err(format!("{text:?} is not a name server address like 127.0.0.1, 10.0.0.2:53 or [::1]:53")),
        }
    }
}

impl<'de> Deserialize<'de> for NameServer {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        from_text(de, "a name server address like 127.0.0.1:53")
    }
}

/// `bind:` of a frontend — one address or a list of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binds {
    /// As written, for display (same order as `addrs`).
    written: Vec<String>,
    addrs: Vec<SocketAddr>,
    /// Written as a list (errors then name `bind[i]` rather than `bind`).
    list: bool,
}

impl Binds {
    /// The addresses as written in the config.
    pub fn as_slice(&self) -> &[String] {
        &self.written
    }

    /// The socket addresses to listen on.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The key path of the `index`th address under the frontend at `frontend_path`.
    pub fn path(&self, frontend_path: &str, index: usize) -> String {
        if self.list {
            format!("{frontend_path}.bind[{index}]")
        } else {
            format!("{frontend_path}.bind")
        }
    }

    fn new(binds: Vec<BindAddr>, list: bool) -> Self {
        let (written, addrs) = binds.into_iter().map(|b| (b.text, b.addr)).unzip();
        Binds { written, addrs, list }
    }
}

impl<'de> Deserialize<'de> for Binds {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct BindsVisitor;
        impl<'de> Visitor<'de> for BindsVisitor {
            type Value = Binds;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a listen address like 127.0.0.1:8080, or a list of them")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Binds, E> {
                Ok(Binds::new(vec![text.parse().map_err(E::custom)?], false))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Binds, A::Error> {
                // Element by element, so that an error names its index.
                let mut binds = Vec::new();
                while let Some(bind) = seq.next_element::<BindAddr>()? {
                    binds.push(bind);
                }
                Ok(Binds::new(binds, true))
            }
        }
        de.deserialize_any(BindsVisitor)
    }
}

/// What `consistent_hash` hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    /// The client's IP address (TCP and HTTP).
    SourceIp,
    /// Path and query of the request (HTTP).
    Uri,
    /// Path only (HTTP).
    Path,
    /// The value of a request header (HTTP).
    Header(http::HeaderName),
    /// The value of a cookie (HTTP).
    Cookie(String),
}

impl HashKey {
    /// True for keys only an HTTP request has.
    pub fn needs_http(&self) -> bool {
        !matches!(self, HashKey::SourceIp)
    }
}

impl FromStr for HashKey {
    type Err = String;

    /// Parses `source_ip | uri | path | header:NAME | cookie:NAME`.
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "source_ip" => Ok(HashKey::SourceIp),
            "uri" => Ok(HashKey::Uri),
            "path" => Ok(HashKey::Path),
            _ => match text.split_once(':') {
                Some(("header", name)) => http::HeaderName::from_bytes(name.as_bytes())
                    .map(HashKey::Header)
                    .map_err(|_| format!("{text:?}: header name must be a valid HTTP header name")),
                Some(("cookie", name)) if is_token(name) => Ok(HashKey::Cookie(name.to_string())),
                Some(("cookie", _)) => Err(format!("{text:?}: cookie name must be a non-empty token")),
                _ => {
                    Err(format!("unknown hash_key {text:?}; expected source_ip, uri, path, header:NAME or cookie:NAME"))
                }
            },
        }
    }
}

impl fmt::Display for HashKey {
    /// The config spelling.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HashKey::SourceIp => f.write_str("source_ip"),
            HashKey::Uri => f.write_str("uri"),
            HashKey::Path => f.write_str("path"),
            HashKey::Header(name) => write!(f, "header:{name}"),
            HashKey::Cookie(name) => write!(f, "cookie:{name}"),
        }
    }
}

impl<'de> Deserialize<'de> for HashKey {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        from_text(de, "source_ip, uri, path, header:NAME or cookie:NAME")
    }
}

/// A set of HTTP status codes: `200`, `200-399`, or a list of those.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusSet(pub Vec<RangeInclusive<u16>>);

impl StatusSet {
    /// True when `code` is in the set.
    pub fn contains(&self, code: u16) -> bool {
        self.0.iter().any(|range| range.contains(&code))
    }
}

impl Default for StatusSet {
    /// HAProxy's default for `httpchk`: 2xx and 3xx pass.
    fn default() -> Self {
        StatusSet(vec![200..=399])
    }
}

/// One code or range of a [`StatusSet`].
struct StatusRange(RangeInclusive<u16>);

impl StatusRange {
    fn new(lo: u64, hi: u64) -> Result<Self, String> {
        if !(100..=599).contains(&lo) || !(100..=599).contains(&hi) || lo > hi {
            return Err(format!("status range {lo}-{hi} must lie within 100-599, low end first"));
        }
        // Both ends are within 100..=599, so they fit a u16.
        Ok(StatusRange(lo as u16..=hi as u16))
    }
}

impl FromStr for StatusRange {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let code = |s: &str| {
            s.trim().parse::<u64>().map_err(|_| format!("{text:?} is not a status code or range like 200-399"))
        };
        match text.split_once('-') {
            Some((lo, hi)) => StatusRange::new(code(lo)?, code(hi)?),
            None => code(text).and_then(|c| StatusRange::new(c, c)),
        }
    }
}

/// Accepts what one status entry may be: a number or a string.
struct StatusRangeVisitor;

impl Visitor<'_> for StatusRangeVisitor {
    type Value = StatusRange;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a status code like 200 or a range like 200-399")
    }
    fn visit_u64<E: de::Error>(self, code: u64) -> Result<StatusRange, E> {
        StatusRange::new(code, code).map_err(E::custom)
    }
    fn visit_i64<E: de::Error>(self, code: i64) -> Result<StatusRange, E> {
        Err(E::custom(format!("{code} is not a status code")))
    }
    fn visit_str<E: de::Error>(self, text: &str) -> Result<StatusRange, E> {
        text.parse().map_err(E::custom)
    }
}

impl<'de> Deserialize<'de> for StatusRange {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        de.deserialize_any(StatusRangeVisitor)
    }
}

impl<'de> Deserialize<'de> for StatusSet {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct SetVisitor;
        impl<'de> Visitor<'de> for SetVisitor {
            type Value = StatusSet;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a status code, a range like 200-399, or a list of them")
            }
            fn visit_u64<E: de::Error>(self, code: u64) -> Result<StatusSet, E> {
                StatusRangeVisitor.visit_u64(code).map(|r| StatusSet(vec![r.0]))
            }
            fn visit_i64<E: de::Error>(self, code: i64) -> Result<StatusSet, E> {
                StatusRangeVisitor.visit_i64(code).map(|r| StatusSet(vec![r.0]))
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<StatusSet, E> {
                StatusRangeVisitor.visit_str(text).map(|r| StatusSet(vec![r.0]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<StatusSet, A::Error> {
                let mut ranges = Vec::new();
                while let Some(StatusRange(range)) = seq.next_element()? {
                    ranges.push(range);
                }
                if ranges.is_empty() {
                    return Err(de::Error::custom("expect_status list is empty"));
                }
                Ok(StatusSet(ranges))
            }
        }
        de.deserialize_any(SetVisitor)
    }
}

/// Route match text checked as it is parsed, so a bad value is reported with its key
/// path and compiling the route cannot fail. Kept as `String`s: the route module and
/// its tests build matches from plain text.
pub(super) mod checked {
    use std::fmt;

    use serde::de::{Error, Visitor};
    use serde::Deserializer;

    /// Parses a string into `T`, else fails with `problem` after it. Parsed inside
    /// the visitor so that serde_yaml reports the value's own location.
    struct Parsed<T> {
        expecting: &'static str,
        parse: fn(&str) -> Option<T>,
        problem: &'static str,
    }

    impl<T> Visitor<'_> for Parsed<T> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str(self.expecting)
        }
        fn visit_str<E: Error>(self, text: &str) -> Result<T, E> {
            (self.parse)(text).ok_or_else(|| E::custom(format!("{text:?} {}", self.problem)))
        }
    }

    /// `Parsed`, or nothing for a YAML null.
    struct Optional<T>(Parsed<T>);

    impl<'de, T> Visitor<'de> for Optional<T> {
        type Value = Option<T>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            self.0.expecting(f)
        }
        fn visit_none<E: Error>(self) -> Result<Option<T>, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, de: D) -> Result<Option<T>, D::Error> {
            de.deserialize_str(self.0).map(Some)
        }
    }

    /// `method:` — any RFC 9110 token (`GET`, `PURGE`, ...), as `http::Method` takes it.
    pub fn method<'de, D: Deserializer<'de>>(de: D) -> Result<Option<http::Method>, D::Error> {
        de.deserialize_option(Optional(Parsed {
            expecting: "an HTTP method like GET",
            parse: |text| http::Method::from_bytes(text.as_bytes()).ok(),
            problem: "is not an HTTP method",
        }))
    }

    /// `header.name` — a valid header name.
    pub fn header_name<'de, D: Deserializer<'de>>(de: D) -> Result<http::HeaderName, D::Error> {
        de.deserialize_str(Parsed {
            expecting: "a header name",
            parse: |text| http::HeaderName::from_bytes(text.as_bytes()).ok(),
            problem: "is not a valid header name",
        })
    }

    /// `header.value` — text a header value can hold.
    pub fn header_value<'de, D: Deserializer<'de>>(de: D) -> Result<http::HeaderValue, D::Error> {
        de.deserialize_str(Parsed {
            expecting: "a header value",
            parse: |text| http::HeaderValue::from_str(text).ok(),
            problem: "contains characters a header value cannot hold",
        })
    }
}

/// A size in bytes (`cache.size`, `cache.max_object`): a number of bytes, or a
/// number with a unit: `B`, `KB`/`MB`/`GB`/`TB` (powers of 1000) or
/// `KiB`/`MiB`/`GiB`/`TiB` (powers of 1024), as in `256MiB`. Units are read
/// case-insensitively (`8mib`), a space before the unit is allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// The size in bytes.
    pub fn bytes(self) -> u64 {
        self.0
    }
}

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("{text:?} is not a size like 256MiB, 8MB or 1048576 (bytes)");
        let trimmed = text.trim();
        let split = trimmed.find(|c: char| !c.is_ascii_digit()).unwrap_or(trimmed.len());
        let (number, unit) = trimmed.split_at(split);
        let number: u64 = number.parse().map_err(|_| bad())?;
        let scale: u64 = match unit.trim_start().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "kb" => 1000,
            "mb" => 1000 * 1000,
            "gb" => 1000 * 1000 * 1000,
            "tb" => 1000 * 1000 * 1000 * 1000,
            "kib" => 1 << 10,
            "mib" => 1 << 20,
            "gib" => 1 << 30,
            "tib" => 1 << 40,
            _ => return Err(bad()),
        };
        number.checked_mul(scale).map(ByteSize).ok_or_else(|| format!("{text:?} is too large"))
    }
}

impl fmt::Display for ByteSize {
    /// The largest binary unit that writes the size exactly (`8MiB`, `1500B`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (unit, scale) in [("TiB", 1u64 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
            if self.0 >= scale && self.0.is_multiple_of(scale) {
                return write!(f, "{}{unit}", self.0 / scale);
            }
        }
        write!(f, "{}B", self.0)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct SizeVisitor;
        impl Visitor<'_> for SizeVisitor {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size like 256MiB, 8MB or a number of bytes")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<ByteSize, E> {
                text.parse().map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, bytes: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(bytes))
            }
            fn visit_i64<E: de::Error>(self, bytes: i64) -> Result<ByteSize, E> {
                u64::try_from(bytes).map(ByteSize).map_err(|_| E::custom(format!("{bytes} is not a size (negative)")))
            }
        }
        de.deserialize_any(SizeVisitor)
    }
}

/// An RFC 9110 token (method, cookie name, ...).
fn is_token(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_keep_their_spelling() {
        let bind: BindAddr = "*:8080".parse().unwrap();
        assert_eq!(bind.addr(), SocketAddr::from(([0, 0, 0, 0], 8080)));
        assert_eq!(bind.to_string(), "*:8080");
        assert!("127.0.0.1:99999".parse::<BindAddr>().is_err());
        assert!("localhost:80".parse::<BindAddr>().is_err());
    }

    #[test]
    fn hash_keys_parse_and_print_back() {
        for text in ["source_ip", "uri", "path", "header:x-user", "cookie:session"] {
            assert_eq!(text.parse::<HashKey>().unwrap().to_string(), text);
        }
        assert_eq!(
            "header:X-User".parse::<HashKey>().unwrap(),
            HashKey::Header(http::HeaderName::from_static("x-user"))
        );
        for bad in ["phase_of_moon", "header:", "header:a b", "cookie:", "cookie:a;b"] {
            assert!(bad.parse::<HashKey>().is_err(), "{bad}");
        }
    }

    #[test]
    fn status_sets_parse_codes_ranges_and_lists() {
        let parse = |yaml: &str| serde_yaml::from_str::<StatusSet>(yaml).map_err(|e| e.to_string());
        assert_eq!(parse("200").unwrap(), StatusSet(vec![200..=200]));
        assert_eq!(parse("200-399").unwrap(), StatusSet(vec![200..=399]));
        assert_eq!(parse("[200, \"300-302\"]").unwrap(), StatusSet(vec![200..=200, 300..=302]));
        assert!(parse("700").unwrap_err().contains("100-599"));
        assert!(parse("\"300-200\"").is_err());
        assert!(parse("[]").unwrap_err().contains("empty"));
        assert!(parse("-1").is_err());
        assert!(parse("[[200]]").is_err());
    }

    #[test]
    fn route_text_is_checked() {
        #[derive(Debug, Deserialize)]
        struct Match {
            #[serde(default, deserialize_with = "checked::method")]
            method: Option<http::Method>,
            #[serde(default = "no_name", deserialize_with = "checked::header_name")]
            name: http::HeaderName,
            #[serde(default = "no_value", deserialize_with = "checked::header_value")]
            value: http::HeaderValue,
        }
        fn no_name() -> http::HeaderName {
            http::HeaderName::from_static("x-none")
        }
        fn no_value() -> http::HeaderValue {
            http::HeaderValue::from_static("")
        }
        let parse = |yaml: &str| serde_yaml::from_str::<Match>(yaml).map_err(|e| e.to_string());
        let ok = parse("{method: PURGE, name: X-Canary, value: \"a b\"}").unwrap();
        assert_eq!(
            (ok.method.as_ref().map(http::Method::as_str), ok.name.as_str(), ok.value.as_bytes()),
            (Some("PURGE"), "x-canary", &b"a b"[..])
        );
        assert!(parse("{method: GE T}").unwrap_err().contains("not an HTTP method"));
        assert!(parse("{name: X Canary}").unwrap_err().contains("not a valid header name"));
        assert!(parse("{value: \"a\\nb\"}").unwrap_err().contains("header value"));
    }

    #[test]
    fn byte_sizes_take_decimal_and_binary_units() {
        let parse = |yaml: &str| serde_yaml::from_str::<ByteSize>(yaml).map_err(|e| e.to_string());
        assert_eq!(parse("256MiB").unwrap(), ByteSize(256 << 20));
        assert_eq!(parse("8 mib").unwrap(), ByteSize(8 << 20));
        assert_eq!(parse("10MB").unwrap(), ByteSize(10_000_000));
        assert_eq!(parse("1GiB").unwrap(), ByteSize(1 << 30));
        assert_eq!(parse("512KiB").unwrap(), ByteSize(512 << 10));
        assert_eq!(parse("1500").unwrap(), ByteSize(1500));
        assert_eq!(parse("\"1500B\"").unwrap(), ByteSize(1500));
        for bad in ["8 MiBs", "MiB", "1.5MiB", "-3", "99999999999TiB", "\"\""] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert!(parse("8 furlongs").unwrap_err().contains("256MiB"));
        assert_eq!(ByteSize(8 << 20).to_string(), "8MiB");
        assert_eq!(ByteSize(1500).to_string(), "1500B");
    }
}

/// `min_version:` of a TLS frontend: `"1.2"` or `"1.3"` (quoted or not).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    /// TLS 1.2 and 1.3.
    V1_2,
    /// TLS 1.3 only.
    V1_3,
}

impl<'de> Deserialize<'de> for TlsVersion {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Spelled {
            Text(String),
            Number(f64),
        }
        let text = match Spelled::deserialize(de)? {
            Spelled::Text(text) => text,
            Spelled::Number(n) => format!("{n:.1}"),
        };
        match text.as_str() {
            "1.2" => Ok(TlsVersion::V1_2),
            "1.3" => Ok(TlsVersion::V1_3),
            other => {
                Err(de::Error::custom(format!("{other:?} is not a TLS version Fulcrum accepts: \"1.2\" or \"1.3\"")))
            }
        }
    }
}
