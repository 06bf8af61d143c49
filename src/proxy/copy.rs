//! Copying bytes both ways between two streams (TCP sessions, upgraded HTTP
//! connections), with half-close propagation and an inactivity limit.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use std::pin::Pin;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Sleep;

/// Copy buffer per direction; allocated only once a side has data to send.
const COPY_BUFFER: usize = 32 * 1024;

/// Bytes moved in one direction: for this session and, optionally, a shared counter.
#[derive(Debug)]
pub struct Counted<'a> {
    session: AtomicU64,
    total: Option<&'a AtomicU64>,
}

impl<'a> Counted<'a> {
    /// Counts into a fresh session counter and into `total` if given.
    pub fn new(total: Option<&'a AtomicU64>) -> Self {
        Self { session: AtomicU64::new(0), total }
    }

    /// Bytes counted for this session.
    pub fn get(&self) -> u64 {
        self.session.load(Relaxed)
    }

    fn add(&self, n: u64) {
        self.session.fetch_add(n, Relaxed);
        if let Some(total) = self.total {
            total.fetch_add(n, Relaxed);
        }
    }
}

/// Copies client->server and server->client concurrently until both reach EOF;
/// the first error (reset, idle timeout) ends both directions.
pub async fn pipe_tcp(
    client: TcpStream,
    upstream: TcpStream,
    idle: &Idle,
    up: &Counted<'_>,
    down: &Counted<'_>,
) -> std::io::Result<()> {
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = upstream.into_split();
    let finished = AtomicBool::new(false);
    tokio::try_join!(
        copy_half(client_read, server_write, idle, Side::Client, up, &finished),
        copy_half(server_read, client_write, idle, Side::Server, down, &finished),
    )?;
    Ok(())
}

/// [`pipe_tcp`] for any pair of byte streams (upgraded HTTP connections).
pub async fn pipe_io<A, B>(
    client: A,
    upstream: B,
    idle: &Idle,
    up: &Counted<'_>,
    down: &Counted<'_>,
) -> std::io::Result<()>
where
    A: AsyncRead + AsyncWrite + Send,
    B: AsyncRead + AsyncWrite + Send,
{
    let (client_read, client_write) = tokio::io::split(client);
    let (server_read, server_write) = tokio::io::split(upstream);
    // Always half-close explicitly here: whoever else holds these streams (hyper's
    // upgrade machinery) decides when they are really closed.
    let (never, never_either) = (AtomicBool::new(false), AtomicBool::new(false));
    tokio::try_join!(
        copy_half(client_read, server_write, idle, Side::Client, up, &never),
        copy_half(server_read, client_write, idle, Side::Server, down, &never_either),
    )?;
    Ok(())
}

/// Which peer a direction reads from (it decides the idle limit).
#[derive(Clone, Copy)]
enum Side {
    Client,
    Server,
}

/// Copies until EOF, then shuts down the writer (half-close) so the peer sees EOF
/// too — unless the other direction already finished (`other_finished`): then both
/// sockets are about to be closed, and closing a drained socket sends the FIN anyway,
/// one `shutdown` call fewer per session.
async fn copy_half(
    mut reader: impl AsyncRead + Unpin + ReadyExt,
    mut writer: impl AsyncWrite + Unpin,
    idle: &Idle,
    side: Side,
    counter: &Counted<'_>,
    other_finished: &AtomicBool,
) -> std::io::Result<()> {
    let mut timer = idle.timer(side);
    // Wait for data before allocating, so idle sessions cost no buffer memory.
    idle.wait_readable(&mut reader, side, &mut timer).await?;
    let mut buf = vec![0u8; COPY_BUFFER];
    loop {
        let n = idle.read(&mut reader, &mut buf, side, &mut timer).await?;
        if n == 0 {
            if !other_finished.swap(true, Relaxed) {
                writer.shutdown().await?;
            }
            return Ok(());
        }
        writer.write_all(&buf[..n]).await?;
        idle.touch();
        counter.add(n as u64);
    }
}

/// Waits until a read half has data (or EOF) without reading it.
pub trait ReadyExt {
    /// Resolves once a read would not block.
    fn ready_to_read(&self) -> impl std::future::Future<Output = std::io::Result<()>> + Send;
}

impl ReadyExt for tokio::net::tcp::OwnedReadHalf {
    async fn ready_to_read(&self) -> std::io::Result<()> {
        self.readable().await
    }
}

impl<T: AsyncRead + Send> ReadyExt for tokio::io::ReadHalf<T> {
    /// A generic stream cannot be polled for readiness without reading: report ready.
    fn ready_to_read(&self) -> impl std::future::Future<Output = std::io::Result<()>> + Send {
        std::future::ready(Ok(()))
    }
}

/// Inactivity tracking for a session: it idles out only when *neither* direction
/// moved a byte for the side's timeout (a one-way stream keeps the session alive).
#[derive(Debug)]
pub struct Idle {
    start: Instant,
    last_ms: AtomicU64,
    client: Duration,
    server: Duration,
    timed_out: std::sync::atomic::AtomicBool,
}

impl Idle {
    /// Idle limits for the client and server sides.
    pub fn new(client: Duration, server: Duration) -> Self {
        Self { start: Instant::now(), last_ms: AtomicU64::new(0), client, server, timed_out: Default::default() }
    }

    fn touch(&self) {
        self.last_ms.store(self.start.elapsed().as_millis() as u64, Relaxed);
    }

    /// True when the session ended because it idled out.
    pub fn timed_out(&self) -> bool {
        self.timed_out.load(Relaxed)
    }

    fn limit(&self, side: Side) -> Duration {
        match side {
            Side::Client => self.client,
            Side::Server => self.server,
        }
    }

    /// Time left before the session counts as idle for `side`, or None when it is idle.
    fn remaining(&self, side: Side) -> Option<Duration> {
        let last = Duration::from_millis(self.last_ms.load(Relaxed));
        let deadline = last + self.limit(side);
        deadline.checked_sub(self.start.elapsed()).filter(|d| !d.is_zero())
    }

    /// A timer for one direction: armed once at the side's limit and re-armed only
    /// when it fires, so a busy session does no timer work per read.
    fn timer(&self, side: Side) -> Pin<Box<Sleep>> {
        Box::pin(tokio::time::sleep(self.limit(side)))
    }

    /// Resolves when `timer` fired and the session really is idle for `side`.
    async fn expired(&self, timer: &mut Pin<Box<Sleep>>, side: Side) -> std::io::Error {
        loop {
            timer.as_mut().await;
            match self.remaining(side) {
                None => return self.expire(),
                Some(left) => timer.as_mut().reset(tokio::time::Instant::now() + left),
            }
        }
    }

    async fn wait_readable(
        &self,
        reader: &mut (impl ReadyExt + ?Sized),
        side: Side,
        timer: &mut Pin<Box<Sleep>>,
    ) -> std::io::Result<()> {
        tokio::select! {
            biased;
            ready = reader.ready_to_read() => ready,
            err = self.expired(timer, side) => Err(err),
        }
    }

    async fn read(
        &self,
        reader: &mut (impl AsyncRead + Unpin),
        buf: &mut [u8],
        side: Side,
        timer: &mut Pin<Box<Sleep>>,
    ) -> std::io::Result<usize> {
        tokio::select! {
            biased;
            read = reader.read(buf) => read,
            err = self.expired(timer, side) => Err(err),
        }
    }

    fn expire(&self) -> std::io::Error {
        self.timed_out.store(true, Relaxed);
        std::io::Error::new(std::io::ErrorKind::TimedOut, "session idle")
    }
}
