//! The `static` route action's site, called directly (`StaticSite::serve`) on a
//! temporary tree: lookup under the root and every way out of it refused,
//! directory indexes, validators and 304, ranges, HEAD, types, precompressed
//! siblings, streaming of a large file; and once over a real hyper connection.

use std::fs::{self, File};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use fulcrum::proxy::http::StaticSite;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use http_body_util::BodyExt;
use tempfile::TempDir;

const SECRET: &str = "TOP SECRET: outside the root";
const NOTES: &str = "hello, static world\n";
/// 2023-11-14T22:13:20Z, set on notes.txt so dates are known.
const NOTES_MTIME: u64 = 1_700_000_000;
const BIG_LEN: u64 = 8 * 1024 * 1024;
/// Written into the sparse big file so its bytes can be told apart.
const BIG_MARKS: [(u64, &[u8]); 3] = [(0, b"BEGIN"), (5 * 1024 * 1024 + 7, b"MIDDLE"), (BIG_LEN - 3, b"END")];

/// A site tree in a temporary directory, with a secret next to (outside) it.
struct Tree {
    tmp: TempDir,
    root: PathBuf,
}

fn tree() -> Tree {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("site");
    fs::create_dir(&root).unwrap();
    fs::write(tmp.path().join("secret.txt"), SECRET).unwrap();
    fs::create_dir(tmp.path().join("outside")).unwrap();
    fs::write(tmp.path().join("outside/secret.txt"), SECRET).unwrap();

    fs::write(root.join("notes.txt"), NOTES).unwrap();
    File::options()
        .write(true)
        .open(root.join("notes.txt"))
        .unwrap()
        .set_modified(UNIX_EPOCH + Duration::from_secs(NOTES_MTIME))
        .unwrap();
    fs::write(root.join("index.html"), "<h1>home</h1>").unwrap();
    for name in [
        "style.css",
        "app.js",
        "data.json",
        "logo.svg",
        "img.png",
        "photo.jpg",
        "photo.JPEG",
        "anim.gif",
        "pic.webp",
        "font.woff2",
        "mod.wasm",
        "blob.xyz",
        "noext",
    ] {
        fs::write(root.join(name), format!("content of {name}")).unwrap();
    }
    fs::write(root.join("empty.txt"), "").unwrap();
    fs::create_dir(root.join("docs")).unwrap();
    fs::write(root.join("docs/index.html"), "<h1>docs</h1>").unwrap();
    fs::write(root.join("docs/page.txt"), "a page").unwrap();
    fs::create_dir(root.join("bare")).unwrap();
    fs::write(root.join("bare/a.txt"), "in bare").unwrap();

    // Precompressed siblings: both for app.js, gzip only for style.css.
    fs::write(root.join("app.js.br"), "BROTLI BYTES").unwrap();
    fs::write(root.join("app.js.gz"), "GZIP BYTES").unwrap();
    fs::write(root.join("style.css.gz"), "GZIP CSS").unwrap();
    // A sibling that is a symlink out of the root must never be sent.
    fs::write(root.join("plain.txt"), "plain").unwrap();
    symlink(tmp.path().join("secret.txt"), root.join("plain.txt.br")).unwrap();

    // Symlinks: out of the root (a file, a directory), and one staying inside.
    symlink(tmp.path().join("secret.txt"), root.join("escape")).unwrap();
    symlink("../secret.txt", root.join("escape_relative.txt")).unwrap();
    symlink(tmp.path().join("outside"), root.join("escape_dir")).unwrap();
    symlink(root.join("notes.txt"), root.join("inside.txt")).unwrap();
    fs::create_dir(root.join("linked_index")).unwrap();
    symlink(tmp.path().join("secret.txt"), root.join("linked_index/index.html")).unwrap();

    // Sparse: 8 MiB on disk costs nothing, marks at known offsets.
    let big = File::create(root.join("big.bin")).unwrap();
    big.set_len(BIG_LEN).unwrap();
    for (offset, mark) in BIG_MARKS {
        std::os::unix::fs::FileExt::write_all_at(&big, mark, offset).unwrap();
    }
    Tree { tmp, root }
}

fn site(root: &Path) -> StaticSite {
    StaticSite::new(root, Some("index.html"), None).unwrap()
}

/// A response read to its end.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: HeaderMap,
    body: Vec<u8>,
    /// Data frames, and the largest.
    frames: usize,
    largest_frame: usize,
    /// The body ended with an error.
    error: Option<String>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

async fn request(site: &StaticSite, method: Method, path: &str, headers: &[(&str, &str)]) -> Reply {
    let uri: Uri = path.parse().unwrap();
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        map.append(HeaderName::from_bytes(name.as_bytes()).unwrap(), HeaderValue::from_str(value).unwrap());
    }
    let response = site.serve(&method, &uri, &map).await;
    let (parts, mut body) = response.into_parts();
    let mut reply = Reply {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: Vec::new(),
        frames: 0,
        largest_frame: 0,
        error: None,
    };
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    reply.frames += 1;
                    reply.largest_frame = reply.largest_frame.max(data.len());
                    reply.body.extend_from_slice(&data);
                }
            }
            Err(err) => {
                reply.error = Some(err.to_string());
                break;
            }
        }
    }
    reply
}

async fn get(site: &StaticSite, path: &str, headers: &[(&str, &str)]) -> Reply {
    request(site, Method::GET, path, headers).await
}

fn assert_404(reply: &Reply, what: &str) {
    assert_eq!(reply.status, 404, "{what}: {reply:?}");
    assert!(!reply.text().contains("SECRET"), "{what} leaked the secret");
}

#[tokio::test]
async fn serves_a_file_with_type_length_and_validators() {
    let tree = tree();
    let site = site(&tree.root);
    let reply = get(&site, "/notes.txt?cache=bust", &[]).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), NOTES);
    assert_eq!(reply.header("content-type"), Some("text/plain; charset=utf-8"));
    assert_eq!(reply.header("content-length"), Some(NOTES.len().to_string().as_str()));
    assert_eq!(reply.header("accept-ranges"), Some("bytes"));
    assert_eq!(reply.header("last-modified"), Some("Tue, 14 Nov 2023 22:13:20 GMT"));
    let etag = reply.header("etag").unwrap();
    let expected = format!("\"{:x}-{:x}\"", u128::from(NOTES_MTIME) * 1_000_000_000, NOTES.len());
    assert_eq!(etag, expected);
    // No sibling, so the answer does not depend on Accept-Encoding.
    assert_eq!(reply.header("vary"), None);
    assert_eq!(reply.header("content-encoding"), None);

    // The ETag follows the file: at once or, for a small file kept in memory,
    // once it has been looked up again (within a second).
    fs::write(tree.root.join("notes.txt"), "changed").unwrap();
    let changed_at = std::time::Instant::now();
    loop {
        let reply = get(&site, "/notes.txt", &[]).await;
        if reply.header("etag") != Some(expected.as_str()) {
            assert_eq!(reply.text(), "changed");
            break;
        }
        assert!(changed_at.elapsed() < Duration::from_secs(3), "the change never showed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    assert_404(&get(&site, "/missing.txt", &[]).await, "missing file");
    assert_404(&get(&site, "/notes.txt/", &[]).await, "a file asked for as a directory");
    assert_404(&get(&site, "/notes.txt/x", &[]).await, "below a file");

    // Removed: a 404 within the same bound.
    fs::remove_file(tree.root.join("notes.txt")).unwrap();
    let removed_at = std::time::Instant::now();
    while get(&site, "/notes.txt", &[]).await.status != 404 {
        assert!(removed_at.elapsed() < Duration::from_secs(3), "the removal never showed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn content_type_comes_from_the_extension() {
    let tree = tree();
    let site = site(&tree.root);
    for (path, ty) in [
        ("/index.html", "text/html; charset=utf-8"),
        ("/style.css", "text/css; charset=utf-8"),
        ("/app.js", "text/javascript; charset=utf-8"),
        ("/data.json", "application/json"),
        ("/logo.svg", "image/svg+xml"),
        ("/img.png", "image/png"),
        ("/photo.jpg", "image/jpeg"),
        ("/photo.JPEG", "image/jpeg"),
        ("/anim.gif", "image/gif"),
        ("/pic.webp", "image/webp"),
        ("/font.woff2", "font/woff2"),
        ("/mod.wasm", "application/wasm"),
        ("/notes.txt", "text/plain; charset=utf-8"),
        ("/blob.xyz", "application/octet-stream"),
        ("/noext", "application/octet-stream"),
        ("/big.bin", "application/octet-stream"),
        ("/", "text/html; charset=utf-8"),
        ("/inside.txt", "text/plain; charset=utf-8"),
    ] {
        let reply = request(&site, Method::HEAD, path, &[]).await;
        assert_eq!(reply.status, 200, "{path}");
        assert_eq!(reply.header("content-type"), Some(ty), "{path}");
    }
}

#[tokio::test]
async fn dot_dot_in_every_encoding_is_404() {
    let tree = tree();
    // The secret is there to be read, by a site rooted one level up: what the
    // attempts below reach for exists.
    let above = site(tree.tmp.path());
    assert_eq!(get(&above, "/secret.txt", &[]).await.text(), SECRET);

    let site = site(&tree.root);
    for path in [
        "/../secret.txt",
        "/docs/../../secret.txt",
        "/docs/..",
        "/%2e%2e/secret.txt",
        "/%2E%2E/secret.txt",
        "/.%2e/secret.txt",
        "/%2e./secret.txt",
        "/docs/%2e%2e/%2E%2E/secret.txt",
        "/..%2fsecret.txt",
        "/docs%2f..%2f..%2fsecret.txt",
        "/docs/..%2F..%2Fsecret.txt",
        "/..%5csecret.txt",
        "/docs%5c..%5c..%5csecret.txt",
        // A dot-dot that survives the decoding would be refused; a double
        // encoding is a literal name, which does not exist.
        "/%252e%252e/secret.txt",
        "/%2",
        "/%zz",
    ] {
        assert_404(&get(&site, path, &[]).await, path);
    }
    // Even a harmless encoded slash is refused: a segment is one file name.
    assert_404(&get(&site, "/docs%2fpage.txt", &[]).await, "%2f");
    assert_eq!(get(&site, "/docs/page.txt", &[]).await.status, 200);
    // Backslashes, raw or encoded, are refused even where a file is so named: a
    // separator elsewhere, never a name here.
    fs::write(tree.root.join("back\\slash.txt"), "named with a backslash").unwrap();
    for path in ["/..\\secret.txt", "/docs\\..\\..\\secret.txt", "/back\\slash.txt", "/back%5Cslash.txt"] {
        assert_404(&get(&site, path, &[]).await, path);
    }
}

#[tokio::test]
async fn dot_dot_is_refused_with_strip_prefix_too() {
    let tree = tree();
    let site = StaticSite::new(&tree.root, None, Some("/static")).unwrap();
    assert_eq!(get(&site, "/static/notes.txt", &[]).await.text(), NOTES);
    for path in
        ["/static/../secret.txt", "/static../secret.txt", "/static/%2e%2e/secret.txt", "/static%2f..%2fsecret.txt"]
    {
        assert_404(&get(&site, path, &[]).await, path);
    }
}

#[tokio::test]
async fn nul_is_404() {
    let tree = tree();
    let site = site(&tree.root);
    for path in ["/notes.txt%00", "/notes.txt%00.png", "/%00", "/docs/%00/page.txt"] {
        assert_404(&get(&site, path, &[]).await, path);
    }
    // A raw NUL never makes it into a request target.
    assert!("/notes.txt\0".parse::<Uri>().is_err());
}

#[tokio::test]
async fn symlinks_out_of_the_root_are_404_and_inside_are_followed() {
    let tree = tree();
    let site = site(&tree.root);
    for path in
        ["/escape", "/escape_relative.txt", "/escape_dir/secret.txt", "/escape_dir/", "/linked_index/", "/linked_index"]
    {
        assert_404(&get(&site, path, &[]).await, path);
    }
    let reply = get(&site, "/inside.txt", &[]).await;
    assert_eq!((reply.status, reply.text().as_str()), (200, NOTES));

    // A precompressed sibling leading out is not sent: the original is.
    let reply = get(&site, "/plain.txt", &[("accept-encoding", "br")]).await;
    assert_eq!((reply.status, reply.text().as_str()), (200, "plain"));
    assert_eq!(reply.header("content-encoding"), None);
}

#[tokio::test]
async fn directories_serve_their_index_or_404() {
    let tree = tree();
    let site = site(&tree.root);
    let reply = get(&site, "/", &[]).await;
    assert_eq!((reply.status, reply.text().as_str()), (200, "<h1>home</h1>"));
    let reply = get(&site, "/docs/", &[]).await;
    assert_eq!((reply.status, reply.text().as_str()), (200, "<h1>docs</h1>"));
    assert_eq!(reply.header("content-type"), Some("text/html; charset=utf-8"));

    // Without the slash relative links would break: to the slash first, query kept.
    let reply = get(&site, "/docs", &[]).await;
    assert_eq!((reply.status, reply.header("location")), (301, Some("/docs/")));
    let reply = get(&site, "/docs?lang=en", &[]).await;
    assert_eq!((reply.status, reply.header("location")), (301, Some("/docs/?lang=en")));

    // No index file: no listing.
    assert_404(&get(&site, "/bare/", &[]).await, "directory without index.html");
    assert_404(&get(&site, "/bare", &[]).await, "directory without index.html, no slash");
    assert_eq!(get(&site, "/bare/a.txt", &[]).await.text(), "in bare");

    // No index configured: no directory is served.
    let no_index = StaticSite::new(&tree.root, None, None).unwrap();
    assert_404(&get(&no_index, "/", &[]).await, "root without index");
    assert_404(&get(&no_index, "/docs/", &[]).await, "docs without index");
    assert_eq!(get(&no_index, "/docs/index.html", &[]).await.status, 200);
}

#[tokio::test]
async fn strip_prefix_drops_the_route_prefix() {
    let tree = tree();
    let alias = StaticSite::new(&tree.root, Some("index.html"), Some("/static/")).unwrap();
    assert_eq!(get(&alias, "/static/notes.txt", &[]).await.text(), NOTES);
    assert_eq!(get(&alias, "/static/", &[]).await.text(), "<h1>home</h1>");
    assert_404(&get(&alias, "/notes.txt", &[]).await, "outside the prefix");

    // Without it the path is looked up as is (nginx `root`).
    fs::create_dir(tree.root.join("static")).unwrap();
    fs::write(tree.root.join("static/notes.txt"), "under static/").unwrap();
    let rooted = site(&tree.root);
    assert_eq!(get(&rooted, "/static/notes.txt", &[]).await.text(), "under static/");
}

#[tokio::test]
async fn conditional_requests_get_304() {
    let tree = tree();
    let site = site(&tree.root);
    let first = get(&site, "/notes.txt", &[]).await;
    let etag = first.header("etag").unwrap().to_string();
    let modified = first.header("last-modified").unwrap().to_string();
    let earlier = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(NOTES_MTIME - 3600));
    let later = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(NOTES_MTIME + 3600));

    let not_modified = |reply: &Reply, what: &str| {
        assert_eq!(reply.status, 304, "{what}");
        assert!(reply.body.is_empty(), "{what}");
        assert_eq!(reply.header("etag"), Some(etag.as_str()), "{what}");
        assert_eq!(reply.header("last-modified"), Some(modified.as_str()), "{what}");
    };
    not_modified(&get(&site, "/notes.txt", &[("if-none-match", &etag)]).await, "same etag");
    not_modified(&get(&site, "/notes.txt", &[("if-none-match", &format!("W/{etag}"))]).await, "weak");
    not_modified(&get(&site, "/notes.txt", &[("if-none-match", &format!("\"x\", {etag}"))]).await, "in a list");
    not_modified(&get(&site, "/notes.txt", &[("if-none-match", "*")]).await, "star");
    not_modified(&get(&site, "/notes.txt", &[("if-modified-since", &modified)]).await, "same date");
    not_modified(&get(&site, "/notes.txt", &[("if-modified-since", &later)]).await, "later date");
    not_modified(&request(&site, Method::HEAD, "/notes.txt", &[("if-none-match", &etag)]).await, "HEAD");

    assert_eq!(get(&site, "/notes.txt", &[("if-none-match", "\"other\"")]).await.status, 200);
    let reply = get(&site, "/notes.txt", &[("if-modified-since", &earlier)]).await;
    assert_eq!((reply.status, reply.text().as_str()), (200, NOTES));
    assert_eq!(get(&site, "/notes.txt", &[("if-modified-since", "not a date")]).await.status, 200);

    // If-None-Match wins when both are sent, either way.
    let both = [("if-none-match", "\"other\""), ("if-modified-since", modified.as_str())];
    assert_eq!(get(&site, "/notes.txt", &both).await.status, 200);
    let both = [("if-none-match", etag.as_str()), ("if-modified-since", earlier.as_str())];
    assert_eq!(get(&site, "/notes.txt", &both).await.status, 304);
}

#[tokio::test]
async fn a_single_range_gets_206() {
    let tree = tree();
    let site = site(&tree.root);
    let len = NOTES.len();
    for (range, first, last) in
        [("bytes=0-4", 0, 4), ("bytes=7-", 7, len - 1), ("bytes=-6", len - 6, len - 1), ("bytes=3-999", 3, len - 1)]
    {
        let reply = get(&site, "/notes.txt", &[("range", range)]).await;
        assert_eq!(reply.status, 206, "{range}");
        assert_eq!(reply.body, NOTES.as_bytes()[first..=last], "{range}");
        assert_eq!(reply.header("content-range"), Some(format!("bytes {first}-{last}/{len}").as_str()), "{range}");
        assert_eq!(reply.header("content-length"), Some((last - first + 1).to_string().as_str()), "{range}");
        assert_eq!(reply.header("content-type"), Some("text/plain; charset=utf-8"));
        assert!(reply.header("etag").is_some());
    }
}

#[tokio::test]
async fn unsatisfiable_range_gets_416_and_several_ranges_the_whole_file() {
    let tree = tree();
    let site = site(&tree.root);
    let len = NOTES.len();
    for range in [format!("bytes={len}-"), format!("bytes={}-{}", len + 10, len + 20), "bytes=-0".to_string()] {
        let reply = get(&site, "/notes.txt", &[("range", &range)]).await;
        assert_eq!(reply.status, 416, "{range}");
        assert_eq!(reply.header("content-range"), Some(format!("bytes */{len}").as_str()), "{range}");
        assert!(reply.body.is_empty());
    }
    for range in ["bytes=0-1,4-5", "bytes=0-1, 3-", "bytes=5-1", "bytes=abc", "lines=1-2"] {
        let reply = get(&site, "/notes.txt", &[("range", range)]).await;
        assert_eq!((reply.status, reply.text().as_str()), (200, NOTES), "{range}");
        assert_eq!(reply.header("content-range"), None, "{range}");
    }
    // An empty file has no byte to point at: sent whole.
    assert_eq!(get(&site, "/empty.txt", &[("range", "bytes=0-")]).await.status, 200);
}

#[tokio::test]
async fn if_range_applies_the_range_only_to_the_same_file() {
    let tree = tree();
    let site = site(&tree.root);
    let first = get(&site, "/notes.txt", &[]).await;
    let etag = first.header("etag").unwrap().to_string();
    let modified = first.header("last-modified").unwrap().to_string();
    for (if_range, status) in
        [(etag.as_str(), 206), (modified.as_str(), 206), ("\"stale\"", 200), ("Thu, 01 Jan 1970 00:00:00 GMT", 200)]
    {
        let reply = get(&site, "/notes.txt", &[("range", "bytes=0-4"), ("if-range", if_range)]).await;
        assert_eq!(reply.status, status, "{if_range}");
    }
    let weak = format!("W/{etag}");
    assert_eq!(get(&site, "/notes.txt", &[("range", "bytes=0-4"), ("if-range", &weak)]).await.status, 200);
}

#[tokio::test]
async fn head_sends_the_headers_of_get_without_a_body() {
    let tree = tree();
    let site = site(&tree.root);
    for path in ["/notes.txt", "/big.bin", "/app.js"] {
        let get = get(&site, path, &[]).await;
        let head = request(&site, Method::HEAD, path, &[]).await;
        assert_eq!(head.status, 200);
        assert!(head.body.is_empty(), "{path}");
        assert_eq!(head.frames, 0, "{path}");
        assert_eq!(head.header("content-length"), Some(get.body.len().to_string().as_str()), "{path}");
        for name in ["content-type", "etag", "last-modified", "accept-ranges", "vary"] {
            assert_eq!(head.header(name), get.header(name), "{path} {name}");
        }
    }
    let head = request(&site, Method::HEAD, "/big.bin", &[("range", "bytes=100-199")]).await;
    assert_eq!((head.status, head.header("content-length"), head.body.len()), (206, Some("100"), 0));
}

#[tokio::test]
async fn other_methods_get_405_with_allow() {
    let tree = tree();
    let site = site(&tree.root);
    for method in [Method::POST, Method::PUT, Method::DELETE, Method::OPTIONS, Method::PATCH] {
        let reply = request(&site, method.clone(), "/notes.txt", &[]).await;
        assert_eq!(reply.status, 405, "{method}");
        assert_eq!(reply.header("allow"), Some("GET, HEAD"), "{method}");
    }
}

#[tokio::test]
async fn precompressed_siblings_follow_accept_encoding() {
    let tree = tree();
    let site = site(&tree.root);
    let identity = get(&site, "/app.js", &[]).await;
    assert_eq!(identity.text(), "content of app.js");
    assert_eq!(identity.header("vary"), Some("accept-encoding"), "a sibling exists");
    assert_eq!(identity.header("content-encoding"), None);

    for (accept, encoding, body) in [
        ("gzip, deflate, br", Some("br"), "BROTLI BYTES"),
        ("br", Some("br"), "BROTLI BYTES"),
        ("*", Some("br"), "BROTLI BYTES"),
        ("br;q=0, gzip", Some("gzip"), "GZIP BYTES"),
        ("gzip", Some("gzip"), "GZIP BYTES"),
        ("identity", None, "content of app.js"),
        ("br;q=0, gzip;q=0", None, "content of app.js"),
    ] {
        let reply = get(&site, "/app.js", &[("accept-encoding", accept)]).await;
        assert_eq!(reply.status, 200, "{accept}");
        assert_eq!(reply.header("content-encoding"), encoding, "{accept}");
        assert_eq!(reply.text(), body, "{accept}");
        assert_eq!(reply.header("content-length"), Some(body.len().to_string().as_str()), "{accept}");
        assert_eq!(reply.header("content-type"), Some("text/javascript; charset=utf-8"), "{accept}");
        assert_eq!(reply.header("vary"), Some("accept-encoding"), "{accept}");
    }

    // Each representation has its own ETag, and a 304 is per representation.
    let br = get(&site, "/app.js", &[("accept-encoding", "br")]).await;
    let br_etag = br.header("etag").unwrap();
    assert_ne!(Some(br_etag), identity.header("etag"));
    let reply = get(&site, "/app.js", &[("accept-encoding", "br"), ("if-none-match", br_etag)]).await;
    assert_eq!((reply.status, reply.header("vary")), (304, Some("accept-encoding")));

    // Only gzip next to style.css.
    let reply = get(&site, "/style.css", &[("accept-encoding", "br")]).await;
    assert_eq!((reply.header("content-encoding"), reply.text().as_str()), (None, "content of style.css"));
    assert_eq!(reply.header("vary"), Some("accept-encoding"));
    let reply = get(&site, "/style.css", &[("accept-encoding", "br, gzip")]).await;
    assert_eq!((reply.header("content-encoding"), reply.text().as_str()), (Some("gzip"), "GZIP CSS"));
    assert_eq!(reply.header("content-type"), Some("text/css; charset=utf-8"));

    // Not for ranges: those are of the file itself.
    let reply = get(&site, "/app.js", &[("accept-encoding", "br"), ("range", "bytes=0-6")]).await;
    assert_eq!((reply.status, reply.text().as_str()), (206, "content"));
    assert_eq!(reply.header("content-encoding"), None);
    assert_eq!(reply.header("vary"), Some("accept-encoding"));
}

#[tokio::test]
async fn a_large_file_streams_in_chunks() {
    let tree = tree();
    let site = site(&tree.root);
    let reply = get(&site, "/big.bin", &[]).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.error, None);
    assert_eq!(reply.header("content-length"), Some(BIG_LEN.to_string().as_str()));
    assert_eq!(reply.body.len() as u64, BIG_LEN);
    assert!(reply.frames >= 8, "streamed in chunks, not one buffer: {} frames", reply.frames);
    assert!(reply.largest_frame <= 256 * 1024, "chunks of at most 256 KiB: {}", reply.largest_frame);
    for (offset, mark) in BIG_MARKS {
        let at = offset as usize;
        assert_eq!(&reply.body[at..at + mark.len()], mark, "bytes at {offset}");
    }

    // A range in the middle of it, across chunk boundaries.
    let first = 5 * 1024 * 1024;
    let last = first + 1024 * 1024;
    let range = format!("bytes={first}-{last}");
    let reply = get(&site, "/big.bin", &[("range", &range)]).await;
    assert_eq!(reply.status, 206);
    assert_eq!(reply.body.len() as u64, last - first + 1);
    assert!(reply.frames > 1);
    assert_eq!(&reply.body[7..13], b"MIDDLE");
}

#[tokio::test]
async fn a_read_error_ends_the_body_with_an_error() {
    let tree = tree();
    let site = site(&tree.root);
    let response = site.serve(&Method::GET, &"/big.bin".parse().unwrap(), &HeaderMap::new()).await;
    assert_eq!(response.headers()["content-length"], BIG_LEN.to_string().as_str());
    let mut body = response.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert!(!first.is_empty());
    // The file shrinks under the response that promised 8 MiB.
    File::options().write(true).open(tree.root.join("big.bin")).unwrap().set_len(0).unwrap();
    let mut sent = first.len() as u64;
    let error = loop {
        match body.frame().await {
            Some(Ok(frame)) => sent += frame.into_data().map_or(0, |data| data.len() as u64),
            Some(Err(err)) => break err.to_string(),
            None => panic!("the body ended cleanly after {sent} of {BIG_LEN} bytes"),
        }
    };
    assert!(sent < BIG_LEN);
    assert!(error.contains("shrank"), "{error}");
    assert!(body.frame().await.is_none(), "nothing after the error");
}

#[tokio::test]
async fn special_files_are_404_without_blocking() {
    let tree = tree();
    let fifo = tree.root.join("pipe.txt");
    let status = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(status.success());
    let site = site(&tree.root);
    let reply = tokio::time::timeout(Duration::from_secs(2), get(&site, "/pipe.txt", &[])).await;
    if reply.is_err() {
        // The lookup is stuck in open(2) waiting for a writer: be that writer, so
        // the test fails instead of hanging the runtime's shutdown.
        let _unblock =
            std::os::unix::fs::OpenOptionsExt::custom_flags(File::options().write(true), libc::O_NONBLOCK).open(&fifo);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_404(&reply.expect("a FIFO must not block the lookup"), "a FIFO");
}

#[test]
fn new_checks_root_and_index() {
    let tree = tree();
    assert!(StaticSite::new(&tree.root.join("missing"), None, None).is_err());
    assert!(StaticSite::new(&tree.root.join("notes.txt"), None, None).is_err());
    for index in ["", ".", "..", "a/b", "../index.html", "a\\b"] {
        assert!(StaticSite::new(&tree.root, Some(index), None).is_err(), "{index:?}");
    }
    // A root reached through a symlink is canonicalized: files under it are inside.
    let link = tree.tmp.path().join("link_to_site");
    symlink(&tree.root, &link).unwrap();
    let site = StaticSite::new(&link, None, None).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    assert_eq!(runtime.block_on(get(&site, "/notes.txt", &[])).text(), NOTES);
}

/// Over a real HTTP/1.1 connection: hyper keeps a HEAD's Content-Length and sends
/// a streamed file whole.
#[tokio::test]
async fn over_hyper_head_keeps_its_length_and_get_streams() {
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let tree = tree();
    let site = Arc::new(site(&tree.root));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let site = Arc::clone(&site);
            let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let site = Arc::clone(&site);
                async move { Ok::<_, std::convert::Infallible>(site.serve(req.method(), req.uri(), req.headers()).await) }
            });
            tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service));
        }
    });

    let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
    client.write_all(b"HEAD /big.bin HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    let head = read_head(&mut client).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains(&format!("content-length: {BIG_LEN}\r\n")), "{head}");

    // Same connection: nothing of a body followed the HEAD's head.
    client.write_all(b"GET /big.bin HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await.unwrap();
    let head = read_head(&mut client).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let mut body = Vec::new();
    client.read_to_end(&mut body).await.unwrap();
    assert_eq!(body.len() as u64, BIG_LEN);
    assert_eq!(&body[body.len() - 3..], b"END");
}

/// Reads a response head byte by byte (so no body byte is consumed).
async fn read_head(stream: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(stream.read_u8().await.unwrap());
    }
    String::from_utf8(head).unwrap()
}
