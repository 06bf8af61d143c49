//! Finding a request's file under the site root (blocking: run on the blocking
//! pool). Every path opened is canonicalized first and must still lie under the
//! root, so a symlink cannot lead out of it.

use std::ffi::OsString;
use std::fs::{File, Metadata, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use super::encoding::{Accepts, Coding};
use super::mime;
use super::path::RelPath;
use super::validators::Validators;

/// A site's file system side, fixed when the config is compiled.
#[derive(Debug)]
pub(super) struct Site {
    /// Canonical: compared with canonical paths.
    pub root: PathBuf,
    /// A bare file name, checked when the site was made.
    pub index: Option<OsString>,
}

/// Where a request led.
#[derive(Debug)]
pub(super) enum Lookup {
    Found(File, Rep),
    /// A directory with an index, asked for without its trailing slash.
    AddSlash,
    /// Absent, outside the root, not a regular file, or a directory without index.
    Missing,
    /// The file system refused us (permissions).
    Forbidden,
    /// An unexpected error (logged).
    Failed,
}

/// What the response says about the representation chosen.
#[derive(Debug, Clone)]
pub(super) struct Rep {
    pub len: u64,
    pub validators: Validators,
    /// The original file's, also for a precompressed sibling.
    pub content_type: &'static str,
    /// Set when a precompressed sibling is sent.
    pub coding: Option<Coding>,
    /// A precompressed sibling exists, so the answer depends on Accept-Encoding.
    pub vary: bool,
}

/// A file opened under the root.
struct Opened {
    path: PathBuf,
    file: File,
    meta: Metadata,
}

/// Looks `rel` up under the site root: the file, a directory's index, and the
/// precompressed sibling `accepts` allows (pass none for a Range request).
pub(super) fn find(site: &Site, rel: &RelPath, accepts: Accepts) -> Lookup {
    let candidate = site.root.join(&rel.path);
    let found = match open_within(&site.root, &candidate) {
        Ok(Some(found)) => found,
        Ok(None) => return Lookup::Missing,
        Err(err) => return classify(err, &candidate),
    };
    let (file, type_name) = if found.meta.is_dir() {
        let Some(index) = &site.index else { return Lookup::Missing };
        let index_path = found.path.join(index);
        let index_file = match open_within(&site.root, &index_path) {
            Ok(Some(index_file)) if index_file.meta.is_file() => index_file,
            Ok(_) => return Lookup::Missing,
            Err(err) => return classify(err, &index_path),
        };
        // Relative links in the index resolve against the directory only with
        // the slash: send the client there first (as nginx and Apache do).
        if !rel.trailing_slash {
            return Lookup::AddSlash;
        }
        (index_file, index.as_os_str())
    } else if found.meta.is_file() && !rel.trailing_slash {
        // The name asked for decides the type, as with nginx (a symlink's target
        // may be named otherwise).
        (found, candidate.file_name().unwrap_or_default())
    } else {
        // A FIFO, socket or device (opened without blocking, and refused here),
        // or a file asked for as a directory.
        return Lookup::Missing;
    };
    let content_type = mime::content_type(type_name);
    let (coding, vary, chosen) = sibling(&site.root, &file.path, accepts);
    let (coding, rep) = match (coding, chosen) {
        (Some(coding), Some(chosen)) => (Some(coding), chosen),
        _ => (None, file),
    };
    let len = rep.meta.len();
    let mtime = rep.meta.modified().unwrap_or(UNIX_EPOCH);
    let validators = Validators::new(mtime, len, coding);
    Lookup::Found(rep.file, Rep { len, validators, content_type, coding, vary })
}

/// The precompressed sibling of `path` to send, if any, and whether one exists
/// at all (for Vary). Checking existence is one lstat; only a sibling that will
/// be sent is canonicalized and opened.
fn sibling(root: &Path, path: &Path, accepts: Accepts) -> (Option<Coding>, bool, Option<Opened>) {
    let mut vary = false;
    for coding in Coding::ALL {
        let mut name = OsString::from(path.as_os_str());
        name.push(coding.suffix());
        let sibling = PathBuf::from(name);
        if std::fs::symlink_metadata(&sibling).is_err() {
            continue;
        }
        vary = true;
        if !accepts.allows(coding) {
            continue;
        }
        match open_within(root, &sibling) {
            Ok(Some(opened)) if opened.meta.is_file() => return (Some(coding), true, Some(opened)),
            // Unusable (leaves the root, not a file, unreadable): the next, or the original.
            Ok(_) => {}
            Err(err) => tracing::debug!(path = %sibling.display(), error = %err, "precompressed sibling not usable"),
        }
    }
    (None, vary, None)
}

/// Opens `candidate` if its canonical path lies under `root` (`None` if not).
///
/// The canonical path is opened with O_NOFOLLOW, so its last component cannot
/// have become a symlink since, and O_NONBLOCK, so a FIFO cannot hold a blocking
/// thread waiting for a writer (it is refused once its type is seen).
fn open_within(root: &Path, candidate: &Path) -> io::Result<Option<Opened>> {
    let path = candidate.canonicalize()?;
    if !path.starts_with(root) {
        return Ok(None);
    }
    let file = OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(&path)?;
    // From the open file, not the path: what is checked is what is read.
    let meta = file.metadata()?;
    Ok(Some(Opened { path, file, meta }))
}

/// The answer for a file system error on `path`.
fn classify(err: io::Error, path: &Path) -> Lookup {
    match err.raw_os_error() {
        Some(libc::ENOENT | libc::ENOTDIR | libc::ELOOP | libc::ENAMETOOLONG) => Lookup::Missing,
        Some(libc::EACCES | libc::EPERM) => Lookup::Forbidden,
        _ => {
            tracing::warn!(path = %path.display(), error = %err, "static file lookup failed");
            Lookup::Failed
        }
    }
}
