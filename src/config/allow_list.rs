//! `forward_proxy.allow`, parsed when the config is read: name rules (exact
//! names and `*.` wildcards) and address rules (IPs and CIDRs, v4 and v6). The
//! forward proxy takes it as it is; `fulcrum check` reports a bad entry with its
//! key path.

use std::net::IpAddr;

use serde::{Deserialize, Deserializer};

/// A parsed `allow` list.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct AllowList {
    names: Vec<NameRule>,
    nets: Vec<Cidr>,
}

/// A name rule. Names are kept lowercase and without a trailing dot, as they are
/// compared (DNS names are case-insensitive; `host.` and `host` are one name).
#[derive(Debug, Clone, PartialEq)]
enum NameRule {
    /// Exactly this name.
    Exact(String),
    /// Any name ending in this suffix (kept with its leading dot) under at least
    /// one more label: `*.example.com` admits `a.example.com` and `a.b.example.com`,
    /// not `example.com` itself.
    Under(String),
}

/// An address range. A plain IP is the range of its one address.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Cidr {
    base: IpAddr,
    prefix: u8,
}

impl AllowList {
    /// Parses `allow`; Err names the first bad entry and what is wrong with it.
    pub fn parse(allow: &[String]) -> Result<AllowList, String> {
        let mut rules = AllowList::default();
        for entry in allow {
            let bad = |why: &str| format!("bad entry {entry:?}: {why}");
            let trimmed = entry.trim();
            if trimmed.is_empty() {
                return Err(bad("empty"));
            }
            if let Some((addr, prefix)) = trimmed.split_once('/') {
                rules.nets.push(parse_cidr(addr, prefix).map_err(bad)?);
            } else if let Some(ip) = parse_ip(trimmed) {
                let prefix = if ip.is_ipv4() { 32 } else { 128 };
                rules.nets.push(Cidr { base: ip, prefix });
            } else {
                rules.names.push(parse_name(trimmed).map_err(bad)?);
            }
        }
        Ok(rules)
    }

    /// True when a name rule admits `host` (a name, not an IP literal).
    pub fn admits_name(&self, host: &str) -> bool {
        let host = normalize(host);
        self.names.iter().any(|rule| match rule {
            NameRule::Exact(name) => *name == host,
            NameRule::Under(suffix) => host.len() > suffix.len() && host.ends_with(suffix.as_str()),
        })
    }

    /// True when an address rule admits `ip`.
    pub fn admits_addr(&self, ip: IpAddr) -> bool {
        // An IPv4-mapped v6 address (::ffff:10.0.0.1) is the v4 address: a v4 rule
        // must see it, or a mapped form would slip past a v4-only deny.
        let ip = ip.to_canonical();
        self.nets.iter().any(|net| net.contains(ip))
    }

    /// True when there is at least one address rule: without any, resolving a
    /// name no name rule admits cannot make it pass, so it is not even looked up.
    pub fn has_addr_rules(&self) -> bool {
        !self.nets.is_empty()
    }
}

impl<'de> Deserialize<'de> for AllowList {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        let entries = Vec::<String>::deserialize(de)?;
        AllowList::parse(&entries).map_err(serde::de::Error::custom)
    }
}

impl Cidr {
    fn contains(&self, ip: IpAddr) -> bool {
        match (self.base, ip) {
            (IpAddr::V4(base), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(base) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(base), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(base) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// An IP literal, v6 optionally in brackets (as it appears in a URI authority).
pub fn parse_ip(text: &str) -> Option<IpAddr> {
    let bare = text.strip_prefix('[').and_then(|t| t.strip_suffix(']')).unwrap_or(text);
    bare.parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
}

fn parse_cidr(addr: &str, prefix: &str) -> Result<Cidr, &'static str> {
    let base = parse_ip(addr).ok_or("not an IP address before the '/'")?;
    let prefix: u8 = prefix.parse().map_err(|_| "the prefix length is not a number")?;
    let max = if base.is_ipv4() { 32 } else { 128 };
    if prefix > max {
        return Err("the prefix length is longer than the address");
    }
    Ok(Cidr { base, prefix })
}

fn parse_name(text: &str) -> Result<NameRule, &'static str> {
    let (wildcard, name) = match text.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let name = normalize(name);
    if name.is_empty() {
        return Err("no name");
    }
    if name.len() > 253 {
        return Err("name longer than 253 characters");
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err("a label is empty or longer than 63 characters");
        }
        if label.contains('*') {
            return Err("'*' is allowed only as a whole leading label (\"*.example.com\")");
        }
        if !label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return Err("a name holds only letters, digits, '-' and '_'");
        }
    }
    Ok(if wildcard { NameRule::Under(format!(".{name}")) } else { NameRule::Exact(name) })
}

/// Lowercase, without the trailing dot of a fully qualified name.
fn normalize(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(allow: &[&str]) -> AllowList {
        AllowList::parse(&allow.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn wildcard_admits_one_or_more_labels_not_the_apex() {
        let r = rules(&["*.Example.com"]);
        assert!(r.admits_name("a.example.com"));
        assert!(r.admits_name("a.b.EXAMPLE.com."));
        assert!(!r.admits_name("example.com"));
        assert!(!r.admits_name("badexample.com"));
        assert!(!r.admits_name("example.com.evil.net"));
    }

    #[test]
    fn exact_names_match_case_insensitively_only_themselves() {
        let r = rules(&["api.example.com"]);
        assert!(r.admits_name("API.example.com."));
        assert!(!r.admits_name("x.api.example.com"));
        assert!(!r.admits_name("example.com"));
    }

    #[test]
    fn v4_cidrs_and_plain_ips() {
        let r = rules(&["10.0.0.0/8", "192.168.1.7", "0.0.0.0/0"]);
        assert!(r.admits_addr(ip("8.8.8.8")), "/0 admits every v4 address");
        let r = rules(&["10.0.0.0/8", "192.168.1.7"]);
        assert!(r.admits_addr(ip("10.255.1.2")));
        assert!(!r.admits_addr(ip("11.0.0.1")));
        assert!(r.admits_addr(ip("192.168.1.7")));
        assert!(!r.admits_addr(ip("192.168.1.8")));
        assert!(!r.admits_addr(ip("::1")), "a v4 rule never admits a v6 address");
        assert!(r.admits_addr(ip("::ffff:10.1.2.3")), "a mapped v4 address is the v4 address");
    }

    #[test]
    fn v6_cidrs_and_plain_ips() {
        let r = rules(&["::1/128", "fd00::/8", "[2001:db8::5]"]);
        assert!(r.admits_addr(ip("::1")));
        assert!(!r.admits_addr(ip("::2")));
        assert!(r.admits_addr(ip("fdff:1::9")));
        assert!(!r.admits_addr(ip("fe00::1")));
        assert!(r.admits_addr(ip("2001:db8::5")));
        assert!(!r.admits_addr(ip("127.0.0.1")));
    }

    #[test]
    fn ip_entries_are_not_name_rules() {
        let r = rules(&["127.0.0.1"]);
        assert!(!r.admits_name("127.0.0.1"));
        assert!(r.has_addr_rules());
    }

    #[test]
    fn bad_entries_are_named() {
        for bad in ["", "10.0.0.0/33", "::/129", "10.0.0.0/x", "nope/8", "a.*.com", "*", "*.", "ex ample.com", "a..b"] {
            let err = AllowList::parse(&[bad.to_string()]).unwrap_err();
            assert!(err.contains(&format!("{bad:?}")), "{err}");
        }
    }
}
