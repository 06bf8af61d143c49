//! Random mutations of configs/full.yaml: parsing and validating never panics, and
//! every config that validates compiles, fresh and as a reload of another config.

use std::sync::{Arc, OnceLock};

use fulcrum::cluster::{self, Snapshot};
use fulcrum::config::Config;
use proptest::prelude::*;
use proptest::sample::{select, Index};
use serde_yaml::Value;

const FULL: &str = include_str!("../configs/full.yaml");

// Raw YAML written in place of a value: edges of every bound, wrong types, and what
// YAML reads in surprising ways. Addresses are literals or localhost only: the
// network is closed, and a host name would wait on DNS.

#[rustfmt::skip]
const NUMBERS: &[&str] = &[
    "0", "1", "-1", "2", "100", "101", "255", "256", "257", "8191", "8192", "65535", "65536", "1048576",
    "1048577", "10000000", "10000001", "4294967295", "4294967296", "9223372036854775807",
    "18446744073709551615", "18446744073709551616", "-9223372036854775808", "1.5", "1e400", ".nan", ".inf",
    "0x10", "0o17",
];

#[rustfmt::skip]
const DURATIONS: &[&str] = &[
    "0", "0s", "1ns", "1ms", "59m", "1h", "1h 1ns", "61m", "25h", "1d", "2d", "30d", "31d", "400000000000y",
    "584542046091y", "99999999999999999999s", "-1s", "3 parsecs", "1000000h", "5",
    "300000000000y", "18446744073709551615s",
];

#[rustfmt::skip]
const ADDRESSES: &[&str] = &[
    "127.0.0.1:1", "127.0.0.1:0", "127.0.0.1:65535", "127.0.0.1:65536", "127.0.0.1:8001", "127.0.0.1:9100",
    "127.0.0.1:8080", "\"[::1]:8080\"", "\"[::1]:1\"", "\"*:8090\"", "\":8091\"", "0.0.0.0:9100",
    "localhost:8001", "localhost:0", "\"localhost\"", "\"127.0.0.1\"", "\"[::1]\"", "[127.0.0.1:8085]",
    "[]",
];

#[rustfmt::skip]
const OTHERS: &[&str] = &[
    // words of the schema
    "http", "tcp", "udp", "round_robin", "least_conn", "consistent_hash", "random", "source_ip", "uri", "path",
    "header:X-User", "\"header:\"", "\"header:a b\"", "cookie:s", "\"cookie:\"", "GET", "PURGE", "\"GE T\"",
    "/", "/x", "x", "\"*.example.com\"", "\"*.\"", "\"*\"", "app", "api", "pg", "canary", "web", "nowhere",
    "\"200\"", "\"200-399\"", "\"300-200\"", "\"99-100\"", "[200, \"500-599\"]", "[[200]]", "\"\"",
    // other shapes
    "true", "false", "~", "{}", "{a: 1}", "[1, 2]", "!!binary aGVsbG8=", "!tag x",
];

/// Keys that may be added where they are not (most are optional).
#[rustfmt::skip]
const KEYS: &[&str] = &[
    "admin", "bind", "timeouts", "connect", "client", "server", "request_header", "tunnel", "drain", "frontends",
    "name", "mode", "max_connections", "max_header_bytes", "access_log", "default_backend", "routes", "match",
    "host", "path_prefix", "path", "method", "header", "value", "backend", "backends", "balance", "hash_key",
    "retries", "servers", "address", "weight", "backup", "health_check", "kind", "expect_status", "interval",
    "timeout", "rise", "fall",
];

/// The snippets most likely to find a bug under `key`, if it has a kind.
fn snippets_for(key: &str) -> Option<&'static [&'static str]> {
    match key {
        "connect" | "client" | "server" | "request_header" | "tunnel" | "drain" | "interval" | "timeout" => {
            Some(DURATIONS)
        }
        "max_connections" | "max_header_bytes" | "retries" | "weight" | "rise" | "fall" => Some(NUMBERS),
        "bind" | "address" => Some(ADDRESSES),
        _ => None,
    }
}

/// Text put in place of a value before it is swapped for its raw YAML.
fn placeholder(i: usize) -> String {
    format!("PLACEHOLDER{i}X")
}

/// A value to write: a snippet of any kind, or a quoted random string (no ':' so
/// it never looks like host:port and so never reaches DNS).
fn snippet() -> impl Strategy<Value = String> {
    let any: Vec<&str> = [NUMBERS, DURATIONS, ADDRESSES, OTHERS].concat();
    prop_oneof![
        4 => select(any).prop_map(str::to_string),
        1 => "[ -9;-~]{0,12}".prop_map(|text| serde_json::to_string(&text).expect("strings serialize")),
    ]
}

/// What to write at a node: a snippet of the node's own kind (`fitting` picks it)
/// when `fit` and the key has a kind, else `other`.
#[derive(Debug, Clone)]
struct Write {
    fit: bool,
    fitting: Index,
    other: String,
}

impl Write {
    fn for_key(&self, key: Option<&str>) -> String {
        match key.and_then(snippets_for) {
            Some(kind) if self.fit => kind[self.fitting.index(kind.len())].to_string(),
            _ => self.other.clone(),
        }
    }
}

fn write() -> impl Strategy<Value = Write> {
    (prop::bool::weighted(0.8), any::<Index>(), snippet()).prop_map(|(fit, fitting, other)| Write {
        fit,
        fitting,
        other,
    })
}

#[derive(Debug, Clone)]
enum Mutation {
    /// Replace the value at a node with a snippet.
    Replace(Index, Write),
    /// Remove the node from its map or list.
    Delete(Index),
    /// Repeat a list entry (or a whole list's parent entry).
    Duplicate(Index),
    /// Add a key of the schema to a map.
    Insert(Index, &'static str, Write),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<Index>(), write()).prop_map(|(at, w)| Mutation::Replace(at, w)),
        2 => any::<Index>().prop_map(Mutation::Delete),
        2 => any::<Index>().prop_map(Mutation::Duplicate),
        2 => (any::<Index>(), select(KEYS), write()).prop_map(|(at, k, w)| Mutation::Insert(at, k, w)),
    ]
}

/// One step down a YAML tree.
#[derive(Debug, Clone)]
enum Step {
    Key(Value),
    Item(usize),
}

/// Every node of `value` (the root is the empty path), depth first.
fn paths(value: &Value, at: &mut Vec<Step>, out: &mut Vec<Vec<Step>>) {
    out.push(at.clone());
    match value {
        Value::Mapping(map) => {
            for (key, child) in map {
                at.push(Step::Key(key.clone()));
                paths(child, at, out);
                at.pop();
            }
        }
        Value::Sequence(items) => {
            for (i, child) in items.iter().enumerate() {
                at.push(Step::Item(i));
                paths(child, at, out);
                at.pop();
            }
        }
        _ => {}
    }
}

fn node<'a>(root: &'a mut Value, path: &[Step]) -> Option<&'a mut Value> {
    path.iter().try_fold(root, |value, step| match (value, step) {
        (Value::Mapping(map), Step::Key(key)) => map.get_mut(key),
        (Value::Sequence(items), Step::Item(i)) => items.get_mut(*i),
        _ => None,
    })
}

/// Applies `mutations` to full.yaml; returns the YAML text.
fn mutate(mutations: &[Mutation]) -> String {
    let mut root: Value = serde_yaml::from_str(FULL).expect("full.yaml is YAML");
    let mut raw = Vec::new();
    let mut raw_value = |text: &str| {
        raw.push(text.to_string());
        Value::String(placeholder(raw.len() - 1))
    };
    for m in mutations {
        let mut all = Vec::new();
        paths(&root, &mut Vec::new(), &mut all);
        let pick = |at: &Index| all[at.index(all.len())].clone();
        match m {
            Mutation::Replace(at, write) => {
                let path = pick(at);
                let key = match path.last() {
                    Some(Step::Key(Value::String(key))) => Some(key.as_str()),
                    _ => None,
                };
                let replacement = raw_value(&write.for_key(key));
                if let Some(value) = node(&mut root, &path) {
                    *value = replacement;
                }
            }
            Mutation::Delete(at) | Mutation::Duplicate(at) => {
                let path = pick(at);
                let Some((last, parent)) = path.split_last() else { continue };
                let duplicate = matches!(m, Mutation::Duplicate(_));
                match (node(&mut root, parent), last) {
                    (Some(Value::Mapping(map)), Step::Key(key)) if !duplicate => {
                        map.remove(key);
                    }
                    (Some(Value::Sequence(items)), Step::Item(i)) if duplicate => {
                        let copy = items[*i].clone();
                        items.insert(*i, copy);
                    }
                    (Some(Value::Sequence(items)), Step::Item(i)) => {
                        items.remove(*i);
                    }
                    _ => {}
                }
            }
            Mutation::Insert(at, key, write) => {
                let path = pick(at);
                let replacement = raw_value(&write.for_key(Some(key)));
                if let Some(Value::Mapping(map)) = node(&mut root, &path) {
                    map.insert(Value::String(key.to_string()), replacement);
                }
            }
        }
    }
    let mut text = serde_yaml::to_string(&root).expect("a YAML value serializes");
    // Highest index first: PLACEHOLDER1X is not a prefix of PLACEHOLDER10X, but be plain about it.
    for (i, snippet) in raw.iter().enumerate().rev() {
        text = text.replace(&placeholder(i), snippet);
    }
    text
}

/// full.yaml compiled, the "previous" snapshot of a reload.
fn full_snapshot() -> &'static Snapshot {
    static SNAPSHOT: OnceLock<Snapshot> = OnceLock::new();
    SNAPSHOT.get_or_init(|| {
        let config = Config::parse(FULL).expect("full.yaml is valid");
        cluster::compile(Arc::new(config), None).expect("full.yaml compiles")
    })
}

/// Parses and validates `text`, unless a server address would need DNS (a mangled
/// `127.0.0.1` is a host name): the network is closed, and a lookup could wait.
fn parse_offline(text: &str) -> Option<Result<Config, fulcrum::config::ConfigError>> {
    let local = |address: &str| address.parse::<std::net::SocketAddr>().is_ok() || address.starts_with("localhost:");
    match Config::parse_unvalidated(text) {
        Ok(config) if !config.backends.iter().flat_map(|b| &b.servers).all(|s| local(&s.address)) => None,
        _ => Some(Config::parse(text)),
    }
}

/// Compiles an accepted config fresh, as a reload of full.yaml, and full.yaml as a
/// reload of it.
fn compiles(config: Config, text: &str) -> Result<(), TestCaseError> {
    let fresh = cluster::compile(Arc::new(config.clone()), None);
    prop_assert!(fresh.is_ok(), "validated config failed to compile: {:?}\n{}", fresh.err(), text);
    let reload = cluster::compile(Arc::new(config), Some(full_snapshot()));
    prop_assert!(reload.is_ok(), "validated config failed to compile as a reload: {:?}\n{}", reload.err(), text);
    let back = cluster::compile(Arc::clone(&full_snapshot().config), reload.as_ref().ok());
    prop_assert!(back.is_ok(), "full.yaml failed to compile after it: {:?}\n{}", back.err(), text);
    // The data path adds every timeout to the current instant.
    let snapshot = fresh.expect("checked above");
    let now = std::time::Instant::now();
    let timeouts = snapshot.frontends.iter().map(|f| f.timeouts).chain(snapshot.backends.iter().map(|b| b.timeouts));
    let checks = snapshot.backends.iter().filter_map(|b| b.health_check.as_ref()).flat_map(|c| [c.interval, c.timeout]);
    for limit in
        timeouts.flat_map(|t| [t.connect, t.client, t.server, t.request_header, t.tunnel, t.drain]).chain(checks)
    {
        prop_assert!(now.checked_add(limit).is_some(), "{limit:?} overflows an Instant\n{text}");
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, failure_persistence: None, ..ProptestConfig::default() })]

    /// Structural mutations: values swapped for edge cases and wrong types, keys
    /// dropped and added, list entries dropped and repeated.
    #[test]
    fn mutated_configs_never_panic_and_compile_when_valid(mutations in prop::collection::vec(mutation(), 1..3)) {
        let text = mutate(&mutations);
        if let Some(Ok(config)) = parse_offline(&text) {
            compiles(config, &text)?;
        }
    }

    /// Text mutations: the file cut short or with YAML syntax spliced in.
    #[test]
    fn mangled_text_never_panics(
        cut in any::<Index>(),
        splices in prop::collection::vec(
            (any::<Index>(), select(&["&a ", "*a", "<<: *a", "!!binary ", "- ", ": ", "{", "}", "[", "]", "'", "\"",
                "\t", "\n", "~", "#", "? ", "|\n", ">-\n", "%YAML 1.2\n---\n", "---\n", "\u{feff}", "\u{0}"][..])),
            0..4,
        ),
    ) {
        let mut text = FULL.to_string();
        for (at, piece) in splices {
            let mut i = at.index(text.len() + 1);
            while !text.is_char_boundary(i) {
                i -= 1;
            }
            text.insert_str(i, piece);
        }
        let mut end = cut.index(text.len() + 1).max(text.len() / 2);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        if let Some(Ok(config)) = parse_offline(&text) {
            compiles(config, &text)?;
        }
    }
}

#[test]
fn the_mutator_keeps_full_yaml_valid_when_it_changes_nothing() {
    let config = Config::parse(&mutate(&[])).expect("full.yaml round-trips through the mutator");
    assert_eq!(config, Config::parse(FULL).unwrap());
}
