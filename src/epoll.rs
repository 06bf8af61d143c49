//! A small epoll set of our own, for descriptors watched outside tokio's driver:
//! the idle client connections of a worker (see `proxy::http::park`). The set's
//! own descriptor is registered with tokio, which wakes whoever waits on it when
//! any watched descriptor is ready.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// How many ready descriptors one [`Epoll::ready`] takes at most.
pub const BATCH: usize = 64;

/// An epoll set reporting readability, level-triggered.
#[derive(Debug)]
pub struct Epoll {
    fd: OwnedFd,
}

impl Epoll {
    /// A new, empty set.
    pub fn new() -> io::Result<Self> {
        // SAFETY: no pointer is passed; the result is checked before use.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and is owned by nothing else.
        Ok(Epoll { fd: unsafe { OwnedFd::from_raw_fd(fd) } })
    }

    /// Watches `fd` until [`Epoll::unwatch`] or its close: it is reported with
    /// `token` while it has bytes to read, an end of stream or an error.
    pub fn watch(&self, fd: BorrowedFd<'_>, token: u64) -> io::Result<()> {
        let mut event = libc::epoll_event { events: (libc::EPOLLIN | libc::EPOLLRDHUP) as u32, u64: token };
        // SAFETY: both descriptors are open for the call; `event` outlives it.
        check(unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), libc::EPOLL_CTL_ADD, fd.as_raw_fd(), &mut event) })
    }

    /// Stops watching `fd`.
    pub fn unwatch(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        // SAFETY: both descriptors are open for the call; DEL takes no event.
        check(unsafe {
            libc::epoll_ctl(self.fd.as_raw_fd(), libc::EPOLL_CTL_DEL, fd.as_raw_fd(), std::ptr::null_mut())
        })
    }

    /// Appends the tokens of up to [`BATCH`] ready descriptors to `tokens`,
    /// without waiting. True when the batch was full: more may be ready.
    pub fn ready(&self, tokens: &mut Vec<u64>) -> io::Result<bool> {
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; BATCH];
        // SAFETY: `events` has room for BATCH entries; a zero timeout never blocks.
        let count = unsafe { libc::epoll_wait(self.fd.as_raw_fd(), events.as_mut_ptr(), BATCH as i32, 0) };
        if count < 0 {
            let err = io::Error::last_os_error();
            return if err.kind() == io::ErrorKind::Interrupted { Ok(true) } else { Err(err) };
        }
        let count = count as usize;
        // A copy of the (packed) field, never a reference into it.
        tokens.extend(events[..count].iter().map(|event| event.u64));
        Ok(count == BATCH)
    }
}

impl AsRawFd for Epoll {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl AsFd for Epoll {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

fn check(result: libc::c_int) -> io::Result<()> {
    if result < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_watched_socket_is_reported_while_readable_and_not_after_unwatch() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let epoll = Epoll::new().unwrap();
        epoll.watch(server.as_fd(), 7).unwrap();
        let mut tokens = Vec::new();
        assert!(!epoll.ready(&mut tokens).unwrap());
        assert!(tokens.is_empty(), "nothing sent yet");
        client.write_all(b"x").unwrap();
        // Loopback queues the byte on the receiving socket before write returns.
        epoll.ready(&mut tokens).unwrap();
        assert_eq!(tokens, [7]);
        tokens.clear();
        epoll.ready(&mut tokens).unwrap();
        assert_eq!(tokens, [7], "level-triggered: still readable");
        epoll.unwatch(server.as_fd()).unwrap();
        tokens.clear();
        epoll.ready(&mut tokens).unwrap();
        assert!(tokens.is_empty());
    }
}
