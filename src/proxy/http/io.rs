//! The client socket as hyper sees it: counts bytes for the frontend, follows the
//! request framing (see [`FramingWatch`]), applies the client-side time limits
//! (see [`ClientTimer`]), answers a request head that does not arrive in time with
//! a 408, and gives up on a client that stops reading for `timeouts.client`. It
//! also ends hyper's HTTP/1.1 connection when the client has been idle a while
//! (see [`ClientIo::park_when_idle`]), tells h2 from HTTP/1.x before hyper reads
//! a byte, and ACKs at once while a request is incomplete.
//!
//! A plain connection sits on [`AsyncFd`] rather than tokio's `TcpStream` to save a
//! syscall per request: after a read shorter than the buffer the socket is known
//! to be empty, so readiness is cleared at once instead of being discovered by one
//! more `recv` failing with `EAGAIN` (which hyper's keep-alive read otherwise costs
//! every request). A TLS connection reads and writes through rustls (tokio-rustls)
//! with the same limits; its 408 goes through rustls too.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::time::Instant;

use socket2::SockRef;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::client_state::{ClientHandle, Flags};
use super::client_timer::{ClientTimedOut, ClientTimer, Expired, Wait};
use super::framing::FramingWatch;
use super::reply::RAW_408;
use super::sendfile;
use super::stall::StallTimer;
use crate::cluster::Frontend;
use crate::tls::HandshakeInfo;

/// A client socket registered with the runtime serving it.
pub type ClientSocket = AsyncFd<std::net::TcpStream>;

/// Registers a client socket (non-blocking) with the current runtime.
pub fn register(stream: std::net::TcpStream) -> io::Result<ClientSocket> {
    // SAFETY: the AsyncFd owns the stream, so its descriptor stays open and the
    // same for the AsyncFd's whole life.
    unsafe { AsyncFd::register(stream) }.map_err(io::Error::from)
}

/// A TLS client connection once its handshake is done.
pub type TlsClient = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;

/// A TLS client connection and what its handshake settled.
#[derive(Debug)]
pub struct TlsConnection {
    /// The stream (rustls over the socket).
    pub stream: TlsClient,
    /// What the requests need of the handshake.
    pub info: HandshakeInfo,
}

/// What the client's bytes travel over.
#[derive(Debug)]
pub enum Transport {
    /// Plain TCP, read and written with one syscall each.
    Plain(ClientSocket),
    /// TLS (boxed: rustls's state is large, and plain connections are the common case).
    Tls(Box<TlsConnection>),
}

impl Transport {
    /// The TCP socket underneath.
    fn socket(&self) -> SockRef<'_> {
        match self {
            Transport::Plain(socket) => SockRef::from(socket.get_ref()),
            Transport::Tls(tls) => SockRef::from(tls.stream.get_ref().0),
        }
    }

    /// Ready when the socket has bytes (or an end) to read. For TLS only valid
    /// when rustls holds nothing decrypted: after the handshake, or a park.
    pub fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Transport::Plain(socket) => socket.poll_read_ready(cx).map_ok(drop),
            Transport::Tls(tls) => tls.stream.get_ref().0.poll_read_ready(cx),
        }
    }

    /// The handshake's outcome, on a TLS connection.
    pub fn tls_info(&self) -> Option<HandshakeInfo> {
        match self {
            Transport::Plain(_) => None,
            Transport::Tls(tls) => Some(tls.info.clone()),
        }
    }
}

/// A client connection as hyper reads and writes it.
#[derive(Debug)]
pub struct ClientIo {
    stream: Transport,
    frontend: Arc<Frontend>,
    peer: SocketAddr,
    flags: Arc<Flags>,
    framing: FramingWatch,
    timer: ClientTimer,
    /// The limit on a client that stops reading what we write.
    write_stall: StallTimer,
    /// The handler was asked to close the idle (h2c) connection politely; if it
    /// is still idle one more `timeouts.client` later, it is cut.
    polite_close_asked: bool,
    /// A read returned end-of-stream because the connection went idle, not
    /// because the client closed: the socket stays open.
    parked: bool,
    /// The client sent part of the h2 preface, still unread: a request has started.
    preface_started: bool,
    /// A file range being sent with `sendfile` on the blocking pool (see `sendfile`).
    file_send: Option<tokio::task::JoinHandle<io::Result<usize>>>,
}

impl ClientIo {
    /// Wraps the socket of a connection from `peer`, with the handle its service
    /// keeps. Its time limits are the frontend's `request_header` (the first head
    /// is due at `head_due`) and `client` timeouts.
    pub fn new(
        stream: Transport,
        frontend: Arc<Frontend>,
        peer: SocketAddr,
        head_due: Instant,
    ) -> (ClientIo, ClientHandle) {
        let flags = Arc::new(Flags::new());
        let handle = ClientHandle { flags: Arc::clone(&flags) };
        let timer = ClientTimer::new(head_due, frontend.timeouts.request_header, frontend.timeouts.client);
        let write_stall = StallTimer::new(frontend.timeouts.client);
        let io = ClientIo {
            stream,
            frontend,
            peer,
            flags,
            framing: FramingWatch::default(),
            timer,
            write_stall,
            polite_close_asked: false,
            parked: false,
            preface_started: false,
            file_send: None,
        };
        (io, handle)
    }

    /// HTTP/1.1 only: once no request is open and hyper has waited `after` for the
    /// next head with nothing read of it, a read ends the stream (without shutting
    /// the socket down), so hyper's connection ends and its buffers are freed: an
    /// idle keep-alive connection holds no buffer, as in HAProxy and nginx.
    pub fn park_when_idle(&mut self, after: Duration) {
        self.timer.park_after(Some(after));
    }

    /// The socket, and when its idle limit runs out, if hyper's connection ended
    /// because the client went idle (see [`ClientIo::park_when_idle`]).
    pub fn into_parked(self) -> Option<(Transport, Instant)> {
        self.parked.then(|| (self.stream, self.timer.idle_until()))
    }

    /// Waits for the client's first bytes and tells whether they open HTTP/2 with
    /// prior knowledge (the h2 preface) or not (HTTP/1.x); `None` when the client
    /// closed without sending any. Reads nothing: the bytes stay in the socket.
    /// Plain connections only (over TLS, ALPN tells).
    pub async fn sniff_h2(&mut self) -> io::Result<Option<bool>> {
        const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
        std::future::poll_fn(|cx| loop {
            let Transport::Plain(stream) = &self.stream else { return Poll::Ready(Ok(Some(false))) };
            let mut ready = match stream.poll_read_ready(cx) {
                Poll::Ready(ready) => ready?,
                Poll::Pending => {
                    let (wait, epoch) = self.blocked(cx);
                    return self.poll_timer(cx, wait, epoch).map_ok(|()| None);
                }
            };
            let mut seen = [std::mem::MaybeUninit::<u8>::uninit(); PREFACE.len()];
            match ready.try_io(|fd| SockRef::from(fd.get_ref()).peek(&mut seen)) {
                Ok(Ok(0)) => return Poll::Ready(Ok(None)),
                Ok(Ok(n)) => {
                    // SAFETY: `peek` initialized the first `n` bytes.
                    let seen: &[u8] = unsafe { std::slice::from_raw_parts(seen.as_ptr().cast(), n) };
                    if seen != &PREFACE[..n] {
                        return Poll::Ready(Ok(Some(false)));
                    }
                    if n == PREFACE.len() {
                        return Poll::Ready(Ok(Some(true)));
                    }
                    // A prefix of the preface: wait for the rest, on the head's clock.
                    self.preface_started = true;
                    ready.clear_ready();
                }
                Ok(Err(err)) => return Poll::Ready(Err(err)),
                Err(_would_block) => continue,
            }
        })
        .await
    }

    /// Accounts for `data`, just read from the client.
    fn on_received(&mut self, data: &[u8]) {
        Self::count(&self.frontend.stats.received_bytes, data.len());
        if let Some(index) = self.framing.feed(data) {
            self.flags.ambiguous_head.store(index, Relaxed);
        }
    }

    /// The socket is drained in the middle of a request (head or body): ACK now. A
    /// client that writes head and body apart with Nagle on sends the body only
    /// once the head is ACKed, and Linux would delay that ACK (40 ms) as we have
    /// nothing to send back yet. Between requests nothing is owed: the response
    /// carries the ACK.
    fn ack_if_incomplete(&self) {
        if self.framing.is_off() || self.framing.between_requests() || self.flags.upgraded.load(Relaxed) {
            return;
        }
        if let Err(err) = self.stream.socket().set_quickack(true) {
            tracing::trace!(%err, "cannot set TCP_QUICKACK");
        }
    }

    /// Accounts for `n` bytes written to the client.
    fn on_sent(&mut self, n: usize) {
        self.write_stall.moved();
        Self::count(&self.frontend.stats.sent_bytes, n);
    }

    fn count(counter: &AtomicU64, n: usize) {
        if n > 0 {
            counter.fetch_add(n as u64, Relaxed);
        }
    }

    /// A read would block: what it waits for, and since when (see [`ClientIo::wait`]).
    fn blocked(&mut self, cx: &mut Context<'_>) -> (Wait, u64) {
        if self.framing.is_off() {
            // An h2 stream ends in its own task: be woken then, to start the idle
            // limit. Registered before the open requests are counted, so an end in
            // between is not missed.
            self.flags.idle_waker.register(cx.waker());
        }
        self.wait()
    }

    /// What a read that would block is waiting for, and since when (see
    /// [`ClientTimer::poll_expired`]).
    fn wait(&mut self) -> (Wait, u64) {
        let flags = &self.flags;
        if flags.upgraded.load(Relaxed) {
            return (Wait::Unlimited, 0);
        }
        let requests = flags.requests_started.load(Relaxed);
        let framing = &mut self.framing;
        // A request is being answered, or its head was read and hyper has yet to
        // hand it to the service.
        let busy = flags.open_requests.load(Relaxed) > 0 || framing.heads() > requests;
        if framing.awaits_upgrade() && !busy {
            framing.upgrade_refused();
            // hyper keeps the refused upgrade pending until its connection ends,
            // then hands the socket to it: this one must never end while idle.
            self.timer.park_after(None);
        }
        if framing.is_off() {
            // h2c, or HTTP/1.1 the watch cannot follow: idle once no request is
            // open, counted from the end of the last one (pings or trickled bytes
            // do not extend it).
            return (if busy { Wait::Unlimited } else { Wait::Idle }, requests);
        }
        let in_body = !framing.in_head() && !framing.between_requests();
        let wait = if framing.awaits_upgrade() || in_body || busy {
            // A request body has its own limit while it is forwarded; a pipelined
            // head behind a response still on its way waits for it.
            Wait::Unlimited
        } else if framing.in_head() || (framing.heads() == 0 && self.preface_started) {
            Wait::Head
        } else if framing.heads() == 0 {
            Wait::FirstRequest
        } else {
            Wait::Idle
        };
        (wait, framing.heads())
    }

    /// A read would block: whether the client has run out of time waiting for
    /// `wait` (from [`ClientIo::wait`]).
    fn poll_timer(&mut self, cx: &mut Context<'_>, wait: Wait, epoch: u64) -> Poll<io::Result<()>> {
        let mut expired = match ready!(self.timer.poll_expired(cx, wait, epoch)) {
            Expired::Limit(wait) => wait,
            Expired::Park if self.timer.parks() && !self.parked && !self.framing.is_off() => {
                // Idle between requests with nothing of the next read: end hyper's
                // connection here (see `park_when_idle`).
                self.parked = true;
                return Poll::Ready(Ok(()));
            }
            // Not to be set aside after all (a refused upgrade came meanwhile):
            // the idle limit goes on.
            Expired::Park => match ready!(self.timer.poll_expired(cx, wait, epoch)) {
                Expired::Limit(wait) => wait,
                Expired::Park => return Poll::Pending,
            },
        };
        if expired == Wait::Idle && self.framing.is_off() && !self.polite_close_asked {
            // h2c: a GOAWAY tells the client no stream was lost, so it may retry
            // one that raced with the close. The handler sends it; keep reading,
            // and cut the connection if it is still open one more limit later.
            self.polite_close_asked = true;
            self.frontend.stats.client_timeouts.idle.fetch_add(1, Relaxed);
            self.flags.idle_expired.store(true, Relaxed);
            self.flags.handler_waker.wake();
            self.timer.restart_idle();
            expired = match ready!(self.timer.poll_expired(cx, wait, epoch)) {
                Expired::Limit(wait) => wait,
                Expired::Park => return Poll::Pending,
            };
        }
        if expired == Wait::Head {
            // Answered here, before hyper closes the socket: a head is waited for
            // only when no response is on its way, so this cannot cut into one.
            if self.send_408(cx) {
                self.frontend.stats.count_response(408);
                tracing::info!(frontend = %self.frontend.name, client = %self.peer, status = 408, "request head not received in time");
            }
        }
        Poll::Ready(Err(self.timed_out(expired)))
    }

    /// Sends a 408 as the connection's last words, without waiting; true when it
    /// went out whole.
    fn send_408(&mut self, cx: &mut Context<'_>) -> bool {
        match &mut self.stream {
            Transport::Plain(stream) => {
                let socket = SockRef::from(stream.get_ref());
                let sent = matches!(socket.send(RAW_408), Ok(n) if n == RAW_408.len());
                // Unread bytes (a started h2 preface is only peeked) would make the
                // close a reset, which can destroy the 408 before the client reads it.
                let mut sink = [std::mem::MaybeUninit::<u8>::uninit(); 512];
                for _ in 0..64 {
                    if !matches!(socket.recv(&mut sink), Ok(n) if n > 0) {
                        break;
                    }
                }
                sent
            }
            Transport::Tls(tls) => {
                // Into rustls's buffer, then as much of it as the socket takes now.
                let written = Pin::new(&mut tls.stream).poll_write(cx, RAW_408);
                let flushed = Pin::new(&mut tls.stream).poll_flush(cx);
                matches!(written, Poll::Ready(Ok(n)) if n == RAW_408.len()) && matches!(flushed, Poll::Ready(Ok(())))
            }
        }
    }

    /// A write would block: whether the client has stopped reading for
    /// `timeouts.client` (an upgraded connection leaves that to the tunnel).
    fn poll_write_stall(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.flags.upgraded.load(Relaxed) {
            return Poll::Pending;
        }
        if !self.write_stall.stalled(cx) {
            return Poll::Pending;
        }
        Poll::Ready(Err(self.timed_out(Wait::Send)))
    }

    /// The client ran out of time waiting for `wait`: counted, and the error that
    /// makes hyper give up on the connection.
    fn timed_out(&self, wait: Wait) -> io::Error {
        let counters = &self.frontend.stats.client_timeouts;
        let counter = match wait {
            Wait::FirstRequest => Some(&counters.first_request),
            Wait::Head => Some(&counters.head),
            // Counted when the polite close was asked for.
            Wait::Idle if self.polite_close_asked => None,
            Wait::Idle => Some(&counters.idle),
            Wait::Send => Some(&counters.send),
            Wait::Body | Wait::Unlimited => None,
        };
        if let Some(counter) = counter {
            counter.fetch_add(1, Relaxed);
        }
        io::Error::new(io::ErrorKind::TimedOut, ClientTimedOut(wait))
    }
}

impl AsyncRead for ClientIo {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let stream = match &mut this.stream {
            Transport::Plain(stream) => stream,
            Transport::Tls(tls) => {
                let before = buf.filled().len();
                return match Pin::new(&mut tls.stream).poll_read(cx, buf) {
                    Poll::Ready(Ok(())) => {
                        if buf.filled().len() > before {
                            this.on_received(&buf.filled()[before..]);
                            this.ack_if_incomplete();
                        }
                        Poll::Ready(Ok(()))
                    }
                    Poll::Ready(Err(err)) => Poll::Ready(Err(err)),
                    Poll::Pending => {
                        let (wait, epoch) = this.blocked(cx);
                        this.poll_timer(cx, wait, epoch)
                    }
                };
            }
        };
        loop {
            let mut ready = match stream.poll_read_ready(cx) {
                Poll::Ready(ready) => ready?,
                Poll::Pending => {
                    let (wait, epoch) = this.blocked(cx);
                    return this.poll_timer(cx, wait, epoch);
                }
            };
            // Read straight into the uninitialized part of hyper's buffer (zeroing
            // it first cost ~3% of CPU per request).
            // SAFETY: `recv` only writes into the slice, and exactly the `n` bytes it
            // reports are marked initialized below.
            let unfilled = unsafe { buf.unfilled_mut() };
            let wanted = unfilled.len();
            match ready.try_io(|fd| SockRef::from(fd.get_ref()).recv(unfilled)) {
                Ok(Ok(n)) => {
                    unsafe { buf.assume_init(n) };
                    buf.advance(n);
                    if n > 0 {
                        let drained = n < wanted;
                        if drained {
                            // Drained; tokio only forgets readiness it saw before now.
                            ready.clear_ready();
                        }
                        let start = buf.filled().len() - n;
                        this.on_received(&buf.filled()[start..]);
                        if drained {
                            this.ack_if_incomplete();
                        }
                    }
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(err)) => return Poll::Ready(Err(err)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for ClientIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(at) = sendfile::placeholder_offset(data) {
            return this.poll_write_file(cx, &[io::IoSlice::new(data)], 0, at);
        }
        let stream = match &mut this.stream {
            Transport::Plain(stream) => stream,
            Transport::Tls(tls) => {
                let written = Pin::new(&mut tls.stream).poll_write(cx, data);
                return this.on_write(cx, written);
            }
        };
        loop {
            let mut ready = match stream.poll_write_ready(cx) {
                Poll::Ready(ready) => ready?,
                Poll::Pending => return this.poll_write_stall(cx),
            };
            match ready.try_io(|fd| SockRef::from(fd.get_ref()).send(data)) {
                Ok(Ok(n)) => {
                    this.on_sent(n);
                    return Poll::Ready(Ok(n));
                }
                Ok(Err(err)) => return Poll::Ready(Err(err)),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some((index, at)) = sendfile::first_placeholder(bufs) {
            return this.poll_write_file(cx, bufs, index, at);
        }
        let stream = match &mut this.stream {
            Transport::Plain(stream) => stream,
            Transport::Tls(tls) => {
                let written = Pin::new(&mut tls.stream).poll_write_vectored(cx, bufs);
                return this.on_write(cx, written);
            }
        };
        loop {
            let mut ready = match stream.poll_write_ready(cx) {
                Poll::Ready(ready) => ready?,
                Poll::Pending => return this.poll_write_stall(cx),
            };
            match ready.try_io(|fd| io::Write::write_vectored(&mut fd.get_ref(), bufs)) {
                Ok(Ok(n)) => {
                    this.on_sent(n);
                    return Poll::Ready(Ok(n));
                }
                Ok(Err(err)) => return Poll::Ready(Err(err)),
                Err(_would_block) => continue,
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match &mut this.stream {
            Transport::Plain(_) => Poll::Ready(Ok(())),
            // rustls holds what it could not write yet.
            Transport::Tls(tls) => match Pin::new(&mut tls.stream).poll_flush(cx) {
                Poll::Pending => this.poll_write_stall(cx).map_ok(drop),
                done => done,
            },
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.parked {
            // hyper ends its connection at a parked read; the client's stays open.
            return Poll::Ready(Ok(()));
        }
        match &mut this.stream {
            Transport::Plain(stream) => {
                Poll::Ready(SockRef::from(stream.get_ref()).shutdown(std::net::Shutdown::Write))
            }
            // close_notify, then the write side.
            Transport::Tls(tls) => Pin::new(&mut tls.stream).poll_shutdown(cx),
        }
    }
}

impl ClientIo {
    /// Writes `bufs`, the one at `index` a file placeholder starting `at` in its
    /// region (see `sendfile`): what comes before it as usual (flagged MSG_MORE,
    /// so the file's first bytes share its segment), then, once it comes first,
    /// the file range it stands for, by `sendfile` on the blocking pool.
    fn poll_write_file(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
        index: usize,
        at: usize,
    ) -> Poll<io::Result<usize>> {
        let Transport::Plain(stream) = &self.stream else {
            // Never queued for TLS; should it happen, no placeholder byte goes out.
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, "a file placeholder over TLS")));
        };
        if index > 0 {
            loop {
                let mut ready = match stream.poll_write_ready(cx) {
                    Poll::Ready(ready) => ready?,
                    Poll::Pending => return self.poll_write_stall(cx),
                };
                let head = &bufs[..index];
                match ready.try_io(|fd| SockRef::from(fd.get_ref()).send_vectored_with_flags(head, libc::MSG_MORE)) {
                    Ok(Ok(n)) => {
                        self.on_sent(n);
                        return Poll::Ready(Ok(n));
                    }
                    Ok(Err(err)) => return Poll::Ready(Err(err)),
                    Err(_would_block) => continue,
                }
            }
        }
        loop {
            if let Some(sending) = self.file_send.as_mut() {
                let done = ready!(Pin::new(sending).poll(cx));
                self.file_send = None;
                match done {
                    Ok(Ok(n)) => {
                        self.flags.sendfile.advance(n);
                        self.frontend.stats.sendfile_bytes.fetch_add(n as u64, Relaxed);
                        self.on_sent(n);
                        return Poll::Ready(Ok(n));
                    }
                    // The socket is full: wait until the client makes room.
                    Ok(Err(err)) if err.kind() == io::ErrorKind::WouldBlock => {
                        if let Poll::Ready(ready) = stream.poll_write_ready(cx) {
                            ready?.clear_ready();
                        }
                    }
                    Ok(Err(err)) => return Poll::Ready(Err(err)),
                    Err(join) => return Poll::Ready(Err(io::Error::other(join))),
                }
            }
            match stream.poll_write_ready(cx) {
                Poll::Ready(ready) => drop(ready?),
                Poll::Pending => return self.poll_write_stall(cx),
            }
            let transfer = self.flags.sendfile.transfer(at, bufs[0].len())?;
            // The task's own descriptor: the connection may be dropped meanwhile,
            // and its number reused, while the call still runs.
            let socket = stream.get_ref().try_clone()?;
            self.file_send = Some(tokio::task::spawn_blocking(move || transfer.run(&socket)));
        }
    }

    /// Accounts for a TLS write: bytes sent, or the client's time to make room.
    fn on_write(&mut self, cx: &mut Context<'_>, written: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
        match written {
            Poll::Ready(Ok(n)) => {
                self.on_sent(n);
                Poll::Ready(Ok(n))
            }
            Poll::Pending => self.poll_write_stall(cx),
            failed => failed,
        }
    }
}
