//! The PROXY protocol (HAProxy's; v1 text, v2 binary): the header a load balancer
//! in front sends first on each connection (`frontends[].proxy_protocol`), read
//! here, and the one Fulcrum sends first to a server that expects it
//! (`servers[].send_proxy`), built here. Parsing is the `ppp` crate's.
//!
//! An incoming header is peeked at (MSG_PEEK) until it is whole, then exactly its
//! bytes are read: whatever follows (an HTTP request, a TLS ClientHello) stays
//! queued, untouched, for the code that reads the connection next.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use ppp::PartialResult;
use socket2::SockRef;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use crate::cluster::Frontend;
use crate::config::ProxyVersion;
use crate::log_limit::LogLimit;

/// Largest incoming header accepted. A v1 header is at most 107 bytes; a v2 one
/// is 16 bytes, the addresses and whatever TLVs its sender adds (TLS details, a
/// connection or endpoint id), a few hundred bytes in practice.
pub const MAX_HEADER_BYTES: usize = 4096;

/// The v2 signature, then the version and command byte, the family and the length.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
const V2_FIXED: usize = 16;
/// Longest v1 header, CRLF included (the protocol's own bound).
const V1_MAX: usize = 107;
const V1_PREFIX: &[u8] = b"PROXY ";

/// Connections refused for their header, across every frontend.
static REFUSED: LogLimit = LogLimit::per_second();

/// The two ends of a client's connection as a server behind should see them: the
/// client's address, and the address the client connected to. A request carries
/// them (as an extension) to where its server connection is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoints {
    /// The client.
    pub source: SocketAddr,
    /// The address the client connected to.
    pub destination: SocketAddr,
}

/// A whole header at the start of some bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// The endpoints it names; `None` for a v2 LOCAL, a v1 UNKNOWN or a family
    /// other than TCP over IPv4/IPv6, whose connection's own endpoints stand.
    pub endpoints: Option<Endpoints>,
    /// Its length in bytes.
    pub len: usize,
}

/// Why a connection's PROXY header was refused.
#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    /// The first byte starts neither version (a plain request, a TLS ClientHello).
    #[error("no PROXY protocol header")]
    Missing,
    /// A malformed v1 header.
    #[error("invalid PROXY v1 header: {0}")]
    V1(ppp::v1::BinaryParseError),
    /// A malformed v2 header.
    #[error("invalid PROXY v2 header: {0}")]
    V2(ppp::v2::ParseError),
    /// Longer than [`MAX_HEADER_BYTES`] (v2), or no CRLF within 107 bytes (v1).
    #[error("PROXY header too large")]
    TooLarge,
    /// The client closed its side before the header was whole.
    #[error("client closed before its PROXY header was complete")]
    Closed,
    /// No whole header within `timeouts.request_header`.
    #[error("no complete PROXY header within request_header ({0:?})")]
    Timeout(Duration),
    /// Reading the socket failed (a reset, mostly).
    #[error("reading the PROXY header: {0}")]
    Io(#[source] io::Error),
}

impl HeaderError {
    /// A short label for logs (and for a counter's label, should one come).
    pub fn reason(&self) -> &'static str {
        REFUSAL_REASONS[self.reason_index()]
    }

    /// Index of [`HeaderError::reason`] in [`REFUSAL_REASONS`] (the counters' order).
    pub fn reason_index(&self) -> usize {
        match self {
            HeaderError::Missing | HeaderError::V1(_) | HeaderError::V2(_) => 0,
            HeaderError::TooLarge => 1,
            HeaderError::Closed | HeaderError::Io(_) => 2,
            HeaderError::Timeout(_) => 3,
        }
    }
}

/// Why connections were closed for their header, as the metric labels them.
pub const REFUSAL_REASONS: [&str; 4] = ["invalid", "too_large", "closed", "timeout"];

/// Parses the header at the start of `buf`: `Ok(None)` while it may still become
/// one with more bytes.
pub fn parse(buf: &[u8]) -> Result<Option<Received>, HeaderError> {
    match buf.first() {
        None => Ok(None),
        Some(b'P') => parse_v1(buf),
        Some(b'\r') => parse_v2(buf),
        Some(_) => Err(HeaderError::Missing),
    }
}

fn parse_v1(buf: &[u8]) -> Result<Option<Received>, HeaderError> {
    use ppp::v1::{Addresses, BinaryParseError, ParseError};
    let start = buf.len().min(V1_PREFIX.len());
    if buf[..start] != V1_PREFIX[..start] {
        return Err(HeaderError::Missing);
    }
    // Whole only with its line end: parsed then, not before (ppp takes a header
    // cut just after a space for a bad one, not for an incomplete one).
    if !buf.contains(&b'\n') {
        return if buf.len() >= V1_MAX { Err(HeaderError::TooLarge) } else { Ok(None) };
    }
    let header = match ppp::v1::Header::try_from(buf) {
        Ok(header) => header,
        Err(BinaryParseError::Parse(ParseError::HeaderTooLong)) => return Err(HeaderError::TooLarge),
        Err(err) => return Err(HeaderError::V1(err)),
    };
    let endpoints = match header.addresses {
        Addresses::Tcp4(a) => {
            Some(endpoints(a.source_address.into(), a.source_port, a.destination_address.into(), a.destination_port))
        }
        Addresses::Tcp6(a) => {
            Some(endpoints(a.source_address.into(), a.source_port, a.destination_address.into(), a.destination_port))
        }
        Addresses::Unknown => None,
    };
    Ok(Some(Received { endpoints, len: header.header.len() }))
}

fn parse_v2(buf: &[u8]) -> Result<Option<Received>, HeaderError> {
    use ppp::v2::{Addresses, Command};
    // The declared length is known from the 16th byte on: an oversized header is
    // refused then, not waited for.
    if buf.len() >= V2_FIXED && buf.starts_with(V2_SIGNATURE) {
        let declared = u16::from_be_bytes([buf[14], buf[15]]) as usize;
        if V2_FIXED + declared > MAX_HEADER_BYTES {
            return Err(HeaderError::TooLarge);
        }
    }
    let header = match ppp::v2::Header::try_from(buf) {
        Ok(header) => header,
        Err(err) if err.is_incomplete() => return Ok(None),
        Err(err) => return Err(HeaderError::V2(err)),
    };
    let endpoints = match (header.command, header.addresses) {
        (Command::Local, _) => None,
        (Command::Proxy, Addresses::IPv4(a)) => {
            Some(endpoints(a.source_address.into(), a.source_port, a.destination_address.into(), a.destination_port))
        }
        (Command::Proxy, Addresses::IPv6(a)) => {
            Some(endpoints(a.source_address.into(), a.source_port, a.destination_address.into(), a.destination_port))
        }
        (Command::Proxy, _) => None,
    };
    Ok(Some(Received { endpoints, len: header.header.len() }))
}

fn endpoints(source: IpAddr, source_port: u16, destination: IpAddr, destination_port: u16) -> Endpoints {
    Endpoints {
        source: SocketAddr::new(source, source_port),
        destination: SocketAddr::new(destination, destination_port),
    }
}

/// A client socket a header can be read from.
pub trait HeaderSource: Sync {
    /// Waits until the socket holds more than `seen` bytes, or its client has
    /// closed its side, and copies what it holds (up to `buf`'s capacity) into
    /// `buf`, leaving it queued on the socket. Returns how many bytes it holds.
    fn peek_more(&self, buf: &mut Vec<u8>, seen: usize) -> impl Future<Output = io::Result<usize>> + Send;

    /// The socket itself.
    fn sock(&self) -> SockRef<'_>;
}

/// Reads the PROXY header at the start of `socket`, and nothing past it. The
/// caller bounds the wait (`timeouts.request_header`).
///
/// The buffer lives only until the header is in; its pages are touched only as
/// far as the client has written.
pub async fn read<S: HeaderSource>(socket: &S) -> Result<Received, HeaderError> {
    let mut buf = Vec::with_capacity(MAX_HEADER_BYTES);
    let mut seen = 0;
    loop {
        let held = socket.peek_more(&mut buf, seen).await.map_err(HeaderError::Io)?;
        if let Some(received) = parse(&buf)? {
            take(socket.sock(), &mut buf, received.len).map_err(HeaderError::Io)?;
            return Ok(received);
        }
        if held == seen {
            return Err(HeaderError::Closed);
        }
        seen = held;
    }
}

/// Takes the first `len` bytes, already peeked at, off the socket.
fn take(sock: SockRef<'_>, buf: &mut Vec<u8>, mut len: usize) -> io::Result<()> {
    while len > 0 {
        buf.clear();
        // Queued already: a non-blocking receive returns them at once.
        let n = sock.recv(&mut buf.spare_capacity_mut()[..len])?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        len -= n;
    }
    Ok(())
}

/// Copies what `sock` holds into `buf` (replacing its contents) without taking it off.
fn peek(sock: SockRef<'_>, buf: &mut Vec<u8>) -> io::Result<usize> {
    buf.clear();
    let n = sock.peek(buf.spare_capacity_mut())?;
    // SAFETY: `peek` initialised the first `n` bytes of the spare capacity, and
    // never more than its length.
    unsafe { buf.set_len(n) };
    Ok(n)
}

/// Peeking leaves the bytes queued, so the socket stays readable: with nothing new
/// since the last look, report WouldBlock, which clears that readiness (unless new
/// bytes raced in) and waits for the next arrival instead of spinning on the same
/// bytes. At end of stream there is no next arrival: report what is there.
fn peek_new(sock: SockRef<'_>, buf: &mut Vec<u8>, seen: usize, read_closed: bool) -> io::Result<usize> {
    let n = peek(sock, buf)?;
    if n == seen && !read_closed {
        Err(io::ErrorKind::WouldBlock.into())
    } else {
        Ok(n)
    }
}

impl HeaderSource for tokio::net::TcpStream {
    async fn peek_more(&self, buf: &mut Vec<u8>, seen: usize) -> io::Result<usize> {
        loop {
            // Readiness alone does not yield to the scheduler; should the socket
            // report readable with nothing new, the caller's timer must still run.
            tokio::task::consume_budget().await;
            let ready = self.ready(Interest::READABLE).await?;
            match self.try_io(Interest::READABLE, || peek_new(SockRef::from(self), buf, seen, ready.is_read_closed())) {
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => continue,
                result => return result,
            }
        }
    }

    fn sock(&self) -> SockRef<'_> {
        SockRef::from(self)
    }
}

impl HeaderSource for AsyncFd<std::net::TcpStream> {
    async fn peek_more(&self, buf: &mut Vec<u8>, seen: usize) -> io::Result<usize> {
        loop {
            tokio::task::consume_budget().await;
            let mut guard = self.readable().await?;
            let closed = guard.ready().is_read_closed();
            if let Ok(result) = guard.try_io(|fd| peek_new(SockRef::from(fd.get_ref()), buf, seen, closed)) {
                return result;
            }
        }
    }

    fn sock(&self) -> SockRef<'_> {
        SockRef::from(self.get_ref())
    }
}

/// Counts and logs a connection closed for its header. Info level, at most a line
/// a second: a client that skips the load balancer in front is a misconfiguration
/// worth seeing, but a scan must not flood the log.
pub fn refused(frontend: &Frontend, peer: SocketAddr, err: &HeaderError) {
    frontend.stats.proxy_protocol_refused[err.reason_index()].fetch_add(1, Relaxed);
    if matches!(err, HeaderError::Timeout(_)) {
        // What the limit ended is the connection's first request, as for a TLS handshake.
        frontend.stats.client_timeouts.first_request.fetch_add(1, Relaxed);
    }
    if let Some(repeats) = REFUSED.check() {
        tracing::info!(frontend = %frontend.name, %peer, reason = err.reason(), error = %err, "closing client: no valid PROXY protocol header{repeats}");
    }
}

/// The PROXY header sent first on a new connection to a `send_proxy` server,
/// built on the stack.
#[derive(Debug, Clone, Copy)]
pub struct Outgoing {
    bytes: [u8; V1_MAX],
    len: usize,
}

impl Outgoing {
    /// The header of `version` naming `endpoints`; without them (health checks)
    /// a v2 LOCAL or a v1 `PROXY UNKNOWN`.
    pub fn new(version: ProxyVersion, endpoints: Option<Endpoints>) -> Self {
        let mut header = Outgoing { bytes: [0; V1_MAX], len: 0 };
        let ips = endpoints.map(|e| (same_family(e.source.ip(), e.destination.ip()), e));
        match (version, ips) {
            (ProxyVersion::V1, None) => header.push(b"PROXY UNKNOWN\r\n"),
            (ProxyVersion::V1, Some(((source, destination), e))) => {
                let family = if source.is_ipv4() { "TCP4" } else { "TCP6" };
                let mut rest = &mut header.bytes[..];
                let text = format_args!(
                    "PROXY {family} {source} {destination} {} {}\r\n",
                    e.source.port(),
                    e.destination.port()
                );
                // At most 104 bytes (two full IPv6 addresses): always fits.
                io::Write::write_fmt(&mut rest, text).expect("a v1 header fits in 107 bytes");
                header.len = V1_MAX - rest.len();
            }
            (ProxyVersion::V2, None) => {
                header.push(V2_SIGNATURE);
                header.push(&[0x20, 0x00, 0, 0]); // v2 LOCAL, UNSPEC, no addresses
            }
            (ProxyVersion::V2, Some(((source, destination), e))) => {
                header.push(V2_SIGNATURE);
                match (source, destination) {
                    (IpAddr::V4(s), IpAddr::V4(d)) => {
                        header.push(&[0x21, 0x11, 0, 12]); // v2 PROXY, TCP over IPv4
                        header.push(&s.octets());
                        header.push(&d.octets());
                    }
                    (s, d) => {
                        header.push(&[0x21, 0x21, 0, 36]); // v2 PROXY, TCP over IPv6
                        header.push(&v6(s).octets());
                        header.push(&v6(d).octets());
                    }
                }
                header.push(&e.source.port().to_be_bytes());
                header.push(&e.destination.port().to_be_bytes());
            }
        }
        header
    }

    fn push(&mut self, bytes: &[u8]) {
        self.bytes[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }

    /// The header's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// Both addresses in one family, as a header names them: IPv6 (IPv4-mapped) when
/// they differ.
fn same_family(source: IpAddr, destination: IpAddr) -> (IpAddr, IpAddr) {
    if source.is_ipv4() == destination.is_ipv4() {
        (source, destination)
    } else {
        (IpAddr::V6(v6(source)), IpAddr::V6(v6(destination)))
    }
}

fn v6(ip: IpAddr) -> std::net::Ipv6Addr {
    match ip {
        IpAddr::V4(ip) => ip.to_ipv6_mapped(),
        IpAddr::V6(ip) => ip,
    }
}

#[cfg(test)]
mod tests;
