//! Reads the server name (SNI) out of a TLS ClientHello without terminating TLS,
//! for tcp frontends that route by it. Hand-written over the bytes peeked from the
//! client socket: every read is bounds-checked, nothing here can panic, and the
//! input is never consumed (the server gets the client's bytes untouched).
//!
//! Layout read (RFC 8446 sections 5.1 and 4.1.2, RFC 6066 section 3):
//!
//! ```text
//! record:       type 22 (handshake) | version major 3 | length u16 (1..=2^14) | fragment
//! handshake:    type 1 (ClientHello) | length u24 | body
//! ClientHello:  version u16 | random [32] | session_id <0..32> | cipher_suites <u16>
//!               | compression_methods <u8> | extensions <u16> (absent in old clients)
//! extension:    type u16 | data <u16>;  server_name (type 0): list <u16> of
//!               name_type u8 | name <u16>, name_type 0 = host_name
//! ```
//!
//! The ClientHello may be split over several records (rare, but legal), and the
//! records over any number of TCP segments: the parser reads the handshake
//! message across record boundaries and answers "need more" until the bytes it
//! needs are there.

/// Bytes of a record header: type, version, length.
const RECORD_HEADER: usize = 5;
/// Largest record fragment TLS allows (2^14).
const MAX_FRAGMENT: usize = 16 * 1024;
/// Content type of a handshake record.
const HANDSHAKE: u8 = 22;
/// Handshake message type of a ClientHello.
const CLIENT_HELLO: u8 = 1;
/// Extension type of server_name.
const SERVER_NAME: u16 = 0;
/// name_type of a host name in the server_name list.
const HOST_NAME: u8 = 0;

/// Most bytes of a client's first flight looked at: one full-size record. A
/// ClientHello that needs more than this is refused, which bounds the memory and
/// parsing work an unauthenticated client can ask for. Real ClientHellos are well
/// under 2 KiB (a few KiB with post-quantum key shares).
pub const MAX_HELLO_BYTES: usize = RECORD_HEADER + MAX_FRAGMENT;

/// Longest server name kept: a DNS name is at most 253 bytes, so no route can
/// match anything longer.
pub const MAX_NAME: usize = 253;

/// What the bytes peeked so far say.
// The name is held inline (no allocation per connection); a `Peeked` is only ever
// returned, never stored, so its size costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peeked {
    /// A prefix of a valid ClientHello: wait for more bytes.
    NeedMore,
    /// A ClientHello, with its host name if it sent one (and it is short enough
    /// to be a DNS name).
    Hello(Option<ServerName>),
    /// Not a ClientHello this can route: the connection is to be closed.
    Refused(Refusal),
}

/// Why a first flight is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Does not start with a TLS handshake record.
    NotTls,
    /// A TLS handshake record, but not carrying a ClientHello.
    NotClientHello,
    /// A ClientHello whose lengths contradict each other.
    Malformed,
    /// A ClientHello longer than [`MAX_HELLO_BYTES`] allows.
    TooLarge,
}

impl Refusal {
    /// A short description, for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::NotTls => "not a TLS handshake",
            Refusal::NotClientHello => "not a ClientHello",
            Refusal::Malformed => "malformed ClientHello",
            Refusal::TooLarge => "ClientHello too large",
        }
    }
}

/// A host name from the server_name extension, copied out of the peeked bytes
/// (it may straddle two records). Fixed size: no allocation per connection.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ServerName {
    bytes: [u8; MAX_NAME],
    len: u8,
}

impl ServerName {
    /// The name as sent: bytes, in whatever case the client used.
    pub fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..usize::from(self.len)).unwrap_or_default()
    }
}

impl std::fmt::Debug for ServerName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self.as_bytes()))
    }
}

impl std::fmt::Display for ServerName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&String::from_utf8_lossy(self.as_bytes()))
    }
}

/// Looks for a ClientHello at the start of `buf` (everything the client has sent
/// so far) and, when it is complete enough, for its host name. Stops reading at
/// the server_name extension: what follows does not change the route.
pub fn parse(buf: &[u8]) -> Peeked {
    match client_hello(buf) {
        Ok(name) => Peeked::Hello(name),
        Err(Stop::NeedMore) => Peeked::NeedMore,
        Err(Stop::Refused(why)) => Peeked::Refused(why),
    }
}

/// Why parsing stopped before a result.
#[derive(Debug)]
enum Stop {
    NeedMore,
    Refused(Refusal),
}

use Stop::{NeedMore, Refused};

fn client_hello(buf: &[u8]) -> Result<Option<ServerName>, Stop> {
    let mut r = Reader { buf, pos: 0, in_record: 0, read: 0 };
    if r.u8()? != CLIENT_HELLO {
        return Err(Refused(Refusal::NotClientHello));
    }
    let len = r.u24()?;
    // Even in one record the whole message must fit in the bound; a longer one can
    // be refused now rather than after reading 16 KiB of it.
    if len > MAX_HELLO_BYTES - RECORD_HEADER - 4 {
        return Err(Refused(Refusal::TooLarge));
    }
    let end = r.read + len;
    r.skip(2 + 32, end)?; // legacy_version, random
    let session_id = usize::from(r.u8_within(end)?);
    if session_id > 32 {
        return Err(Refused(Refusal::Malformed));
    }
    r.skip(session_id, end)?;
    let suites = usize::from(r.u16_within(end)?);
    r.skip(suites, end)?;
    let compression = usize::from(r.u8_within(end)?);
    r.skip(compression, end)?;
    if r.read == end {
        return Ok(None); // no extensions at all (allowed before TLS 1.3)
    }
    let extensions = r.vec_end(end)?;
    while r.read < extensions {
        let kind = r.u16_within(extensions)?;
        let data = r.vec_end(extensions)?;
        if kind == SERVER_NAME {
            return server_name(&mut r, data);
        }
        r.skip(data - r.read, data)?;
    }
    Ok(None)
}

/// The first host_name of a server_name extension ending at `end`.
fn server_name(r: &mut Reader<'_>, end: usize) -> Result<Option<ServerName>, Stop> {
    let list = r.vec_end(end)?;
    while r.read < list {
        let kind = r.u8_within(list)?;
        let name_end = r.vec_end(list)?;
        let len = name_end - r.read;
        if kind != HOST_NAME {
            r.skip(len, name_end)?;
            continue;
        }
        if len == 0 || len > MAX_NAME {
            // Nothing a route can match: treated like no name at all.
            return Ok(None);
        }
        let mut name = ServerName { bytes: [0; MAX_NAME], len: 0 };
        r.copy(name.bytes.get_mut(..len).unwrap_or_default())?;
        name.len = u8::try_from(len).map_err(|_| Refused(Refusal::Malformed))?;
        return Ok(Some(name));
    }
    Ok(None)
}

/// Reads the handshake stream out of consecutive records, checking each record
/// header as it gets to it.
struct Reader<'a> {
    buf: &'a [u8],
    /// Next byte of `buf` to look at.
    pos: usize,
    /// Fragment bytes of the current record not yet read.
    in_record: usize,
    /// Handshake bytes read so far: positions and ends below are in these units.
    read: usize,
}

impl Reader<'_> {
    /// Makes at least one handshake byte available at `pos`, stepping over record
    /// headers.
    fn fill(&mut self) -> Result<(), Stop> {
        while self.in_record == 0 {
            let header = self.buf.get(self.pos..).unwrap_or_default();
            self.in_record = record_header(header)?;
            self.pos += RECORD_HEADER;
        }
        if self.pos < self.buf.len() {
            Ok(())
        } else {
            Err(NeedMore)
        }
    }

    fn u8(&mut self) -> Result<u8, Stop> {
        self.fill()?;
        let byte = *self.buf.get(self.pos).ok_or(NeedMore)?;
        self.pos += 1;
        self.in_record -= 1;
        self.read += 1;
        Ok(byte)
    }

    fn u16(&mut self) -> Result<u16, Stop> {
        Ok(u16::from_be_bytes([self.u8()?, self.u8()?]))
    }

    fn u24(&mut self) -> Result<usize, Stop> {
        let (a, b, c) = (self.u8()?, self.u8()?, self.u8()?);
        Ok(usize::from(a) << 16 | usize::from(b) << 8 | usize::from(c))
    }

    /// A length byte that must itself lie before `end`.
    fn u8_within(&mut self, end: usize) -> Result<u8, Stop> {
        self.within(1, end)?;
        self.u8()
    }

    /// A 2-byte field that must itself lie before `end`.
    fn u16_within(&mut self, end: usize) -> Result<u16, Stop> {
        self.within(2, end)?;
        self.u16()
    }

    /// Reads a u16 length and returns where the vector it prefixes ends, which
    /// must be no later than `end` (the enclosing structure's end).
    fn vec_end(&mut self, end: usize) -> Result<usize, Stop> {
        let len = usize::from(self.u16_within(end)?);
        self.within(len, end)?;
        Ok(self.read + len)
    }

    /// Refuses a field of `len` bytes that would run past `end`. Checked from the
    /// lengths alone, so a lie is caught before waiting for bytes that will not come.
    fn within(&self, len: usize, end: usize) -> Result<(), Stop> {
        if self.read + len <= end {
            Ok(())
        } else {
            Err(Refused(Refusal::Malformed))
        }
    }

    /// Steps over `len` handshake bytes (the field must end by `end`).
    fn skip(&mut self, mut len: usize, end: usize) -> Result<(), Stop> {
        self.within(len, end)?;
        while len > 0 {
            self.fill()?;
            let here = (self.buf.len() - self.pos).min(self.in_record).min(len);
            self.pos += here;
            self.in_record -= here;
            self.read += here;
            len -= here;
        }
        Ok(())
    }

    /// Fills `out` with the next handshake bytes.
    fn copy(&mut self, out: &mut [u8]) -> Result<(), Stop> {
        let mut done = 0;
        while done < out.len() {
            self.fill()?;
            let here = (self.buf.len() - self.pos).min(self.in_record).min(out.len() - done);
            let (Some(from), Some(to)) = (self.buf.get(self.pos..self.pos + here), out.get_mut(done..done + here))
            else {
                return Err(Refused(Refusal::Malformed));
            };
            to.copy_from_slice(from);
            self.pos += here;
            self.in_record -= here;
            self.read += here;
            done += here;
        }
        Ok(())
    }
}

/// Checks a record header (as much of it as has arrived) and returns its fragment
/// length. Each byte is checked as soon as it is there, so a client speaking
/// something else (`GET / HTTP/1.1`, SSH, SSLv2) is refused on its first byte.
fn record_header(header: &[u8]) -> Result<usize, Stop> {
    let checks: [fn(u8) -> bool; 3] = [
        |kind| kind == HANDSHAKE,
        |major| major == 3,
        // 3.0 (some ClientHellos) to 3.4; the record version is otherwise ignored.
        |minor| minor <= 4,
    ];
    for (byte, ok) in header.iter().zip(checks) {
        if !ok(*byte) {
            return Err(Refused(Refusal::NotTls));
        }
    }
    let Some(&[_, _, _, high, low]) = header.get(..RECORD_HEADER) else {
        return Err(NeedMore);
    };
    match usize::from(u16::from_be_bytes([high, low])) {
        0 => Err(Refused(Refusal::Malformed)),
        len if len > MAX_FRAGMENT => Err(Refused(Refusal::Malformed)),
        len => Ok(len),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A ClientHello handshake message (no record header) with `extensions` (None:
    /// the field left out, as pre-TLS 1.3 clients may).
    fn hello_message(extensions: Option<&[u8]>) -> Vec<u8> {
        let mut body = vec![3, 3];
        body.extend([7u8; 32]); // random
        body.push(32);
        body.extend([9u8; 32]); // session id
        body.extend([0, 4, 0x13, 0x01, 0x13, 0x02]); // two cipher suites
        body.extend([1, 0]); // null compression
        if let Some(ext) = extensions {
            body.extend(u16::try_from(ext.len()).unwrap().to_be_bytes());
            body.extend(ext);
        }
        let mut msg = vec![CLIENT_HELLO];
        msg.extend(&u32::try_from(body.len()).unwrap().to_be_bytes()[1..]);
        msg.extend(body);
        msg
    }

    fn extension(kind: u16, data: &[u8]) -> Vec<u8> {
        let mut out = kind.to_be_bytes().to_vec();
        out.extend(u16::try_from(data.len()).unwrap().to_be_bytes());
        out.extend(data);
        out
    }

    fn sni_extension(name: &[u8]) -> Vec<u8> {
        let mut entry = vec![HOST_NAME];
        entry.extend(u16::try_from(name.len()).unwrap().to_be_bytes());
        entry.extend(name);
        let mut list = u16::try_from(entry.len()).unwrap().to_be_bytes().to_vec();
        list.extend(entry);
        extension(SERVER_NAME, &list)
    }

    /// `msg` in records of at most `fragment` bytes each.
    fn records(msg: &[u8], fragment: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for chunk in msg.chunks(fragment) {
            out.extend([HANDSHAKE, 3, 1]);
            out.extend(u16::try_from(chunk.len()).unwrap().to_be_bytes());
            out.extend(chunk);
        }
        out
    }

    /// A full ClientHello record naming `name`, between two other extensions.
    fn hello_for(name: &[u8]) -> Vec<u8> {
        let mut ext = extension(0x000a, &[0, 2, 0, 0x1d]); // supported_groups
        ext.extend(sni_extension(name));
        ext.extend(extension(0x002b, &[2, 3, 4])); // supported_versions
        records(&hello_message(Some(&ext)), MAX_FRAGMENT)
    }

    fn name_of(peeked: Peeked) -> Option<String> {
        match peeked {
            Peeked::Hello(name) => name.map(|n| n.to_string()),
            other => panic!("expected a hello, got {other:?}"),
        }
    }

    #[test]
    fn the_server_name_is_found() {
        assert_eq!(name_of(parse(&hello_for(b"a.site.test"))), Some("a.site.test".into()));
        // As sent: matching ignores case, the parser does not change it.
        assert_eq!(name_of(parse(&hello_for(b"API.Example.COM"))), Some("API.Example.COM".into()));
    }

    #[test]
    fn a_hello_without_a_name_has_none() {
        let other = extension(0x000a, &[0, 2, 0, 0x1d]);
        assert_eq!(parse(&records(&hello_message(Some(&other)), MAX_FRAGMENT)), Peeked::Hello(None));
        assert_eq!(parse(&records(&hello_message(Some(&[])), MAX_FRAGMENT)), Peeked::Hello(None));
        assert_eq!(parse(&records(&hello_message(None), MAX_FRAGMENT)), Peeked::Hello(None));
        // An empty name, or one longer than any DNS name: nothing to route on.
        assert_eq!(name_of(parse(&hello_for(b""))), None);
        assert_eq!(name_of(parse(&hello_for(&[b'a'; 254]))), None);
        assert_eq!(name_of(parse(&hello_for(&[b'a'; 253]))).map(|n| n.len()), Some(253));
    }

    #[test]
    fn every_prefix_of_a_hello_needs_more() {
        let full = hello_for(b"a.site.test");
        let sni_end = full.windows(11).position(|w| w == b"a.site.test").unwrap() + 11;
        for cut in 0..sni_end {
            assert_eq!(parse(&full[..cut]), Peeked::NeedMore, "cut at {cut}");
        }
        // The name is all it waits for: the rest may still be on its way.
        assert_eq!(name_of(parse(&full[..sni_end])), Some("a.site.test".into()));
        // Without a name, the whole message is needed to know there is none.
        let nameless = records(&hello_message(Some(&extension(0x000a, &[0, 2, 0, 0x1d]))), MAX_FRAGMENT);
        for cut in 0..nameless.len() {
            assert_eq!(parse(&nameless[..cut]), Peeked::NeedMore, "cut at {cut}");
        }
    }

    #[test]
    fn a_hello_split_over_records_is_reassembled() {
        let mut ext = extension(0x000a, &[0, 2, 0, 0x1d]);
        ext.extend(sni_extension(b"straddling.example.com"));
        let msg = hello_message(Some(&ext));
        for fragment in [1, 2, 3, 7, 50, 100, msg.len() - 1] {
            let split = records(&msg, fragment);
            assert_eq!(name_of(parse(&split)), Some("straddling.example.com".into()), "fragment {fragment}");
            // The name is the last thing in the message: every shorter cut needs more.
            for cut in 0..split.len() {
                assert_eq!(parse(&split[..cut]), Peeked::NeedMore, "fragment {fragment}, cut {cut}");
            }
        }
        // A later record that is not a handshake record breaks the message.
        let mut broken = records(&msg, 40);
        broken[45] = 23; // application data
        assert_eq!(parse(&broken), Peeked::Refused(Refusal::NotTls));
    }

    #[test]
    fn other_protocols_are_refused_on_their_first_bytes() {
        for bytes in
            [&b"G"[..], b"GET / HTTP/1.1\r\n\r\n", b"SSH-2.0-OpenSSH\r\n", b"\x80\x2e\x01\x03\x01", b"\x16\x02"]
        {
            assert_eq!(parse(bytes), Peeked::Refused(Refusal::NotTls), "{bytes:?}");
        }
        // An alert record, or a handshake record with a ServerHello.
        assert_eq!(parse(&[21, 3, 3, 0, 2, 2, 40]), Peeked::Refused(Refusal::NotTls));
        assert_eq!(parse(&[22, 3, 3, 0, 4, 2, 0, 0, 0]), Peeked::Refused(Refusal::NotClientHello));
        assert_eq!(parse(b""), Peeked::NeedMore);
        assert_eq!(parse(b"\x16\x03"), Peeked::NeedMore);
    }

    #[test]
    fn lying_lengths_are_refused() {
        let good = hello_for(b"a.site.test");
        // Records of length 0 or beyond 2^14.
        assert_eq!(parse(&[22, 3, 1, 0, 0]), Peeked::Refused(Refusal::Malformed));
        assert_eq!(parse(&[22, 3, 1, 0x40, 1]), Peeked::Refused(Refusal::Malformed));
        // A handshake message longer than the bound: refused at once.
        assert_eq!(parse(&[22, 3, 1, 0x40, 0, 1, 0, 0x40, 0]), Peeked::Refused(Refusal::TooLarge));
        assert_eq!(parse(&[22, 3, 1, 0x40, 0, 1, 0xff, 0xff, 0xff]), Peeked::Refused(Refusal::TooLarge));
        // A session id longer than 32.
        let mut bad = good.clone();
        bad[RECORD_HEADER + 4 + 34] = 33;
        assert_eq!(parse(&bad), Peeked::Refused(Refusal::Malformed));
        // Cipher suites running past the message.
        let mut bad = good.clone();
        bad[RECORD_HEADER + 4 + 35 + 32] = 0xff;
        assert_eq!(parse(&bad), Peeked::Refused(Refusal::Malformed));
        // An extension block longer than the message, and a message shorter than its fields.
        let suites_at = RECORD_HEADER + 4 + 35 + 32;
        let ext_len_at = suites_at + 2 + 4 + 2;
        let mut bad = good.clone();
        bad[ext_len_at] = 0xff;
        assert_eq!(parse(&bad), Peeked::Refused(Refusal::Malformed));
        let mut bad = good.clone();
        bad[RECORD_HEADER + 1..RECORD_HEADER + 4].copy_from_slice(&[0, 0, 10]);
        assert_eq!(parse(&bad), Peeked::Refused(Refusal::Malformed));
        // A name longer than its list.
        let at = good.windows(11).position(|w| w == b"a.site.test").unwrap();
        let mut bad = good.clone();
        bad[at - 1] = 40;
        assert_eq!(parse(&bad), Peeked::Refused(Refusal::Malformed));
    }

    #[test]
    fn a_real_client_hello_names_its_server() {
        use std::sync::Arc;
        let roots = rustls::RootCertStore::empty();
        let config =
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
        let config = Arc::new(config);
        let hello = |name: rustls::pki_types::ServerName<'static>| {
            let mut conn = rustls::ClientConnection::new(Arc::clone(&config), name).unwrap();
            let mut out = Vec::new();
            conn.write_tls(&mut out).unwrap();
            out
        };
        let named = hello("Shop.Example.com".try_into().unwrap());
        // Sent as the application spelled it: route matching ignores case.
        assert_eq!(name_of(parse(&named)), Some("Shop.Example.com".into()));
        for cut in 0..named.len() {
            assert!(matches!(parse(&named[..cut]), Peeked::NeedMore | Peeked::Hello(_)), "cut {cut}");
        }
        let by_ip = hello(rustls::pki_types::ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
        assert_eq!(parse(&by_ip), Peeked::Hello(None));
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 4096, failure_persistence: None, ..ProptestConfig::default() })]

        /// Any bytes at all: an answer, never a panic.
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = parse(&bytes);
        }

        /// A real hello with a few bytes changed, cut anywhere: never a panic, and a
        /// name found is within bounds.
        #[test]
        fn mutated_hellos_never_panic(
            fragment in 1usize..200,
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut ext = extension(0x000a, &[0, 2, 0, 0x1d]);
            ext.extend(sni_extension(b"mutant.example.com"));
            let mut bytes = records(&hello_message(Some(&ext)), fragment);
            for (at, value) in edits {
                let i = at.index(bytes.len());
                bytes[i] = value;
            }
            let end = cut.index(bytes.len() + 1);
            if let Peeked::Hello(Some(name)) = parse(&bytes[..end]) {
                prop_assert!(!name.as_bytes().is_empty() && name.as_bytes().len() <= MAX_NAME);
            }
        }

        /// Unmodified hellos in records of any size, cut anywhere: "need more" until
        /// the name is in, then the name.
        #[test]
        fn split_hellos_give_the_name_or_need_more(fragment in 1usize..300, cut in any::<prop::sample::Index>()) {
            let mut ext = extension(0x000a, &[0, 2, 0, 0x1d]);
            ext.extend(sni_extension(b"whole.example.com"));
            let bytes = records(&hello_message(Some(&ext)), fragment);
            let end = cut.index(bytes.len() + 1);
            match parse(&bytes[..end]) {
                Peeked::NeedMore => prop_assert!(end < bytes.len()),
                Peeked::Hello(Some(name)) => prop_assert_eq!(name.as_bytes(), b"whole.example.com"),
                other => prop_assert!(false, "{:?} at {}", other, end),
            }
        }
    }
}
