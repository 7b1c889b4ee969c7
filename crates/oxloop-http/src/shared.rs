//! What the connections of one server share with it, so that neither the server nor a
//! connection needs the other's module: the handler, the configuration, the
//! connection count and the connections to shut down gracefully.

use crate::head::ResponseStart;
use crate::{Config, Request, Response};
use oxloop::protocol::Server;
use oxloop::EventLoop;
use slab::Slab;
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Weak;

/// A boxed response future (async handlers).
pub(crate) type ResponseFuture = Pin<Box<dyn Future<Output = Response>>>;

/// The application.
pub(crate) enum Handler {
    /// Called on the loop for every request, with the whole body.
    Sync(Box<dyn Fn(&Request) -> Response>),
    /// Called for every request; the future runs as an oxloop task.
    Async(Box<dyn Fn(Request) -> ResponseFuture>),
}

/// A connection as the server sees it: something to shut down gracefully.
pub(crate) trait Tracked {
    /// Closes the connection if idle, else after the response in progress.
    fn shut_down(&self);
}

/// What every connection of a server shares.
pub(crate) struct Shared {
    pub ev: EventLoop,
    pub config: Config,
    pub handler: Handler,
    /// The `Server` and `Date` headers every response starts with.
    pub response_start: ResponseStart,
    pub conns: RefCell<Slab<Weak<dyn Tracked>>>,
    pub shutting_down: Cell<bool>,
    pub listener: RefCell<Option<Server>>,
    /// Accepting is paused because of `max_connections`.
    pub accept_paused: Cell<bool>,
    pub on_drained: RefCell<Option<Box<dyn FnOnce()>>>,
}

impl Shared {
    /// Records a new connection; stops accepting at the limit. Returns its key and
    /// whether it is over the limit (the listener accepts a burst of connections per
    /// readiness report, so a few can arrive after accepting was stopped).
    pub(crate) fn register(&self, conn: Weak<dyn Tracked>) -> (usize, bool) {
        let (key, open) = {
            let mut conns = self.conns.borrow_mut();
            (conns.insert(conn), conns.len())
        };
        if open >= self.config.max_connections && !self.accept_paused.replace(true) {
            if let Some(l) = &*self.listener.borrow() {
                l.stop_accepting();
            }
        }
        (key, open > self.config.max_connections)
    }

    /// Forgets a closed connection; resumes accepting below the limit, and reports
    /// the end of a graceful shutdown.
    pub(crate) fn unregister(&self, key: usize) {
        let open = {
            let mut conns = self.conns.borrow_mut();
            if conns.contains(key) {
                conns.remove(key);
            }
            conns.len()
        };
        if self.shutting_down.get() {
            if open == 0 {
                let done = self.on_drained.borrow_mut().take();
                if let Some(done) = done {
                    done();
                }
            }
        } else if open < self.config.max_connections && self.accept_paused.replace(false) {
            if let Some(l) = &*self.listener.borrow() {
                if let Err(e) = l.resume_accepting() {
                    tracing::error!(target: "oxloop_http", "cannot resume accepting: {e}");
                }
            }
        }
    }
}
