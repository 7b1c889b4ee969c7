//! Web serving: ASGI and WSGI applications on oxloop-http.
//!
//! HTTP itself (parsing, limits, keep-alive, pipelining, writing responses) is
//! oxloop-http's, on the core loop of the Python loop object; Python sees only the
//! application call. `asgi.rs` runs ASGI applications as asyncio tasks on the loop's
//! own thread; `wsgi.rs` runs WSGI applications on a pool of threads. This file holds
//! what both share: the server object, its settings, the request's facts, and the
//! Python objects kept from one request for the next.

use crate::loop_core::{os_error, LoopCore};
use crate::running::{self, LoopCell, LoopShared};
use oxloop_http::{Config, HttpServer, Request, Response};
use pyo3::exceptions::PyValueError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
use std::borrow::Cow;
use std::cell::RefCell;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// A running HTTP server of a Python loop (from `_serve_asgi` or `_serve_wsgi`).
#[pyclass(frozen, module = "oxloop._oxloop")]
pub struct WebServer {
    /// The server; only the loop's thread may touch it (see `running`).
    server: LoopCell<HttpServer>,
    running: Arc<LoopShared>,
    addr: SocketAddr,
}

impl WebServer {
    pub(crate) fn new(server: HttpServer, running: Arc<LoopShared>) -> WebServer {
        WebServer {
            addr: server.local_addr(),
            server: LoopCell::new(server),
            running,
        }
    }

    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

#[pymethods]
impl WebServer {
    /// The address listened on, `(host, port)`.
    #[getter]
    fn address(&self) -> (String, u16) {
        (self.addr.ip().to_string(), self.addr.port())
    }

    /// Connections open now.
    fn connections(&self, py: Python<'_>) -> PyResult<usize> {
        Ok(self.server.get(py, &self.running)?.connections())
    }

    /// Graceful shutdown: stops listening, closes idle connections, lets requests in
    /// progress finish; `done()` is called on the loop once no connection is left.
    fn shutdown(&self, py: Python<'_>, done: Py<PyAny>) -> PyResult<()> {
        self.server.get(py, &self.running)?.shutdown(move || {
            running::with_gil(|py| {
                if let Err(err) = done.call0(py) {
                    err.write_unraisable(py, None);
                }
            })
        });
        Ok(())
    }
}

/// The server settings given from Python (`oxloop.web`'s keyword arguments).
pub(crate) fn config(options: Option<&Bound<'_, PyDict>>) -> PyResult<Config> {
    let mut config = Config::default().peer_addrs(true);
    let Some(options) = options else {
        return Ok(config);
    };
    for (key, value) in options.iter() {
        let key: String = key.extract()?;
        let seconds = |v: &Bound<'_, PyAny>| -> PyResult<Duration> {
            Duration::try_from_secs_f64(v.extract()?)
                .map_err(|e| PyValueError::new_err(format!("{key}: {e}")))
        };
        config = match key.as_str() {
            "max_head_bytes" => config.max_head_bytes(value.extract()?),
            "max_body_bytes" => config.max_body_bytes(value.extract()?),
            "head_timeout" => config.head_timeout(seconds(&value)?),
            "body_timeout" => config.body_timeout(seconds(&value)?),
            "idle_timeout" => config.idle_timeout(seconds(&value)?),
            "max_connections" => config.max_connections(value.extract()?),
            "reuse_port" => config.reuse_port(value.extract()?),
            "server_name" => config.server_name(value.extract::<String>()?),
            "access_log" => {
                let on: bool = value.extract()?;
                if on {
                    // The request log is a `tracing` event; without a subscriber of
                    // the program's own, it goes to stderr.
                    let _ = tracing_subscriber::fmt()
                        .with_writer(std::io::stderr)
                        .with_ansi(false)
                        .try_init();
                }
                config.log_requests(on)
            }
            other => {
                return Err(PyValueError::new_err(format!(
                    "unknown server setting {other:?}"
                )))
            }
        };
    }
    Ok(config)
}

/// Binds `host:port` on `event_loop`'s core with `bind`.
pub(crate) fn bind(
    event_loop: &Bound<'_, LoopCore>,
    host: &str,
    port: u16,
    bind: impl FnOnce(&oxloop::EventLoop, (&str, u16)) -> std::io::Result<HttpServer>,
) -> PyResult<WebServer> {
    let ev = event_loop.get().event_loop(event_loop.py())?;
    let server = bind(&ev, (host, port)).map_err(os_error)?;
    Ok(WebServer::new(server, event_loop.get().running_state()))
}

/// The request's method as a `str`, unless it is `GET` (what the per-server environ
/// and scope hold already); the common ones are made once.
pub(crate) fn method_unless_get<'py>(
    py: Python<'py>,
    req: &Request,
) -> Option<Bound<'py, PyString>> {
    let method = match req.method() {
        "GET" => return None,
        "POST" => intern!(py, "POST"),
        "HEAD" => intern!(py, "HEAD"),
        "PUT" => intern!(py, "PUT"),
        "DELETE" => intern!(py, "DELETE"),
        "OPTIONS" => intern!(py, "OPTIONS"),
        "PATCH" => intern!(py, "PATCH"),
        other => return Some(PyString::new(py, other)),
    };
    Some(method.clone())
}

/// The request target's path, percent-decoded (UTF-8, invalid sequences replaced).
pub(crate) fn decoded_path(req: &Request) -> Cow<'_, str> {
    percent_encoding::percent_decode_str(req.path()).decode_utf8_lossy()
}

/// A header value from the application as text: UTF-8 when it is, else Latin-1 (the
/// bytes HTTP allows).
pub(crate) fn header_text(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_owned(),
        Err(_) => bytes.iter().map(|&b| b as char).collect(),
    }
}

/// A Python object made from the last client's address, kept for the next request
/// from the same address (the requests of a keep-alive connection share it).
pub(crate) struct LastClient<T>(RefCell<Option<(SocketAddr, Py<T>)>>);

impl<T> LastClient<T> {
    pub(crate) fn new() -> LastClient<T> {
        LastClient(RefCell::new(None))
    }

    /// The object for `addr`: the kept one, or a new one from `make`.
    pub(crate) fn get<'py>(
        &self,
        py: Python<'py>,
        addr: SocketAddr,
        make: impl FnOnce(SocketAddr) -> PyResult<Bound<'py, T>>,
    ) -> PyResult<Bound<'py, T>> {
        if let Some((known, object)) = &*self.0.borrow() {
            if *known == addr {
                return Ok(object.bind(py).clone());
            }
        }
        let object = make(addr)?;
        *self.0.borrow_mut() = Some((addr, object.clone().unbind()));
        Ok(object)
    }
}

/// Python objects made from header names (environ keys, lower-case names), kept by
/// the name as clients spell it: at most [`HeaderNames::KEPT`] names of at most
/// [`HeaderNames::LONGEST`] bytes, a new name taking the place of the oldest kept one
/// when all places are taken (so a client sending ever new names neither grows it nor
/// keeps the common names out for good).
pub(crate) struct HeaderNames<T>(RefCell<Kept<T>>);

struct Kept<T> {
    /// A header name as a client spelled it, and its object.
    names: Vec<(Box<[u8]>, Py<T>)>,
    /// The place the next new name takes once `names` is full.
    next: usize,
}

impl<T> HeaderNames<T> {
    /// How many names are kept.
    const KEPT: usize = 64;
    /// The longest name kept.
    const LONGEST: usize = 64;

    pub(crate) fn new() -> HeaderNames<T> {
        HeaderNames(RefCell::new(Kept {
            names: Vec::new(),
            next: 0,
        }))
    }

    /// The object for `name`: the kept one, or a new one from `make`.
    pub(crate) fn get<'py>(
        &self,
        py: Python<'py>,
        name: &[u8],
        make: impl FnOnce(&[u8]) -> PyResult<Bound<'py, T>>,
    ) -> PyResult<Bound<'py, T>> {
        if let Some((_, object)) = self.0.borrow().names.iter().find(|(n, _)| **n == *name) {
            return Ok(object.bind(py).clone());
        }
        let object = make(name)?;
        if name.len() <= Self::LONGEST {
            let mut kept = self.0.borrow_mut();
            let entry = (name.into(), object.clone().unbind());
            if kept.names.len() < Self::KEPT {
                kept.names.push(entry);
            } else {
                let at = kept.next;
                kept.names[at] = entry;
                kept.next = (at + 1) % Self::KEPT;
            }
        }
        Ok(object)
    }
}

/// `response` with the application's headers: `Content-Type` as the response's own,
/// the others as given. oxloop-http drops the ones it writes itself
/// (`Content-Length`, `Transfer-Encoding`, `Date`, `Server`, `Connection`), and any
/// that is not a valid header.
pub(crate) fn with_headers(mut response: Response, headers: Vec<(String, String)>) -> Response {
    for (name, value) in headers {
        if name.eq_ignore_ascii_case("content-type") {
            response = response.content_type(value);
        } else {
            response = response.header(name, value);
        }
    }
    response
}
