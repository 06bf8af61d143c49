//! File bytes that go from the page cache to a plain HTTP/1.1 client with
//! `sendfile(2)`, never through user space, while hyper still frames the
//! response.
//!
//! hyper writes a response body from the `Bytes` its frames carry. A file sent
//! this way is handed to hyper as placeholders instead: slices of [`MARK`], a
//! static region nothing ever reads, each announced beforehand in the
//! connection's [`Pending`] queue with the file range it stands for. hyper
//! queues the placeholders like any body chunk (it writes vectored, never
//! copying a chunk: see `ClientIo::is_write_vectored`) and counts them against
//! Content-Length; the socket wrapper recognises a placeholder by its address
//! and sends the queued range with `sendfile` instead. A placeholder that does
//! not match the queue's front is an error that ends the connection: a client
//! never receives a byte that is not the file's.
//!
//! The `sendfile` call runs on the blocking pool, as the reads of the other
//! path do: a range not in the page cache waits for the disk there, not on a
//! worker. The socket is non-blocking, so the call never waits for the client;
//! it sends what the socket takes and reports it.
//!
//! Only where nothing else touches the body: plain HTTP/1.1, no compression (see
//! `ResponseBody::send_files_directly`). TLS and h2 copy the bytes anyway, so
//! they read the file in chunks (`static_files::FileBody`).

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, IoSlice};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

/// Largest placeholder, and so the most one frame (and one `sendfile` call)
/// stands for; each call sends what the socket takes of it. With 256 KiB the
/// blocking-pool round trips held a 64 MiB download to 0.58x nginx's MB/s, with
/// 4 MiB 1.05x (loadtest static row, 2026-12-07).
pub const MARK_LEN: usize = 4 << 20;

/// The placeholders' region: zeros that are never read or written (a static
/// zero array costs address space, no memory).
static MARK: [u8; MARK_LEN] = [0; MARK_LEN];

/// A placeholder for `len` (at most [`MARK_LEN`]) bytes of a queued range.
pub fn placeholder(len: usize) -> Bytes {
    Bytes::from_static(&MARK[..len])
}

/// Where `slice` starts within the placeholder region, if it is a placeholder.
pub fn placeholder_offset(slice: &[u8]) -> Option<usize> {
    let start = MARK.as_ptr() as usize;
    let at = slice.as_ptr() as usize;
    (!slice.is_empty() && at >= start && at < start + MARK_LEN).then(|| at - start)
}

/// Part of a file a placeholder stands for.
#[derive(Debug)]
struct FileRange {
    file: Arc<File>,
    offset: u64,
    len: usize,
    /// Bytes of it sent so far.
    done: usize,
}

/// The file ranges a connection's placeholders stand for, in the order hyper
/// takes them from the body (which is the order it writes them).
#[derive(Debug, Default)]
pub struct Pending(Mutex<VecDeque<FileRange>>);

/// One `sendfile` to make: the range's file and where, and how much at most.
#[derive(Debug)]
pub struct Transfer {
    file: Arc<File>,
    offset: u64,
    len: usize,
}

impl Pending {
    /// Announces that the next placeholder hyper takes stands for `len` bytes of
    /// `file` from `offset`.
    pub fn push(&self, file: Arc<File>, offset: u64, len: usize) {
        self.lock().push_back(FileRange { file, offset, len, done: 0 });
    }

    /// The transfer for a placeholder starting `at` in the region and `len` long,
    /// checked against the front range: it must continue exactly where that
    /// range stands.
    pub fn transfer(&self, at: usize, len: usize) -> io::Result<Transfer> {
        let queue = self.lock();
        let Some(range) = queue.front() else {
            return Err(mismatch("a file placeholder without a queued file range"));
        };
        if at != range.done || len != range.len - range.done {
            return Err(mismatch("a file placeholder out of step with its queued file range"));
        }
        Ok(Transfer { file: Arc::clone(&range.file), offset: range.offset + range.done as u64, len })
    }

    /// `n` bytes of the front range went out.
    pub fn advance(&self, n: usize) {
        let mut queue = self.lock();
        if let Some(range) = queue.front_mut() {
            range.done += n;
            if range.done >= range.len {
                queue.pop_front();
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<FileRange>> {
        // Nothing panics while holding it; a poisoned queue is still consistent.
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn mismatch(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

impl Transfer {
    /// Sends what the non-blocking `socket` takes of the range now (blocking only
    /// on the file): bytes sent, or `WouldBlock` when the socket is full. A file
    /// that ended early is an error: the response promised those bytes.
    pub fn run(&self, socket: &std::net::TcpStream) -> io::Result<usize> {
        let mut offset = libc::off_t::try_from(self.offset).map_err(io::Error::other)?;
        loop {
            // SAFETY: both descriptors are open for the call (the caller holds the
            // socket, `self` the file), and `offset` is a valid out-parameter.
            let sent = unsafe { libc::sendfile(socket.as_raw_fd(), self.file.as_raw_fd(), &mut offset, self.len) };
            match sent {
                0 => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the file shrank while being sent")),
                n if n > 0 => return Ok(n as usize),
                _ => {
                    let err = io::Error::last_os_error();
                    if err.kind() != io::ErrorKind::Interrupted {
                        return Err(err);
                    }
                }
            }
        }
    }
}

/// Where the first placeholder is among `bufs`, and where it starts in the region.
pub fn first_placeholder(bufs: &[IoSlice<'_>]) -> Option<(usize, usize)> {
    bufs.iter().enumerate().find_map(|(i, buf)| placeholder_offset(buf).map(|at| (i, at)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn placeholders_are_recognised_by_address_and_nothing_else_is() {
        let mark = placeholder(1000);
        assert_eq!(placeholder_offset(&mark), Some(0));
        assert_eq!(placeholder_offset(&mark[10..]), Some(10));
        let zeros = vec![0u8; 1000];
        assert_eq!(placeholder_offset(&zeros), None, "equal bytes elsewhere are not a placeholder");
        assert_eq!(placeholder_offset(&mark[..0]), None);
        let bufs = [IoSlice::new(b"head"), IoSlice::new(&mark[5..])];
        assert_eq!(first_placeholder(&bufs), Some((1, 5)));
    }

    #[test]
    fn the_queue_follows_hyper_through_partial_writes_and_refuses_a_skip() {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(b"0123456789").unwrap();
        let (file, pending) = (Arc::new(file), Pending::default());
        pending.push(Arc::clone(&file), 2, 6);
        pending.push(Arc::clone(&file), 0, 2);
        let first = pending.transfer(0, 6).unwrap();
        assert_eq!((first.offset, first.len), (2, 6));
        pending.advance(4);
        assert!(pending.transfer(0, 6).is_err(), "hyper would be ahead of the file");
        let rest = pending.transfer(4, 2).unwrap();
        assert_eq!((rest.offset, rest.len), (6, 2));
        pending.advance(2);
        let second = pending.transfer(0, 2).unwrap();
        assert_eq!((second.offset, second.len), (0, 2));
        pending.advance(2);
        assert!(pending.transfer(0, 1).is_err(), "nothing queued");
    }

    #[test]
    fn a_transfer_sends_its_range_of_the_file() {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(b"0123456789").unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let sender = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut receiver, _) = listener.accept().unwrap();
        let pending = Pending::default();
        pending.push(Arc::new(file), 3, 5);
        let sent = pending.transfer(0, 5).unwrap().run(&sender).unwrap();
        assert_eq!(sent, 5);
        drop(sender);
        let mut got = String::new();
        receiver.read_to_string(&mut got).unwrap();
        assert_eq!(got, "34567");
    }
}
