//! Small files a site served lately, kept in memory: a request for one is
//! answered on the worker at once, without the round trip to the blocking pool
//! that a lookup costs (that hop, not the file system, was most of the time of a
//! small file; nginx does its file I/O in its event loop instead).
//!
//! An entry is trusted for [`RECHECK`] after the lookup that made it; the next
//! request after that looks the file up again (on the blocking pool, with every
//! check of a first lookup: root, symlinks, siblings) and refreshes the entry. So
//! a file changed, replaced or removed on disk is served as it is now within
//! [`RECHECK`], like nginx with `open_file_cache_valid 1s`. Only found files up to
//! [`super::SMALL_FILE`] are kept (never a 404: random paths cannot fill it), at
//! most [`MAX_BYTES`] per site; beyond that new files wait for room (a reload
//! empties it, the site being compiled anew).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::encoding::Accepts;
use super::lookup::Rep;
use super::path::RelPath;

/// How long an entry is served without looking at the file again.
pub(super) const RECHECK: Duration = Duration::from_secs(1);
/// Bytes of file content a site keeps at most.
pub(super) const MAX_BYTES: usize = 16 << 20;

/// What a request's answer depends on, beyond its conditions and range: the
/// path, and which precompressed sibling may be chosen. Owns the request's path,
/// so a hit costs no copy of it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct HotKey {
    pub rel: RelPath,
    accepts: Accepts,
}

impl HotKey {
    pub fn new(rel: RelPath, accepts: Accepts) -> HotKey {
        HotKey { rel, accepts }
    }
}

/// A file (or the sibling chosen for the key) read whole.
#[derive(Debug)]
pub(super) struct HotFile {
    pub rep: Rep,
    pub bytes: Bytes,
    looked_up: Instant,
}

impl HotFile {
    pub fn new(rep: Rep, bytes: Bytes) -> HotFile {
        HotFile { rep, bytes, looked_up: Instant::now() }
    }
}

/// A site's hot files.
#[derive(Debug, Default)]
pub(super) struct HotFiles {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<HotKey, Arc<HotFile>>,
    bytes: usize,
}

impl HotFiles {
    fn inner(&self) -> MutexGuard<'_, Inner> {
        // Entries are replaced whole: consistent after a panic elsewhere.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The entry for `key` if it was looked up less than [`RECHECK`] ago.
    pub fn get(&self, key: &HotKey) -> Option<Arc<HotFile>> {
        let entry = Arc::clone(self.inner().entries.get(key)?);
        (entry.looked_up.elapsed() < RECHECK).then_some(entry)
    }

    /// Keeps `file` for `key` (replacing what was there) if there is room.
    pub fn put(&self, key: HotKey, file: Arc<HotFile>) {
        let mut inner = self.inner();
        let replaced = inner.entries.get(&key).map_or(0, |old| old.bytes.len());
        let bytes = inner.bytes - replaced + file.bytes.len();
        if bytes > MAX_BYTES {
            return;
        }
        inner.bytes = bytes;
        inner.entries.insert(key, file);
    }

    /// Forgets `key` (its file is gone or no longer small).
    pub fn remove(&self, key: &HotKey) {
        let mut inner = self.inner();
        if let Some(old) = inner.entries.remove(key) {
            inner.bytes -= old.bytes.len();
        }
    }

    /// Bytes held now.
    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.inner().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::super::validators::Validators;
    use super::*;

    fn key(name: &str) -> HotKey {
        HotKey { rel: RelPath { path: name.into(), trailing_slash: false }, accepts: Accepts::default() }
    }

    fn file(len: usize) -> Arc<HotFile> {
        let rep = Rep {
            len: len as u64,
            validators: Validators::new(std::time::UNIX_EPOCH, len as u64, None),
            content_type: "text/plain",
            coding: None,
            vary: false,
        };
        Arc::new(HotFile::new(rep, Bytes::from(vec![b'x'; len])))
    }

    #[test]
    fn the_bytes_held_stay_within_the_bound() {
        let hot = HotFiles::default();
        let each = 64 * 1024;
        for i in 0..(MAX_BYTES / each + 10) {
            hot.put(key(&i.to_string()), file(each));
        }
        assert_eq!(hot.bytes(), MAX_BYTES);
        // Replacing an entry makes no room and takes none.
        hot.put(key("0"), file(each));
        assert_eq!(hot.bytes(), MAX_BYTES);
        hot.remove(&key("0"));
        assert_eq!(hot.bytes(), MAX_BYTES - each);
        assert!(hot.get(&key("0")).is_none());
        assert!(hot.get(&key("1")).is_some());
    }

    #[test]
    fn an_entry_older_than_recheck_is_not_served() {
        let hot = HotFiles::default();
        let mut old = HotFile::new(file(10).rep.clone(), Bytes::from_static(b"0123456789"));
        old.looked_up -= RECHECK;
        hot.put(key("a"), Arc::new(old));
        assert!(hot.get(&key("a")).is_none());
    }
}
