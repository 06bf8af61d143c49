use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

fn ends(source: &str, destination: &str) -> Endpoints {
    Endpoints { source: addr(source), destination: addr(destination) }
}

#[test]
fn parses_v1_tcp4_tcp6_and_unknown() {
    let tcp4 = b"PROXY TCP4 203.0.113.7 192.0.2.1 56324 443\r\nGET /";
    let received = parse(tcp4).unwrap().unwrap();
    assert_eq!(received.endpoints, Some(ends("203.0.113.7:56324", "192.0.2.1:443")));
    assert_eq!(&tcp4[received.len..], b"GET /");

    let tcp6 = b"PROXY TCP6 2001:db8::7 2001:db8::1 56324 443\r\n";
    let received = parse(tcp6).unwrap().unwrap();
    assert_eq!(received.endpoints, Some(ends("[2001:db8::7]:56324", "[2001:db8::1]:443")));
    assert_eq!(received.len, tcp6.len());

    // Cut just after a space: not whole yet, not bad.
    assert!(matches!(parse(b"PROXY TCP4 203.0.113.7 192.0.2.1 56324 "), Ok(None)));

    let unknown = b"PROXY UNKNOWN whatever follows\r\nrest";
    assert_eq!(parse(unknown).unwrap(), Some(Received { endpoints: None, len: unknown.len() - 4 }));
}

#[test]
fn v2_local_names_no_endpoints() {
    let local = Outgoing::new(ProxyVersion::V2, None);
    assert_eq!(local.as_bytes(), b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00");
    assert_eq!(parse(local.as_bytes()).unwrap(), Some(Received { endpoints: None, len: 16 }));
    assert_eq!(Outgoing::new(ProxyVersion::V1, None).as_bytes(), b"PROXY UNKNOWN\r\n");
}

#[test]
fn v2_tlvs_are_part_of_the_header() {
    let mut header = Outgoing::new(ProxyVersion::V2, Some(ends("10.0.0.1:1000", "10.0.0.2:80"))).as_bytes().to_vec();
    // Declared length 12 + a 7-byte TLV (type 0x04 "NOOP", length 4).
    header[15] = 12 + 7;
    header.extend_from_slice(&[0x04, 0, 4, b'a', b'b', b'c', b'd']);
    header.extend_from_slice(b"after");
    let received = parse(&header).unwrap().unwrap();
    assert_eq!(received.len, 16 + 19);
    assert_eq!(received.endpoints, Some(ends("10.0.0.1:1000", "10.0.0.2:80")));
}

#[test]
fn refuses_what_is_no_header() {
    assert!(matches!(parse(b"GET / HTTP/1.1\r\n"), Err(HeaderError::Missing)));
    assert!(matches!(parse(b"\x16\x03\x01\x02\x00"), Err(HeaderError::Missing)));
    assert!(matches!(parse(b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n"), Err(HeaderError::V1(_))));
    assert!(matches!(parse(b"PROXY TCP4 1.2.3.4 ::1 1 2\r\n"), Err(HeaderError::V1(_))));
    assert!(matches!(parse(b"POST / HTTP/1.1\r\n"), Err(HeaderError::Missing)));
    assert!(matches!(parse(b"PRI * HTTP/2.0"), Err(HeaderError::Missing)));
    assert!(matches!(parse(b"PROXY\r\n"), Err(HeaderError::Missing)));
    assert!(matches!(parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 \r\n"), Err(HeaderError::V1(_))));
    let mut bad_version = Outgoing::new(ProxyVersion::V2, None).as_bytes().to_vec();
    bad_version[12] = 0x10;
    assert!(matches!(parse(&bad_version), Err(HeaderError::V2(_))));
    assert!(matches!(parse(b"\r\n\r\nX"), Err(HeaderError::V2(_))));
}

#[test]
fn refuses_oversized_headers_before_they_arrive() {
    let mut huge = Outgoing::new(ProxyVersion::V2, None).as_bytes().to_vec();
    huge[14..16].copy_from_slice(&u16::MAX.to_be_bytes());
    assert!(matches!(parse(&huge), Err(HeaderError::TooLarge)));
    let long = format!("PROXY UNKNOWN {}", "x".repeat(200));
    assert!(matches!(parse(long.as_bytes()), Err(HeaderError::TooLarge)));
}

#[test]
fn mixed_families_are_sent_as_ipv6() {
    let mixed = ends("192.0.2.7:5000", "[2001:db8::1]:443");
    let v1 = Outgoing::new(ProxyVersion::V1, Some(mixed));
    assert_eq!(v1.as_bytes(), b"PROXY TCP6 ::ffff:192.0.2.7 2001:db8::1 5000 443\r\n");
    let mapped =
        Endpoints { source: SocketAddr::new(Ipv4Addr::new(192, 0, 2, 7).to_ipv6_mapped().into(), 5000), ..mixed };
    assert_eq!(parse(v1.as_bytes()).unwrap().unwrap().endpoints, Some(mapped));
    let v2 = Outgoing::new(ProxyVersion::V2, Some(mixed));
    assert_eq!(parse(v2.as_bytes()).unwrap().unwrap().endpoints, Some(mapped));
}

fn socket_addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<u32>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::new(Ipv4Addr::from(ip).into(), port)),
        (any::<u128>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::new(Ipv6Addr::from(ip).into(), port)),
    ]
}

fn version() -> impl Strategy<Value = ProxyVersion> {
    prop_oneof![Just(ProxyVersion::V1), Just(ProxyVersion::V2)]
}

/// What a header built for `e` names once parsed: both ends in one family.
fn as_sent(e: Endpoints) -> Endpoints {
    let (source, destination) = same_family(e.source.ip(), e.destination.ip());
    Endpoints {
        source: SocketAddr::new(source, e.source.port()),
        destination: SocketAddr::new(destination, e.destination.port()),
    }
}

proptest! {
    /// Every header built parses back to its endpoints and its exact length, with
    /// any bytes after it; every strict prefix of it asks for more.
    #[test]
    fn built_headers_parse_back(
        version in version(),
        source in socket_addr(),
        destination in socket_addr(),
        local in any::<bool>(),
        after in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let sent = (!local).then_some(Endpoints { source, destination });
        let header = Outgoing::new(version, sent);
        let bytes = header.as_bytes();
        let mut stream = bytes.to_vec();
        stream.extend_from_slice(&after);
        let received = parse(&stream).unwrap().unwrap();
        prop_assert_eq!(received.len, bytes.len());
        prop_assert_eq!(received.endpoints, sent.map(as_sent));
        for cut in 0..bytes.len() {
            prop_assert!(matches!(parse(&bytes[..cut]), Ok(None)), "prefix of {} bytes", cut);
        }
    }

    /// Any bytes at all: an answer, never a panic, and never a header longer than them.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256), v2 in any::<bool>()) {
        let mut input = if v2 { V2_SIGNATURE.to_vec() } else { b"PROXY ".to_vec() };
        input.extend_from_slice(&bytes);
        for buf in [&bytes[..], &input[..]] {
            if let Ok(Some(received)) = parse(buf) {
                prop_assert!(received.len <= buf.len());
            }
        }
    }
}

/// A connected pair of loopback sockets: (ours, the client's).
async fn pair() -> (tokio::net::TcpStream, tokio::net::TcpStream) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
    let (ours, _) = listener.accept().await.unwrap();
    (ours, client)
}

#[tokio::test]
async fn reads_a_header_sent_in_pieces_and_nothing_after_it() {
    let (ours, mut client) = pair().await;
    let header = Outgoing::new(ProxyVersion::V1, Some(ends("198.51.100.9:4000", "127.0.0.1:80")));
    let reading = tokio::spawn(async move {
        let received = read(&ours).await;
        (received, ours)
    });
    for byte in header.as_bytes() {
        client.write_all(&[*byte]).await.unwrap();
        client.flush().await.unwrap();
        tokio::task::yield_now().await;
    }
    client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
    let (received, mut ours) = reading.await.unwrap();
    assert_eq!(received.unwrap().endpoints, Some(ends("198.51.100.9:4000", "127.0.0.1:80")));
    let mut rest = [0u8; 16];
    ours.read_exact(&mut rest).await.unwrap();
    assert_eq!(&rest, b"GET / HTTP/1.1\r\n");
}

#[tokio::test]
async fn reads_a_v2_header_from_a_registered_fd() {
    let (ours, mut client) = pair().await;
    // As an http frontend's plain connection is registered.
    // SAFETY: the AsyncFd owns the stream, so its descriptor stays open and the
    // same for the AsyncFd's whole life.
    let ours = unsafe { AsyncFd::register(ours.into_std().unwrap()) }.map_err(std::io::Error::from).unwrap();
    let header = Outgoing::new(ProxyVersion::V2, Some(ends("[2001:db8::9]:4000", "[2001:db8::1]:443")));
    let mut flight = header.as_bytes().to_vec();
    flight.extend_from_slice(b"\x16\x03\x01");
    client.write_all(&flight).await.unwrap();
    let received = read(&ours).await.unwrap();
    assert_eq!(received.endpoints, Some(ends("[2001:db8::9]:4000", "[2001:db8::1]:443")));
    let mut rest = [0u8; 8];
    let n = ours.get_ref().peek(&mut rest).unwrap();
    assert_eq!(&rest[..n], b"\x16\x03\x01");
}

#[tokio::test]
async fn a_client_closing_mid_header_ends_the_read() {
    let (ours, mut client) = pair().await;
    client.write_all(b"PROXY TCP4 1.2.3.4").await.unwrap();
    client.shutdown().await.unwrap();
    assert!(matches!(read(&ours).await, Err(HeaderError::Closed)));
    let (ours, client) = pair().await;
    drop(client);
    assert!(matches!(read(&ours).await, Err(HeaderError::Closed)));
}
