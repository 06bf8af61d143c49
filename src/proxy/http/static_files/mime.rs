//! Content-Type from a file name's extension. A short table of what web sites
//! serve rather than a crate's thousand entries: the text types carry a charset
//! here, which generic tables leave out.

use std::ffi::OsStr;
use std::path::Path;

/// Unknown or missing extension: bytes the client must not try to render.
pub(super) const OCTET_STREAM: &str = "application/octet-stream";

/// Extension (compared case-insensitively) -> Content-Type.
const TYPES: &[(&str, &str)] = &[
    ("html", "text/html; charset=utf-8"),
    ("htm", "text/html; charset=utf-8"),
    ("css", "text/css; charset=utf-8"),
    ("js", "text/javascript; charset=utf-8"),
    ("mjs", "text/javascript; charset=utf-8"),
    ("json", "application/json"),
    ("map", "application/json"),
    ("webmanifest", "application/manifest+json"),
    ("xml", "text/xml; charset=utf-8"),
    ("txt", "text/plain; charset=utf-8"),
    ("md", "text/markdown; charset=utf-8"),
    ("csv", "text/csv; charset=utf-8"),
    ("svg", "image/svg+xml"),
    ("png", "image/png"),
    ("jpg", "image/jpeg"),
    ("jpeg", "image/jpeg"),
    ("gif", "image/gif"),
    ("webp", "image/webp"),
    ("avif", "image/avif"),
    ("ico", "image/x-icon"),
    ("bmp", "image/bmp"),
    ("woff2", "font/woff2"),
    ("woff", "font/woff"),
    ("ttf", "font/ttf"),
    ("otf", "font/otf"),
    ("wasm", "application/wasm"),
    ("pdf", "application/pdf"),
    ("zip", "application/zip"),
    ("gz", "application/gzip"),
    ("tar", "application/x-tar"),
    ("mp4", "video/mp4"),
    ("webm", "video/webm"),
    ("mp3", "audio/mpeg"),
    ("ogg", "audio/ogg"),
    ("wav", "audio/wav"),
];

/// The Content-Type for a file named `name`.
pub(super) fn content_type(name: &OsStr) -> &'static str {
    let Some(ext) = Path::new(name).extension().and_then(OsStr::to_str) else { return OCTET_STREAM };
    TYPES.iter().find(|(known, _)| known.eq_ignore_ascii_case(ext)).map_or(OCTET_STREAM, |(_, ty)| ty)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_unknown_and_case() {
        assert_eq!(content_type(OsStr::new("a.html")), "text/html; charset=utf-8");
        assert_eq!(content_type(OsStr::new("A.PNG")), "image/png");
        assert_eq!(content_type(OsStr::new("x.tar.gz")), "application/gzip");
        assert_eq!(content_type(OsStr::new("a.exe")), OCTET_STREAM);
        assert_eq!(content_type(OsStr::new("Makefile")), OCTET_STREAM);
        assert_eq!(content_type(OsStr::new(".bashrc")), OCTET_STREAM);
    }

    #[test]
    fn every_value_is_a_valid_header() {
        for (_, ty) in TYPES {
            assert!(http::HeaderValue::from_str(ty).is_ok(), "{ty}");
        }
    }
}
