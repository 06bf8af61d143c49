//! The request path made into a path relative to the site root, or refused.
//!
//! Refusing here, before any file system call, keeps a traversal attempt from
//! even being looked up; the canonical-path check in `lookup` is the second
//! line, for what a path cannot show (symlinks).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

/// A request path that is safe to join to the site root.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct RelPath {
    /// Only normal components: no `..`, no root, no empty or `.` segment.
    pub path: PathBuf,
    /// The request path ended with '/': it names a directory, never a file.
    pub trailing_slash: bool,
}

/// Turns the raw (still percent-encoded) request path into a relative path, after
/// dropping `strip_prefix` (byte-wise, as routes match it) when given.
///
/// `None` (answered 404) for: a path outside the prefix, a bad percent escape, a
/// `..` segment in any encoding, a segment that decodes to a slash (`%2f`: a
/// segment must stay one file name), a backslash raw or encoded (a separator on
/// other systems, and in paths copied from them), or a NUL.
pub(super) fn relative(raw: &str, strip_prefix: Option<&str>) -> Option<RelPath> {
    let rest = match strip_prefix {
        Some(prefix) => raw.strip_prefix(prefix)?,
        None => raw,
    };
    let mut path = PathBuf::new();
    let mut name = Vec::new();
    for segment in rest.split('/') {
        name.clear();
        decode_into(segment, &mut name)?;
        match name.as_slice() {
            b"" | b"." => {}
            b".." => return None,
            bytes if bytes.iter().any(|&b| matches!(b, b'/' | b'\\' | 0)) => return None,
            bytes => path.push(OsStr::from_bytes(bytes)),
        }
    }
    Some(RelPath { path, trailing_slash: raw.ends_with('/') })
}

/// Percent-decodes `segment` once into `out`; `None` for a malformed escape.
/// Decoding once only: `%252e` is the file name `%2e`, not a dot.
fn decode_into(segment: &str, out: &mut Vec<u8>) -> Option<()> {
    let mut bytes = segment.bytes();
    while let Some(byte) = bytes.next() {
        if byte == b'%' {
            let high = hex(bytes.next()?)?;
            let low = hex(bytes.next()?)?;
            out.push(high << 4 | low);
        } else {
            out.push(byte);
        }
    }
    Some(())
}

fn hex(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(raw: &str) -> Option<String> {
        relative(raw, None).map(|r| r.path.to_string_lossy().into_owned())
    }

    #[test]
    fn plain_paths_become_relative() {
        assert_eq!(rel("/"), Some(String::new()));
        assert_eq!(rel("/a/b.css"), Some("a/b.css".into()));
        assert_eq!(rel("//a///b"), Some("a/b".into()));
        assert_eq!(rel("/a/./b"), Some("a/b".into()));
        assert_eq!(rel("/%61%20b"), Some("a b".into()));
        // Decoded once: a literal file name, not a dot-dot.
        assert_eq!(rel("/%252e%252e/x"), Some("%2e%2e/x".into()));
        assert_eq!(rel("/...").as_deref(), Some("..."));
        assert!(!relative("/a/b", None).unwrap().path.is_absolute());
    }

    #[test]
    fn trailing_slash_is_kept() {
        assert!(relative("/docs/", None).unwrap().trailing_slash);
        assert!(!relative("/docs", None).unwrap().trailing_slash);
        assert!(relative("/", None).unwrap().trailing_slash);
    }

    #[test]
    fn dot_dot_in_every_encoding_is_refused() {
        for raw in [
            "/..",
            "/../etc/passwd",
            "/a/../../etc/passwd",
            "/a/..",
            "/%2e%2e/etc/passwd",
            "/%2E%2E/etc/passwd",
            "/.%2e/etc/passwd",
            "/%2e./etc/passwd",
            "/a/%2e%2E",
        ] {
            assert_eq!(relative(raw, None), None, "{raw}");
        }
    }

    #[test]
    fn encoded_slashes_backslashes_and_nul_are_refused() {
        for raw in [
            "/..%2fetc/passwd",
            "/a%2F..%2F..%2Fetc",
            "/a%2fb",
            "/..\\etc\\passwd",
            "/a\\b",
            "/..%5cetc",
            "/a%5Cb",
            "/a%00.txt",
            "/a\0.txt",
        ] {
            assert_eq!(relative(raw, None), None, "{raw}");
        }
    }

    #[test]
    fn malformed_escapes_are_refused() {
        for raw in ["/a%", "/a%2", "/a%zz", "/%g0"] {
            assert_eq!(relative(raw, None), None, "{raw}");
        }
    }

    #[test]
    fn strip_prefix_drops_the_route_prefix() {
        let r = relative("/static/css/a.css", Some("/static/")).unwrap();
        assert_eq!(r.path, PathBuf::from("css/a.css"));
        let r = relative("/static", Some("/static")).unwrap();
        assert_eq!(r.path, PathBuf::new());
        assert!(!r.trailing_slash);
        assert_eq!(relative("/other/a.css", Some("/static/")), None);
        // nginx's `alias` pitfall: the prefix without its slash must not let `..` through.
        assert_eq!(relative("/static../etc/passwd", Some("/static")), None);
    }
}
