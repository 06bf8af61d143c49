//! A file's bytes streamed as a response body, read on the blocking pool one
//! chunk ahead of the client.

use std::fs::File;
use std::future::Future;
use std::io;
use std::os::unix::fs::FileExt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::task::JoinHandle;

use crate::proxy::http::body::BodyError;
use crate::proxy::http::client_state::ClientHandle;
use crate::proxy::http::sendfile::{placeholder, MARK_LEN};

/// Bytes per frame: large enough that the blocking pool round trip is cheap per
/// byte, small enough that a slow client holds little (two chunks at most, 512
/// KiB). 128 KiB gave a 64 MiB download 0.46-0.93x nginx's sendfile MB/s; 256 KiB
/// 1.07-1.45x (loadtest static row, 2026-12-07): the round trips, not the copies,
/// were the cost.
pub(super) const CHUNK: u64 = 256 * 1024;

/// A byte range of an open file, sent chunk by chunk. While hyper writes one
/// chunk the next is being read, so disk and socket work overlap.
#[derive(Debug)]
pub struct FileBody {
    file: Arc<File>,
    /// Offset of the next chunk to ask for.
    next: u64,
    /// Bytes not yet asked of the blocking pool.
    unread: u64,
    /// Bytes not yet handed to hyper.
    unsent: u64,
    reading: Option<JoinHandle<io::Result<Bytes>>>,
    /// The connection whose socket sends the file itself (`sendfile`): frames
    /// are placeholders, no byte is read here.
    direct: Option<ClientHandle>,
}

impl FileBody {
    /// `len` bytes of `file` from `offset`.
    pub(super) fn new(file: File, offset: u64, len: u64) -> FileBody {
        FileBody { file: Arc::new(file), next: offset, unread: len, unsent: len, reading: None, direct: None }
    }

    /// Lets `client`'s socket send the bytes with `sendfile` (plain HTTP/1.1,
    /// nothing reading the body on its way): from now on each frame is a
    /// placeholder for the next range, announced to the socket first. Only
    /// before the first frame.
    pub fn send_directly(&mut self, client: ClientHandle) {
        if self.reading.is_none() && self.unread == self.unsent {
            self.direct = Some(client);
        }
    }

    /// The next range as a placeholder frame (see `send_directly`).
    fn next_placeholder(&mut self) -> Option<Frame<Bytes>> {
        let client = self.direct.as_ref()?;
        if self.unread == 0 {
            return None;
        }
        // Bounded by MARK_LEN, so it fits a usize.
        let len = self.unread.min(MARK_LEN as u64) as usize;
        client.queue_file(Arc::clone(&self.file), self.next, len);
        self.next += len as u64;
        self.unread -= len as u64;
        self.unsent -= len as u64;
        Some(Frame::data(placeholder(len)))
    }

    fn start_read(&mut self) {
        // Bounded by CHUNK, so it fits a usize.
        let len = self.unread.min(CHUNK) as usize;
        let (file, offset) = (Arc::clone(&self.file), self.next);
        self.next += len as u64;
        self.unread -= len as u64;
        self.reading = Some(tokio::task::spawn_blocking(move || read_exact_at(&file, offset, len)));
    }

    /// After an error: the stream is over.
    fn stop(&mut self) {
        self.unread = 0;
        self.unsent = 0;
        self.reading = None;
    }
}

impl Body for FileBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        if this.direct.is_some() {
            return Poll::Ready(this.next_placeholder().map(Ok));
        }
        if this.reading.is_none() {
            if this.unread == 0 {
                return Poll::Ready(None);
            }
            this.start_read();
        }
        let Some(reading) = this.reading.as_mut() else { return Poll::Ready(None) };
        let read = ready!(Pin::new(reading).poll(cx));
        this.reading = None;
        match read {
            Ok(Ok(chunk)) => {
                this.unsent -= chunk.len() as u64;
                if this.unread > 0 {
                    this.start_read();
                }
                Poll::Ready(Some(Ok(Frame::data(chunk))))
            }
            Ok(Err(err)) => {
                this.stop();
                Poll::Ready(Some(Err(Box::new(err))))
            }
            Err(join) => {
                this.stop();
                Poll::Ready(Some(Err(Box::new(join))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.unsent == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.unsent)
    }
}

/// Reads exactly `len` bytes at `offset` (blocking). A file that shrank since its
/// length was sent is an error: the response promised those bytes.
pub(super) fn read_exact_at(file: &File, offset: u64, len: usize) -> io::Result<Bytes> {
    let mut buf = vec![0; len];
    let mut filled = 0;
    while filled < len {
        match file.read_at(&mut buf[filled..], offset + filled as u64) {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the file shrank while being sent")),
            Ok(n) => filled += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(Bytes::from(buf))
}
