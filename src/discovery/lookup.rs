//! DNS lookups of `discover` entries: the resolver built from `resolver:`, and one
//! entry's answer as members plus the TTL it may be kept for.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::config::{LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::{Resolver, TokioResolver};

use crate::cluster::discovered::{EntryKey, Target};
use crate::config::{self, Discover};

/// Why a lookup gave no members (the last good set is then held).
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    /// The resolver could not be set up (no /etc/resolv.conf, say).
    #[error("no resolver: {0}")]
    NoResolver(String),
    /// The address is not a name to look up (validation should have said so).
    #[error("{0}")]
    BadName(String),
    /// NXDOMAIN, a timeout, a refused query...
    #[error(transparent)]
    Dns(#[from] hickory_resolver::net::NetError),
    /// An answer without a usable record.
    #[error("empty answer")]
    Empty,
}

/// Builds the resolver `resolver:` describes, or the system's (/etc/resolv.conf).
/// Its cache is off: each entry is looked up on its own schedule (its TTL clamped),
/// and a cached answer would hide a change until the cache's idea of the TTL.
pub fn resolver(settings: Option<&config::Resolver>) -> Result<TokioResolver, String> {
    let provider = TokioRuntimeProvider::default();
    let mut builder = match settings.and_then(|r| r.nameservers.as_ref()) {
        Some(servers) => {
            let servers = (servers.iter())
                .map(|server| {
                    let mut config = NameServerConfig::udp_and_tcp(server.0.ip());
                    for connection in &mut config.connections {
                        connection.port = server.0.port();
                    }
                    config
                })
                .collect();
            let mut builder = Resolver::builder_with_config(ResolverConfig::from_name_servers(servers), provider);
            // Name servers given: they answer, not /etc/hosts.
            builder.options_mut().use_hosts_file = ResolveHosts::Never;
            builder
        }
        None => Resolver::builder(provider).map_err(|err| err.to_string())?,
    };
    let options = builder.options_mut();
    options.cache_size = 0;
    options.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    options.timeout = Duration::from_secs(2);
    options.attempts = 2;
    builder.build().map_err(|err| err.to_string())
}

/// Members of one entry, and how long the answer may be kept.
#[derive(Debug)]
pub struct Answer {
    /// Unsorted; [`Discovered::set`](crate::cluster::discovered::Discovered::set) sorts.
    pub targets: Vec<Target>,
    /// The smallest TTL of the records it was built from.
    pub ttl: Duration,
}

/// Looks `key` up: its A/AAAA records (`dns`) or its SRV records and their
/// targets' addresses (`srv`).
pub async fn lookup(resolver: &TokioResolver, key: &EntryKey) -> Result<Answer, LookupError> {
    let (name, port) = config::discovered_name(key.kind, &key.address).map_err(LookupError::BadName)?;
    let answer = match key.kind {
        Discover::Dns => {
            let (ips, ttl) = addresses(resolver, name).await?;
            let targets = ips
                .into_iter()
                .map(|ip| Target { addr: SocketAddr::new(ip, port), weight: None, backup: false, host: None })
                .collect();
            Answer { targets, ttl }
        }
        Discover::Srv => srv(resolver, name).await?,
    };
    if answer.targets.is_empty() {
        return Err(LookupError::Empty);
    }
    Ok(answer)
}

/// A and AAAA records of `name`, with their smallest TTL.
async fn addresses(resolver: &TokioResolver, name: &str) -> Result<(Vec<IpAddr>, Duration), LookupError> {
    let found = resolver.lookup_ip(name).await?;
    let ttl = found.as_lookup().answers().iter().map(|record| record.ttl).min().unwrap_or(0);
    Ok((found.iter().collect(), Duration::from_secs(ttl.into())))
}

/// SRV records of `name` (RFC 2782): the lowest priority's targets serve, the
/// others stand by as backups; weights scaled into 1..=256 in proportion.
async fn srv(resolver: &TokioResolver, name: &str) -> Result<Answer, LookupError> {
    let found = resolver.lookup(name, RecordType::SRV).await?;
    let mut ttl = u32::MAX;
    let records: Vec<_> = (found.answers().iter())
        .filter_map(|record| match &record.data {
            // "." as the target: the service is decidedly not available there.
            RData::SRV(srv) if !srv.target.is_root() => {
                ttl = ttl.min(record.ttl);
                Some(srv.clone())
            }
            _ => None,
        })
        .collect();
    let best = records.iter().map(|srv| srv.priority).min().unwrap_or(0);
    let heaviest = records.iter().map(|srv| u32::from(srv.weight)).max().unwrap_or(0);
    let mut targets = Vec::new();
    for srv in &records {
        let host = srv.target.to_utf8();
        let host = host.trim_end_matches('.');
        let (ips, host_ttl) = match addresses(resolver, &srv.target.to_utf8()).await {
            Ok(found) => found,
            // One target without an address does not sink the others.
            Err(err) => {
                tracing::debug!(target = host, error = %err, "SRV target has no address");
                continue;
            }
        };
        ttl = ttl.min(host_ttl.as_secs().try_into().unwrap_or(u32::MAX));
        let weight = scale_weight(srv.weight, heaviest);
        let host: Arc<str> = Arc::from(host);
        targets.extend(ips.into_iter().map(|ip| Target {
            addr: SocketAddr::new(ip, srv.port),
            weight: Some(weight),
            backup: srv.priority != best,
            host: Some(Arc::clone(&host)),
        }));
    }
    Ok(Answer { targets, ttl: Duration::from_secs(if ttl == u32::MAX { 0 } else { ttl.into() }) })
}

/// An SRV weight (0..=65535) as a server weight: as is when the heaviest fits in
/// 256, else in proportion to it; 0 (RFC 2782: "very small chance") becomes 1.
fn scale_weight(weight: u16, heaviest: u32) -> u32 {
    let weight = u32::from(weight);
    let scaled = if heaviest > config::MAX_WEIGHT { weight * config::MAX_WEIGHT / heaviest } else { weight };
    scaled.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn srv_weights_keep_their_proportions_within_1_to_256() {
        assert_eq!(scale_weight(0, 10), 1);
        assert_eq!(scale_weight(10, 100), 10);
        assert_eq!(scale_weight(1000, 1000), 256);
        assert_eq!(scale_weight(500, 1000), 128);
        assert_eq!(scale_weight(1, 65535), 1);
    }
}
