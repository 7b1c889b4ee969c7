//! Serving a directory.
//!
//! A request path is percent-decoded, split into segments and joined onto the root;
//! `..` segments (plain or encoded as `%2e%2e`) are refused with 403, a path that
//! resolves (through symlinks) outside the root is refused with 403, and a missing
//! file is 404. A directory is answered with its `index.html` (`/dir` is first
//! redirected to `/dir/`); there are no directory listings. Files get a `Content-Type` from their extension and a
//! `Last-Modified` date; `If-Modified-Since` is answered with 304.
//!
//! # Zero-copy
//!
//! Files above 64 KiB are handed to the transport's
//! [`send_file`](oxloop::protocol::Transport::send_file): the range waits in the
//! connection's write buffer behind the response head (and any earlier pipelined
//! response) and goes out with `sendfile(2)` as the socket drains, never through user
//! space. Serving a 1 MiB file this way costs the server about a third of the CPU time
//! of reading and writing it (see `docs/bench-http.md`). Files up to 64 KiB are read
//! and sent from one buffer together with their head: one `send` instead of a `send`
//! and a `sendfile`.

use crate::{Config, HttpServer, Request, Response};
use oxloop::cluster::{Cluster, SharedAddrs};
use oxloop::EventLoop;
use std::fs::OpenOptions;
use std::io::{self, Read};
use std::net::ToSocketAddrs;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Files up to this size are read at once and sent with the head.
const SMALL_FILE: u64 = 64 * 1024;

/// A handler serving the files under one directory (see the module documentation for
/// the rules).
///
/// ```no_run
/// use oxloop::EventLoop;
/// use oxloop_http::{Config, HttpServer, StaticFiles};
///
/// let ev = EventLoop::new()?;
/// let files = StaticFiles::new("./public")?;
/// HttpServer::bind(&ev, "127.0.0.1:8080", Config::default(), move |req| files.handle(req))?;
/// ev.run()?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct StaticFiles {
    root: PathBuf,
}

/// Listens on `addr` and serves the files under `dir` (GET and HEAD), with `config`'s
/// limits. What `oxloop serve-http` runs.
pub fn serve_dir(
    ev: &EventLoop,
    addr: impl ToSocketAddrs,
    dir: impl AsRef<Path>,
    config: Config,
) -> io::Result<HttpServer> {
    let files = StaticFiles::new(dir)?;
    HttpServer::bind(ev, addr, config, move |req| files.handle(req))
}

impl StaticFiles {
    /// Serves `root`, which must be a directory (it is resolved to its canonical path
    /// once, here).
    pub fn new(root: impl AsRef<Path>) -> io::Result<StaticFiles> {
        let root = root.as_ref().canonicalize()?;
        if !root.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a directory", root.display()),
            ));
        }
        Ok(StaticFiles { root })
    }

    /// The directory served.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Answers one request.
    pub fn handle(&self, req: &Request) -> Response {
        match req.method() {
            "GET" | "HEAD" => {}
            _ => return Response::error(405).header("Allow", "GET, HEAD"),
        }
        let path = match self.resolve(req.path()) {
            Ok(Resolved::File(path)) => path,
            Ok(Resolved::Directory) => {
                // `/dir` → `/dir/`, so that relative links in its index work. Leading
                // slashes are collapsed: `//host/dir/` would send the client to `host`.
                let mut location = format!("/{}/", req.path().trim_start_matches('/'));
                if let Some(q) = req.query() {
                    location.push('?');
                    location.push_str(q);
                }
                return Response::error(301).header("Location", location);
            }
            Err(status) => return Response::error(status),
        };
        match self.open(&path, req) {
            Ok(r) => r,
            Err(e) => Response::error(status_for(&e)),
        }
    }

    /// Maps a URL path to a file under the root, or the status refusing it.
    fn resolve(&self, url_path: &str) -> Result<Resolved, u16> {
        let decoded = percent_decode(url_path.as_bytes()).ok_or(400u16)?;
        if !decoded.starts_with(b"/") || decoded.contains(&0) {
            return Err(400);
        }
        let mut path = self.root.clone();
        for segment in decoded.split(|&b| b == b'/') {
            match segment {
                b"" | b"." => {}
                b".." => return Err(403),
                s => {
                    let s = std::str::from_utf8(s).map_err(|_| 404u16)?;
                    path.push(s);
                }
            }
        }
        // Follow symlinks, then check the result is still under the root.
        let real = path.canonicalize().map_err(|e| status_for(&e))?;
        if !real.starts_with(&self.root) {
            return Err(403);
        }
        if real.is_dir() {
            if !url_path.ends_with('/') {
                return Ok(Resolved::Directory);
            }
            let index = real.join("index.html");
            let index = index.canonicalize().map_err(|e| status_for(&e))?;
            if !index.starts_with(&self.root) {
                return Err(403);
            }
            return Ok(Resolved::File(index));
        }
        Ok(Resolved::File(real))
    }

    fn open(&self, path: &Path, req: &Request) -> io::Result<Response> {
        // O_NOFOLLOW: the path was resolved already; refuse a symlink swapped in since.
        let mut file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)?;
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(io::Error::from(io::ErrorKind::NotFound));
        }
        let modified = meta.modified().ok();
        let content_type = content_type(path);
        if let (Some(mtime), Some(since)) = (modified, req.header_str("if-modified-since")) {
            if let Ok(since) = httpdate::parse_http_date(since) {
                if secs(mtime) <= secs(since) {
                    return Ok(
                        Response::new(304).header("Last-Modified", httpdate::fmt_http_date(mtime))
                    );
                }
            }
        }
        let len = meta.len();
        let mut r = if len <= SMALL_FILE {
            let mut data = Vec::with_capacity(len as usize);
            file.by_ref().take(len).read_to_end(&mut data)?;
            Response::bytes(content_type, data)
        } else {
            Response::file(file, len).content_type(content_type)
        };
        if let Some(mtime) = modified {
            r = r.header("Last-Modified", httpdate::fmt_http_date(mtime));
        }
        Ok(r)
    }
}

/// What a URL path names.
enum Resolved {
    /// A file (a directory's `index.html` for a path ending in `/`).
    File(PathBuf),
    /// A directory named without the final `/`.
    Directory,
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn status_for(e: &io::Error) -> u16 {
    match e.kind() {
        io::ErrorKind::NotFound => 404,
        io::ErrorKind::PermissionDenied => 403,
        _ if e.raw_os_error() == Some(libc::ELOOP) => 403,
        _ if e.raw_os_error() == Some(libc::ENOTDIR) => 404,
        _ => 500,
    }
}

/// Decodes `%XX` escapes; `None` for a malformed escape.
fn percent_decode(input: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'%' {
            let hi = hex_value(*input.get(i + 1)?)?;
            let lo = hex_value(*input.get(i + 2)?)?;
            out.push(hi * 16 + lo);
            i += 3;
        } else {
            out.push(input[i]);
            i += 1;
        }
    }
    Some(out)
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The `Content-Type` for a file name's extension.
pub(crate) fn content_type(path: &Path) -> &'static str {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    match ext.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "json" => "application/json",
        "txt" | "md" => "text/plain; charset=utf-8",
        "xml" => "application/xml",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "ico" => "image/x-icon",
        "wasm" => "application/wasm",
        "pdf" => "application/pdf",
        "zip" => "application/zip",
        "gz" => "application/gzip",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        "mp4" => "video/mp4",
        "mp3" => "audio/mpeg",
        _ => "application/octet-stream",
    }
}

/// Serves `dir` on `bind:port` with one log line per request on standard error, until
/// SIGINT or SIGTERM: the first shuts down gracefully after the requests in progress,
/// a second exits at once. With `threads` above 1, that many loops serve the port
/// (an `oxloop::cluster`, `SO_REUSEPORT`). This is `oxloop serve-http`; errors come
/// back as messages for the user. Unless the program installed a `tracing` subscriber
/// of its own, one is installed that writes events at INFO and above to standard error.
pub fn serve_dir_forever(dir: &str, bind: &str, port: u16, threads: usize) -> Result<(), String> {
    // Err: the program has a subscriber already, which then gets the lines.
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing::Level::INFO)
        .try_init();
    let addr = if bind.contains(':') {
        format!("[{bind}]:{port}")
    } else {
        format!("{bind}:{port}")
    };
    let cannot = |e: io::Error| format!("cannot serve {dir} on {addr}: {e}");
    let ev = oxloop::EventLoop::new().map_err(|e| e.to_string())?;
    if threads <= 1 {
        let server = serve_dir(
            &ev,
            addr.as_str(),
            dir,
            crate::Config::default().log_requests(true),
        )
        .map_err(cannot)?;
        println!("serving {dir} on http://{}", server.local_addr());
        let shutdown = move |done: Box<dyn FnOnce()>| server.shutdown(done);
        return run_until_signalled(&ev, shutdown);
    }
    StaticFiles::new(dir).map_err(cannot)?;
    let addrs = SharedAddrs::new(addr.to_socket_addrs().map_err(cannot)?.collect());
    let for_loops = addrs.clone();
    let root = dir.to_string();
    let cluster = Cluster::start(threads, move |ev, _| {
        let config = crate::Config::default().log_requests(true).reuse_port(true);
        let server = serve_dir(ev, &for_loops.get()[..], &root, config)?;
        for_loops.set(vec![server.local_addr()]);
        Cluster::on_shutdown(move || server.shutdown(|| {}));
        Ok(())
    })
    .map_err(cannot)?;
    println!(
        "serving {dir} with {threads} loops on http://{}",
        addrs.get()[0]
    );
    let handle = cluster.shutdown_handle();
    // The main thread's loop waits for the signals, and for the cluster to end.
    let remote = ev.remote();
    let joiner = std::thread::spawn(move || {
        let outcomes = cluster.join();
        let _ = remote.stop();
        outcomes
    });
    run_until_signalled(&ev, move |_done| handle.shutdown())?;
    let failed: Vec<String> = joiner
        .join()
        .map_err(|_| "a loop's thread panicked".to_string())?
        .into_iter()
        .filter_map(|outcome| outcome.err().map(|e| e.to_string()))
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(failed.join("; "))
    }
}

/// Runs `ev` until it is stopped; the first SIGINT or SIGTERM calls `shutdown` (with
/// a callback that stops `ev`), a second exits the process.
fn run_until_signalled(
    ev: &oxloop::EventLoop,
    shutdown: impl Fn(Box<dyn FnOnce()>) + 'static,
) -> Result<(), String> {
    let shutdown = std::rc::Rc::new(shutdown);
    let asked = std::rc::Rc::new(std::cell::Cell::new(false));
    for signal in [libc::SIGINT, libc::SIGTERM] {
        let (shutdown, asked, ev2) = (shutdown.clone(), asked.clone(), ev.clone());
        ev.add_signal_handler(signal, move || {
            if asked.replace(true) {
                std::process::exit(130);
            }
            tracing::info!(target: "oxloop_http", "shutting down after the requests in progress");
            let ev3 = ev2.clone();
            shutdown(Box::new(move || ev3.stop()));
        })
        .map_err(|e| e.to_string())?;
    }
    ev.run_forever().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoding_and_types() {
        assert_eq!(percent_decode(b"/a%2e%2E/b").unwrap(), b"/a../b");
        assert!(percent_decode(b"/%2").is_none());
        assert!(percent_decode(b"/%zz").is_none());
        assert_eq!(
            content_type(Path::new("x.HTML")),
            "text/html; charset=utf-8"
        );
        assert_eq!(content_type(Path::new("x")), "application/octet-stream");
    }
}
