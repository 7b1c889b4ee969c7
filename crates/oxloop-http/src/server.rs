//! The listening side: connection accounting, the connection limit and graceful
//! shutdown.

use crate::conn::HttpProtocol;
use crate::head::ResponseStart;
use crate::shared::{Handler, ResponseFuture, Shared};
use crate::{Config, Request, Response};
use oxloop::protocol::{LoopNetExt, ServerOptions};
use oxloop::EventLoop;
use slab::Slab;
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::rc::Rc;

/// An HTTP/1.1 server running on an oxloop [`EventLoop`].
///
/// ```no_run
/// use oxloop::EventLoop;
/// use oxloop_http::{Config, HttpServer, Response};
///
/// let ev = EventLoop::new()?;
/// let server = HttpServer::bind(&ev, "127.0.0.1:8080", Config::default(), |req| {
///     Response::text(format!("you asked for {}\n", req.path()))
/// })?;
/// println!("listening on {}", server.local_addr());
/// ev.run()?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone)]
pub struct HttpServer {
    shared: Rc<Shared>,
    addr: SocketAddr,
}

impl std::fmt::Debug for HttpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpServer")
            .field("addr", &self.addr)
            .field("connections", &self.connections())
            .finish()
    }
}

impl HttpServer {
    /// Listens on `addr` and answers every request by calling `handler` on the loop,
    /// with the whole request body read. The fastest kind of handler: nothing is
    /// spawned or boxed per request.
    pub fn bind(
        ev: &EventLoop,
        addr: impl ToSocketAddrs,
        config: Config,
        handler: impl Fn(&Request) -> Response + 'static,
    ) -> io::Result<HttpServer> {
        HttpServer::start(ev, addr, config, Handler::Sync(Box::new(handler)))
    }

    /// Listens on `addr` and answers every request with an async handler. Its future
    /// is polled once at once, inside the connection's read callback (while the
    /// connection is in use: it must not run the loop); if it is not ready then, it
    /// runs on as an oxloop task. The request body is streamed
    /// ([`Request::take_body`]). Requests of one connection are handled one after
    /// the other, so pipelined responses keep their order.
    pub fn bind_async<F, Fut>(
        ev: &EventLoop,
        addr: impl ToSocketAddrs,
        config: Config,
        handler: F,
    ) -> io::Result<HttpServer>
    where
        F: Fn(Request) -> Fut + 'static,
        Fut: Future<Output = Response> + 'static,
    {
        let handler = move |req: Request| -> ResponseFuture { Box::pin(handler(req)) };
        HttpServer::start(ev, addr, config, Handler::Async(Box::new(handler)))
    }

    fn start(
        ev: &EventLoop,
        addr: impl ToSocketAddrs,
        config: Config,
        handler: Handler,
    ) -> io::Result<HttpServer> {
        let response_start = ResponseStart::new(&config.server_name);
        let shared = Rc::new(Shared {
            ev: ev.clone(),
            config,
            handler,
            response_start,
            conns: RefCell::new(Slab::new()),
            shutting_down: Cell::new(false),
            listener: RefCell::new(None),
            accept_paused: Cell::new(false),
            on_drained: RefCell::new(None),
        });
        let for_factory = shared.clone();
        let options = ServerOptions::default().reuse_port(shared.config.reuse_port);
        let listener = ev.create_server_with(addr, &options, move || {
            HttpProtocol::new(for_factory.clone())
        })?;
        let addr = *listener.socket_addrs().first().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "no internet address to listen on",
            )
        })?;
        *shared.listener.borrow_mut() = Some(listener);
        Ok(HttpServer { shared, addr })
    }

    /// The address the server listens on (with the port chosen for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections open now.
    pub fn connections(&self) -> usize {
        self.shared.conns.borrow().len()
    }

    /// Whether [`shutdown`](HttpServer::shutdown) was called.
    pub fn is_shutting_down(&self) -> bool {
        self.shared.shutting_down.get()
    }

    /// Graceful shutdown: stops listening, closes idle connections, lets the others
    /// finish the request in progress (its response says `Connection: close`) and
    /// then closes them. `done` runs once the last connection is gone (at once if
    /// none is open). The loop's `run()` returns when nothing else keeps it busy.
    pub fn shutdown(&self, done: impl FnOnce() + 'static) {
        if self.shared.shutting_down.replace(true) {
            return;
        }
        let listener = self.shared.listener.borrow_mut().take();
        if let Some(l) = listener {
            l.close();
        }
        *self.shared.on_drained.borrow_mut() = Some(Box::new(done));
        let conns: Vec<_> = self
            .shared
            .conns
            .borrow()
            .iter()
            .filter_map(|(_, w)| w.upgrade())
            .collect();
        for conn in conns {
            conn.shut_down();
        }
        if self.connections() == 0 {
            let done = self.shared.on_drained.borrow_mut().take();
            if let Some(done) = done {
                done();
            }
        }
    }
}
