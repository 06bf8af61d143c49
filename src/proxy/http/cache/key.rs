//! What a stored response is found by: the primary key (scheme, host, path and
//! query; GET and HEAD share it) and, for a response with `Vary`, the request
//! header values it was chosen by (its variant).

use std::sync::Arc;

use http::header::{HeaderMap, HeaderName};

/// The primary cache key: `scheme://host/path?query`, host lowercased and its
/// default port dropped, so `Example.com:80` and `example.com` share entries. The
/// method is not part of it: a HEAD is answered from the GET's entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    /// Boxed, not shared: a hit only looks it up; it is shared (copied into an
    /// `Arc`) only where it is kept, on a miss.
    text: Box<str>,
    /// Where the path starts in `text`.
    path_at: usize,
}

impl Key {
    /// The key of a request for `path_and_query` on `host` (none: an HTTP/1.0
    /// request without Host), over TLS if `https`.
    pub fn new(https: bool, host: Option<&str>, path_and_query: &str) -> Key {
        let scheme = if https { "https://" } else { "http://" };
        let host = host.unwrap_or("");
        let default_port = if https { ":443" } else { ":80" };
        let host = host.strip_suffix(default_port).unwrap_or(host);
        let mut text = String::with_capacity(scheme.len() + host.len() + path_and_query.len());
        text.push_str(scheme);
        text.extend(host.chars().map(|c| c.to_ascii_lowercase()));
        let path_at = text.len();
        text.push_str(path_and_query);
        // Exactly as long as reserved: no reallocation.
        Key { text: text.into_boxed_str(), path_at }
    }

    /// The key of another path on the same scheme and host (for what an unsafe
    /// request's Location and Content-Location name).
    pub fn with_path(&self, path_and_query: &str) -> Key {
        let mut text = String::with_capacity(self.path_at + path_and_query.len());
        text.push_str(&self.text[..self.path_at]);
        text.push_str(path_and_query);
        Key { text: text.into_boxed_str(), path_at: self.path_at }
    }

    /// The whole key.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// `scheme://host`.
    pub fn origin(&self) -> &str {
        &self.text[..self.path_at]
    }

    /// Path and query.
    pub fn path(&self) -> &str {
        &self.text[self.path_at..]
    }

    /// The key's text, shared (as the store's index and the flights keep it).
    pub fn shared(&self) -> Arc<str> {
        Arc::from(&*self.text)
    }
}

/// The path (and query) of a key's text (see [`Key::as_str`]).
pub fn path_of(text: &str) -> &str {
    let host_at = text.find("://").map_or(0, |at| at + 3);
    text[host_at..].find('/').map_or("", |at| &text[host_at + at..])
}

/// The request header values a stored response was selected by, for the header
/// names its `Vary` lists; empty without Vary. A later request gets the
/// response only if its values for those names are the same (RFC 9111 section 4.1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Variant(Box<[(HeaderName, Option<String>)]>);

impl Variant {
    /// The values `request` has for `names`.
    pub fn of(names: &[HeaderName], request: &HeaderMap) -> Variant {
        Variant(names.iter().map(|name| (name.clone(), normalized(request, name))).collect())
    }

    /// Whether `request` has the same values for the names this variant lists.
    pub fn matches(&self, request: &HeaderMap) -> bool {
        self.0.iter().all(|(name, value)| normalized(request, name) == *value)
    }

    /// Bytes the variant takes (for the cache's accounting).
    pub fn weight(&self) -> usize {
        self.0.iter().map(|(name, value)| name.as_str().len() + value.as_ref().map_or(0, String::len)).sum()
    }
}

/// Every line of `name` as one comma-separated list, without the whitespace
/// around its elements: `a, b` and `a,b` (or two lines `a` and `b`) mean the same.
/// `None` when absent (which differs from present and empty).
fn normalized(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let mut lines = headers.get_all(name).iter().peekable();
    lines.peek()?;
    let mut out = String::new();
    for line in lines {
        for element in String::from_utf8_lossy(line.as_bytes()).split(',') {
            let element = element.trim();
            if element.is_empty() {
                continue;
            }
            if !out.is_empty() {
                out.push(',');
            }
            out.push_str(element);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn keys_share_host_spellings_and_keep_paths_apart() {
        let key = Key::new(false, Some("Example.COM:80"), "/a?b=1");
        assert_eq!(key.as_str(), "http://example.com/a?b=1");
        assert_eq!((key.origin(), key.path()), ("http://example.com", "/a?b=1"));
        assert_eq!(key, Key::new(false, Some("example.com"), "/a?b=1"));
        assert_ne!(key, Key::new(true, Some("example.com"), "/a?b=1"), "the scheme counts");
        assert_ne!(key, Key::new(false, Some("example.com:8080"), "/a?b=1"));
        assert_eq!(Key::new(true, Some("x:443"), "/").as_str(), "https://x/");
        assert_eq!(key.with_path("/c").as_str(), "http://example.com/c");
        assert_eq!(Key::new(false, None, "/p").as_str(), "http:///p");
        assert_eq!(path_of(key.as_str()), "/a?b=1");
        assert_eq!(path_of("http:///p"), "/p");
    }

    #[test]
    fn variants_compare_normalized_values() {
        let mut request = HeaderMap::new();
        request.append("accept-language", HeaderValue::from_static("de, en"));
        let names = [HeaderName::from_static("accept-language"), HeaderName::from_static("x-absent")];
        let variant = Variant::of(&names, &request);
        let mut same = HeaderMap::new();
        same.append("accept-language", HeaderValue::from_static("de"));
        same.append("accept-language", HeaderValue::from_static("en"));
        assert!(variant.matches(&same), "two lines are one list");
        let mut other = HeaderMap::new();
        other.append("accept-language", HeaderValue::from_static("fr"));
        assert!(!variant.matches(&other));
        same.append("x-absent", HeaderValue::from_static(""));
        assert!(!variant.matches(&same), "absent differs from empty");
        assert!(Variant::default().matches(&other), "no Vary: any request");
    }
}
