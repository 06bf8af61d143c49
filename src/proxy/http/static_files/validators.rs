//! ETag and Last-Modified of a file, and the conditional headers held against
//! them: If-None-Match / If-Modified-Since (304) and If-Range.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderValue;

use super::encoding::Coding;

/// The last second `httpdate` can write (it panics beyond): 9999-12-31T23:59:59Z.
const LAST_HTTP_DATE: u64 = 253_402_300_799;

/// The validators of one representation (a file, or its precompressed sibling).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Validators {
    /// Strong: `"<mtime-ns-hex>-<len-hex>"`, with `-br` / `-gz` for a sibling so
    /// that no two representations share one.
    pub etag: String,
    /// Whole seconds since the epoch, as HTTP dates carry them.
    pub modified: u64,
}

impl Validators {
    /// From a file's modification time and length. A time before the epoch (or
    /// past year 9999) is clamped: it is a validator, not a fact to report.
    pub fn new(mtime: SystemTime, len: u64, coding: Option<Coding>) -> Validators {
        let since = mtime.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
        let suffix = match coding {
            Some(Coding::Br) => "-br",
            Some(Coding::Gzip) => "-gz",
            None => "",
        };
        Validators {
            etag: format!("\"{:x}-{:x}{suffix}\"", since.as_nanos(), len),
            modified: since.as_secs().min(LAST_HTTP_DATE),
        }
    }

    /// The Last-Modified value.
    pub fn last_modified(&self) -> String {
        httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(self.modified))
    }

    /// Whether a GET or HEAD with these conditions gets a 304. If-None-Match, when
    /// present, decides alone (RFC 9110 section 13.2.2).
    pub fn not_modified(&self, if_none_match: &[HeaderValue], if_modified_since: Option<SystemTime>) -> bool {
        if !if_none_match.is_empty() {
            return if_none_match.iter().any(|value| self.none_match_hits(value));
        }
        match if_modified_since.and_then(|since| since.duration_since(UNIX_EPOCH).ok()) {
            Some(since) => self.modified <= since.as_secs(),
            None => false,
        }
    }

    /// One If-None-Match field: `*`, or a list compared weakly (W/ ignored).
    fn none_match_hits(&self, value: &HeaderValue) -> bool {
        let Ok(value) = value.to_str() else { return false };
        if value.trim() == "*" {
            return true;
        }
        entity_tags(value).any(|(_, tag)| tag == self.etag)
    }

    /// Whether an If-Range lets the Range apply: a strong ETag equal to ours, or
    /// exactly our Last-Modified date. Otherwise the whole file is sent.
    pub fn if_range_holds(&self, value: &HeaderValue) -> bool {
        let Ok(value) = value.to_str() else { return false };
        let value = value.trim();
        if value.starts_with('"') || value.starts_with("W/") {
            // Strong comparison: a weak tag never matches.
            let mut tags = entity_tags(value);
            return matches!((tags.next(), tags.next()), (Some((false, tag)), None) if tag == self.etag);
        }
        httpdate::parse_http_date(value)
            .ok()
            .and_then(|date| date.duration_since(UNIX_EPOCH).ok())
            .is_some_and(|date| date.as_secs() == self.modified)
    }
}

/// The entity tags of a list, as `(weak, "opaque")` with their quotes; stops at
/// the first malformed one. Scanned rather than split on commas: an entity tag
/// may contain a comma.
fn entity_tags(list: &str) -> impl Iterator<Item = (bool, &str)> {
    let mut rest = list;
    std::iter::from_fn(move || {
        rest = rest.trim_start_matches([' ', '\t', ',']);
        if rest.is_empty() {
            return None;
        }
        let weak = rest.starts_with("W/");
        let tagged = if weak { &rest[2..] } else { rest };
        if !tagged.starts_with('"') {
            rest = "";
            return None;
        }
        let Some(close) = tagged[1..].find('"') else {
            rest = "";
            return None;
        };
        let (tag, after) = tagged.split_at(close + 2);
        rest = after;
        Some((weak, tag))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v() -> Validators {
        Validators::new(UNIX_EPOCH + Duration::new(1_700_000_000, 5), 1234, None)
    }

    fn hv(s: &str) -> HeaderValue {
        HeaderValue::from_str(s).unwrap()
    }

    #[test]
    fn etag_shape_and_siblings_differ() {
        let plain = v();
        assert_eq!(plain.etag, format!("\"{:x}-4d2\"", 1_700_000_000_000_000_005u128));
        let br = Validators::new(UNIX_EPOCH + Duration::new(1_700_000_000, 5), 1234, Some(Coding::Br));
        assert_ne!(plain.etag, br.etag);
        assert_eq!(plain.last_modified(), "Tue, 14 Nov 2023 22:13:20 GMT");
    }

    #[test]
    fn extreme_times_do_not_panic() {
        let old = Validators::new(UNIX_EPOCH - Duration::from_secs(10), 1, None);
        assert_eq!(old.last_modified(), "Thu, 01 Jan 1970 00:00:00 GMT");
        let far = Validators::new(UNIX_EPOCH + Duration::from_secs(LAST_HTTP_DATE * 2), 1, None);
        assert_eq!(far.last_modified(), "Fri, 31 Dec 9999 23:59:59 GMT");
    }

    #[test]
    fn if_none_match_lists() {
        let v = v();
        let tag = v.etag.clone();
        assert!(v.not_modified(&[hv(&tag)], None));
        assert!(v.not_modified(&[hv(&format!("W/{tag}"))], None));
        assert!(v.not_modified(&[hv(&format!("\"a,b\", {tag}"))], None));
        assert!(v.not_modified(&[hv("\"x\""), hv(&tag)], None));
        assert!(v.not_modified(&[hv("*")], None));
        assert!(!v.not_modified(&[hv("\"x\"")], None));
        assert!(!v.not_modified(&[hv("garbage")], None));
    }

    #[test]
    fn if_modified_since_and_precedence() {
        let v = v();
        let at = UNIX_EPOCH + Duration::from_secs(v.modified);
        assert!(v.not_modified(&[], Some(at)));
        assert!(v.not_modified(&[], Some(at + Duration::from_secs(60))));
        assert!(!v.not_modified(&[], Some(at - Duration::from_secs(1))));
        // If-None-Match decides when present, both ways.
        assert!(!v.not_modified(&[hv("\"other\"")], Some(at)));
        assert!(v.not_modified(&[hv(&v.etag)], Some(at - Duration::from_secs(3600))));
    }

    #[test]
    fn if_range_is_strong() {
        let v = v();
        assert!(v.if_range_holds(&hv(&v.etag)));
        assert!(!v.if_range_holds(&hv(&format!("W/{}", v.etag))));
        assert!(!v.if_range_holds(&hv("\"other\"")));
        assert!(v.if_range_holds(&hv(&v.last_modified())));
        assert!(!v.if_range_holds(&hv("Thu, 01 Jan 1970 00:00:00 GMT")));
        assert!(!v.if_range_holds(&hv("nonsense")));
    }
}
