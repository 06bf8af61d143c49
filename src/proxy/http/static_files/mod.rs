//! The `static:` route action: files from a directory, as a web server serves
//! them (ETag / Last-Modified and 304, one byte range, HEAD, a Content-Type by
//! extension, precompressed `.br` / `.gz` siblings), never a byte from outside
//! the root.
//!
//! File system work runs on tokio's blocking pool, one round trip per request
//! (lookup, validators, and a small file's bytes together), then one per chunk
//! of a larger file as the client takes it. Small files served lately are
//! answered from memory for up to a second after their lookup (`hot`).

mod encoding;
mod hot;
mod lookup;
mod mime;
mod path;
mod range;
mod response;
mod stream;
mod validators;

use std::ffi::OsString;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use http::header::{IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE};
use http::{HeaderMap, HeaderValue, Method, Response, Uri};

use super::body::ResponseBody;
use encoding::Accepts;
use hot::{HotFile, HotFiles, HotKey};
use lookup::{Lookup, Site};
use path::RelPath;
use range::RangeRequest;
use response::{Content, Plan};
pub use stream::FileBody;

/// Files up to this size are read whole in the lookup's blocking call: one round
/// trip to the blocking pool for the whole request.
const SMALL_FILE: u64 = 64 * 1024;

/// A `static:` route's site, compiled once per snapshot.
#[derive(Debug)]
pub struct StaticSite {
    site: Arc<Site>,
    /// The route's path_prefix, dropped from request paths (nginx `alias`).
    strip_prefix: Option<String>,
    /// Small files served lately.
    hot: HotFiles,
}

impl StaticSite {
    /// `root` must exist and be a directory (canonicalized here, so later requests
    /// compare against the real path); `index` is the file served for a directory
    /// (a bare file name); `strip_prefix`: the matched route's path_prefix to drop
    /// from the request path first (like nginx `alias`), `None` keeps the path
    /// (nginx `root`).
    pub fn new(root: &Path, index: Option<&str>, strip_prefix: Option<&str>) -> io::Result<StaticSite> {
        let root = root.canonicalize()?;
        if !root.is_dir() {
            return Err(io::Error::new(io::ErrorKind::NotADirectory, "not a directory"));
        }
        let index = match index {
            Some(name) if !crate::config::is_file_name(name) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("index {name:?} is not a file name (no '/', '\\', '.' or '..')"),
                ))
            }
            index => index.map(OsString::from),
        };
        let strip_prefix = strip_prefix.filter(|prefix| !prefix.is_empty()).map(str::to_string);
        Ok(StaticSite { site: Arc::new(Site { root, index }), strip_prefix, hot: HotFiles::default() })
    }

    /// Answers one request (GET/HEAD; others 405 with Allow).
    pub async fn serve(&self, method: &Method, uri: &Uri, headers: &HeaderMap) -> Response<ResponseBody> {
        let head = match *method {
            Method::GET => false,
            Method::HEAD => true,
            _ => return response::method_not_allowed(),
        };
        let Some(rel) = path::relative(uri.path(), self.strip_prefix.as_deref()) else {
            return response::not_found();
        };
        let wants = Wants::from_headers(headers, head);
        let key = HotKey::new(rel, wants.accepts);
        if let Some(hot) = self.hot.get(&key) {
            return from_memory(&hot, &wants);
        }
        let site = Arc::clone(&self.site);
        let looked_up = tokio::task::spawn_blocking(move || (answer(&site, &key.rel, &wants), wants, key)).await;
        let (answer, wants, key) = match looked_up {
            Ok(answered) => answered,
            Err(err) => {
                tracing::error!(error = %err, "static file lookup task failed");
                return response::failed();
            }
        };
        if !matches!(answer, Answer::Small(..)) {
            self.hot.remove(&key);
        }
        match answer {
            Answer::Small(rep, bytes) => {
                let hot = Arc::new(HotFile::new(rep, bytes));
                self.hot.put(key, Arc::clone(&hot));
                from_memory(&hot, &wants)
            }
            Answer::File(rep, plan, content) => response::file(&rep, plan, content),
            Answer::Missing => response::not_found(),
            Answer::Forbidden => response::forbidden(),
            Answer::AddSlash => response::add_slash(uri),
            Answer::Failed => response::failed(),
        }
    }
}

/// The answer to a request from a small file read whole.
fn from_memory(hot: &HotFile, wants: &Wants) -> Response<ResponseBody> {
    let plan = plan(&hot.rep, wants);
    let content = match plan {
        _ if wants.head => Content::Empty,
        Plan::Full if !hot.bytes.is_empty() => Content::Whole(hot.bytes.clone()),
        Plan::Partial(first, last) => Content::Whole(hot.bytes.slice(first as usize..=last as usize)),
        Plan::Full | Plan::NotModified | Plan::Unsatisfiable => Content::Empty,
    };
    response::file(&hot.rep, plan, content)
}

/// What a request asks beyond its path, taken from its headers before the
/// blocking call (which cannot borrow them).
#[derive(Debug)]
struct Wants {
    head: bool,
    accepts: Accepts,
    range: RangeRequest,
    if_range: Option<HeaderValue>,
    if_none_match: Vec<HeaderValue>,
    if_modified_since: Option<SystemTime>,
}

impl Wants {
    fn from_headers(headers: &HeaderMap, head: bool) -> Wants {
        let range = RangeRequest::from_headers(headers);
        // A range of a compressed sibling is no range of the file: Range requests
        // get the original.
        let accepts = match range {
            RangeRequest::Absent => Accepts::from_headers(headers),
            _ => Accepts::default(),
        };
        Wants {
            head,
            accepts,
            range,
            if_range: headers.get(IF_RANGE).cloned(),
            if_none_match: headers.get_all(IF_NONE_MATCH).iter().cloned().collect(),
            if_modified_since: headers
                .get(IF_MODIFIED_SINCE)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| httpdate::parse_http_date(value).ok()),
        }
    }
}

/// The blocking call's result.
#[derive(Debug)]
enum Answer {
    /// A small file, read whole: what this request gets of it is decided from
    /// memory (and so are the next ones, for a while).
    Small(lookup::Rep, bytes::Bytes),
    File(lookup::Rep, Plan, Content),
    Missing,
    Forbidden,
    AddSlash,
    Failed,
}

/// Looks the file up, decides what to send and reads it when small (blocking).
fn answer(site: &Site, rel: &RelPath, wants: &Wants) -> Answer {
    let (file, rep) = match lookup::find(site, rel, wants.accepts) {
        Lookup::Found(file, rep) => (file, rep),
        Lookup::AddSlash => return Answer::AddSlash,
        Lookup::Missing => return Answer::Missing,
        Lookup::Forbidden => return Answer::Forbidden,
        Lookup::Failed => return Answer::Failed,
    };
    if rep.len <= SMALL_FILE {
        return match stream::read_exact_at(&file, 0, rep.len as usize) {
            Ok(bytes) => Answer::Small(rep, bytes),
            Err(err) => {
                tracing::warn!(error = %err, "cannot read a static file");
                Answer::Failed
            }
        };
    }
    let plan = plan(&rep, wants);
    let span = match plan {
        Plan::Full => (0, rep.len),
        Plan::Partial(first, last) => (first, last - first + 1),
        Plan::NotModified | Plan::Unsatisfiable => (0, 0),
    };
    let content = match span {
        _ if wants.head => Content::Empty,
        (_, 0) => Content::Empty,
        (offset, len) if len <= SMALL_FILE => match stream::read_exact_at(&file, offset, len as usize) {
            Ok(bytes) => Content::Whole(bytes),
            Err(err) => {
                tracing::warn!(error = %err, "cannot read a static file");
                return Answer::Failed;
            }
        },
        (offset, len) => Content::Stream(FileBody::new(file, offset, len)),
    };
    Answer::File(rep, plan, content)
}

/// What to send of `rep`: conditions first (a 304 beats a range), then the range.
fn plan(rep: &lookup::Rep, wants: &Wants) -> Plan {
    if rep.validators.not_modified(&wants.if_none_match, wants.if_modified_since) {
        return Plan::NotModified;
    }
    let RangeRequest::One(range) = wants.range else { return Plan::Full };
    // An empty file has no byte to point at: it is sent whole (and empty).
    if rep.len == 0 || wants.if_range.as_ref().is_some_and(|if_range| !rep.validators.if_range_holds(if_range)) {
        return Plan::Full;
    }
    match range.resolve(rep.len) {
        Some((first, last)) => Plan::Partial(first, last),
        None => Plan::Unsatisfiable,
    }
}
