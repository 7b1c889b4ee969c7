//! Loop per core: several threads, each running its own [`EventLoop`], doing the same
//! work — typically serving one address, which the kernel spreads over the loops with
//! `SO_REUSEPORT`.
//!
//! oxloop's loop is single-threaded by design (`Rc`, no locks on the hot path); a
//! cluster is how a program uses every core: no state is shared between the loops, so
//! each scales like a process of its own, and [`LoopRemote`] is the one way between
//! them.
//!
//! ```no_run
//! use oxloop::cluster::Cluster;
//! use oxloop::protocol::{Protocol, Transport};
//!
//! struct Echo(Option<Transport>);
//! impl Protocol for Echo {
//!     fn connection_made(&mut self, t: Transport) { self.0 = Some(t); }
//!     fn data_received(&mut self, data: &[u8]) {
//!         let _ = self.0.as_ref().unwrap().write(data);
//!     }
//! }
//!
//! let cluster = Cluster::serve("127.0.0.1:7000", 2, || Echo(None))?;
//! // ... later, from any thread: stop accepting, let the connections finish.
//! cluster.shutdown();
//! for outcome in cluster.join() {
//!     outcome?;
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use crate::protocol::{LoopNetExt, Protocol, Server, ServerOptions};
use crate::{EventLoop, LoopRemote};
use std::any::Any;
use std::cell::RefCell;
use std::fmt;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{mpsc, Arc};
use std::thread::{self, JoinHandle};

/// What [`Cluster::shutdown`] runs on a loop.
type OnShutdown = Box<dyn FnOnce()>;

thread_local! {
    /// The servers a cluster loop on this thread serves (for their addresses).
    static SERVERS: RefCell<Vec<Server>> = const { RefCell::new(Vec::new()) };
    /// What [`Cluster::shutdown`] runs on this thread's cluster loop.
    static ON_SHUTDOWN: RefCell<Vec<OnShutdown>> = const { RefCell::new(Vec::new()) };
}

/// Several threads, each with its own event loop (see the [module docs](self)).
pub struct Cluster {
    remotes: Vec<LoopRemote>,
    threads: Vec<JoinHandle<Result<(), LoopFailed>>>,
    addrs: Vec<SocketAddr>,
}

/// How one loop of a cluster ended badly.
#[derive(Debug)]
pub enum LoopFailed {
    /// Running the loop failed.
    Io(io::Error),
    /// A callback's panic unwound out of the loop (with
    /// [`EventLoop::set_propagate_panics`]); the message, when it was a string.
    Panicked(String),
}

impl fmt::Display for LoopFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoopFailed::Io(err) => write!(f, "the loop failed: {err}"),
            LoopFailed::Panicked(msg) => write!(f, "the loop panicked: {msg}"),
        }
    }
}

impl std::error::Error for LoopFailed {}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_string()
    }
}

impl Cluster {
    /// Starts `loops` threads (at least one), each with a new event loop on which it
    /// calls `setup(&loop, index)`, then runs the loop until it has no work left (see
    /// [`EventLoop::run`]). Returns once every `setup` succeeded; if one fails, the
    /// loops already started are stopped and its error is returned.
    ///
    /// Servers that `setup` creates with [`Cluster::serve_on`] are closed by
    /// [`shutdown`](Self::shutdown), and so is anything it registers with
    /// [`Cluster::on_shutdown`].
    pub fn start<F>(loops: usize, setup: F) -> io::Result<Cluster>
    where
        F: Fn(&EventLoop, usize) -> io::Result<()> + Send + Sync + 'static,
    {
        let setup = Arc::new(setup);
        let mut cluster = Cluster {
            remotes: Vec::new(),
            threads: Vec::new(),
            addrs: Vec::new(),
        };
        // One loop after the other, so a `setup` sees what the earlier ones did (the
        // port the first one was given for port 0, say).
        for index in 0..loops.max(1) {
            let (ready_tx, ready_rx) = mpsc::channel();
            let setup = setup.clone();
            let spawned = thread::Builder::new()
                .name(format!("oxloop-{index}"))
                .spawn(move || run_one(index, &*setup, ready_tx));
            let outcome = match spawned {
                Ok(thread) => {
                    cluster.threads.push(thread);
                    ready_rx
                        .recv()
                        .unwrap_or_else(|_| Err(io::Error::other("a cluster thread ended early")))
                }
                Err(err) => Err(err),
            };
            match outcome {
                Ok((remote, mut served)) => {
                    cluster.remotes.push(remote);
                    cluster.addrs.append(&mut served);
                }
                Err(err) => {
                    cluster.stop();
                    drop(cluster.join());
                    return Err(err);
                }
            }
        }
        cluster.addrs = dedup(cluster.addrs);
        Ok(cluster)
    }

    /// Serves `addr` on `loops` loops: each loop listens on it with `SO_REUSEPORT`, so
    /// the kernel spreads new connections over the loops, and each connection gets a
    /// protocol from `factory` on the loop that accepted it. For port 0 the first loop
    /// is given a port, and the others listen on the same one.
    pub fn serve<P, F>(addr: impl ToSocketAddrs, loops: usize, factory: F) -> io::Result<Cluster>
    where
        P: Protocol + 'static,
        F: Fn() -> P + Send + Sync + 'static,
    {
        let addrs: Vec<SocketAddr> = addr.to_socket_addrs()?.collect();
        if addrs.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the address resolved to nothing",
            ));
        }
        let factory = Arc::new(factory);
        let shared = SharedAddrs::new(addrs);
        Cluster::start(loops, move |ev, _| {
            let factory = factory.clone();
            let server = Cluster::serve_on(ev, &shared.get(), move || factory())?;
            shared.set(server.socket_addrs());
            Ok(())
        })
    }

    /// Listens on `addrs` on `ev` with `SO_REUSEPORT`, as one loop of a cluster does,
    /// and registers the server to be closed by [`shutdown`](Self::shutdown). For a
    /// `setup` given to [`start`](Self::start).
    pub fn serve_on<P, F>(ev: &EventLoop, addrs: &[SocketAddr], factory: F) -> io::Result<Server>
    where
        P: Protocol + 'static,
        F: Fn() -> P + 'static,
    {
        let options = ServerOptions::new().reuse_port(true);
        let server = ev.create_server_with(addrs, &options, factory)?;
        SERVERS.with(|servers| servers.borrow_mut().push(server.clone()));
        let closing = server.clone();
        Cluster::on_shutdown(move || {
            closing.close();
            closing.close_clients();
        });
        Ok(server)
    }

    /// Registers `f` to run on the calling thread's cluster loop when
    /// [`shutdown`](Self::shutdown) is asked: how a `setup` makes its own servers stop
    /// gracefully (an HTTP server's shutdown, say). Called from a `setup`.
    pub fn on_shutdown(f: impl FnOnce() + 'static) {
        ON_SHUTDOWN.with(|hooks| hooks.borrow_mut().push(Box::new(f)));
    }

    /// How many loops the cluster runs.
    pub fn loops(&self) -> usize {
        self.threads.len()
    }

    /// The addresses the cluster's servers listen on (what [`serve_on`](Self::serve_on)
    /// bound, port 0 resolved).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The remote of each loop, to run work on a given loop from any thread.
    pub fn remotes(&self) -> &[LoopRemote] {
        &self.remotes
    }

    /// A graceful stop: on every loop, what was registered with
    /// [`on_shutdown`](Self::on_shutdown) runs (servers from
    /// [`serve_on`](Self::serve_on) stop accepting, flush and close their
    /// connections), and the loop ends once it has no work left. Returns at once; see
    /// [`join`](Self::join).
    pub fn shutdown(&self) {
        self.shutdown_handle().shutdown();
    }

    /// A handle that asks for [`shutdown`](Self::shutdown) from anywhere (a signal
    /// handler on another loop, say), while [`join`](Self::join) waits.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            remotes: self.remotes.clone(),
        }
    }

    /// Stops every loop after its current iteration, whatever work it still has.
    pub fn stop(&self) {
        for remote in &self.remotes {
            let _ = remote.stop();
        }
    }

    /// Waits for every loop to end: one outcome per loop, in order. A loop that failed
    /// or panicked does not stop the others.
    pub fn join(self) -> Vec<Result<(), LoopFailed>> {
        self.threads
            .into_iter()
            .map(|thread| match thread.join() {
                Ok(outcome) => outcome,
                Err(payload) => Err(LoopFailed::Panicked(panic_message(&*payload))),
            })
            .collect()
    }
}

/// Asks a [`Cluster`] for its graceful shutdown from any thread (see
/// [`Cluster::shutdown_handle`]).
#[derive(Clone)]
pub struct ShutdownHandle {
    remotes: Vec<LoopRemote>,
}

impl ShutdownHandle {
    /// What [`Cluster::shutdown`] does.
    pub fn shutdown(&self) {
        for remote in &self.remotes {
            let _ = remote.call_from_thread(|| {
                let hooks = ON_SHUTDOWN.with(|hooks| std::mem::take(&mut *hooks.borrow_mut()));
                for hook in hooks {
                    hook();
                }
            });
        }
    }
}

type Ready = io::Result<(LoopRemote, Vec<SocketAddr>)>;

/// One cluster thread: makes its loop, runs `setup`, reports, runs the loop.
fn run_one(
    index: usize,
    setup: &(dyn Fn(&EventLoop, usize) -> io::Result<()> + Send + Sync),
    ready: mpsc::Sender<Ready>,
) -> Result<(), LoopFailed> {
    let ev = match EventLoop::new() {
        Ok(ev) => ev,
        Err(err) => {
            let _ = ready.send(Err(err));
            return Ok(());
        }
    };
    let set_up = catch_unwind(AssertUnwindSafe(|| setup(&ev, index)))
        .unwrap_or_else(|payload| Err(io::Error::other(panic_message(&*payload))));
    if let Err(err) = set_up {
        SERVERS.with(|servers| servers.borrow_mut().clear());
        drop(ON_SHUTDOWN.with(|hooks| std::mem::take(&mut *hooks.borrow_mut())));
        ev.destroy();
        let _ = ready.send(Err(err));
        return Ok(());
    }
    let addrs = SERVERS.with(|servers| {
        servers
            .borrow()
            .iter()
            .flat_map(|server| server.socket_addrs())
            .collect()
    });
    let _ = ready.send(Ok((ev.remote(), addrs)));
    drop(ready);
    let outcome = match catch_unwind(AssertUnwindSafe(|| ev.run())) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(err)) => Err(LoopFailed::Io(err)),
        Err(payload) => Err(LoopFailed::Panicked(panic_message(&*payload))),
    };
    SERVERS.with(|servers| servers.borrow_mut().clear());
    drop(ON_SHUTDOWN.with(|hooks| std::mem::take(&mut *hooks.borrow_mut())));
    ev.destroy();
    outcome
}

fn dedup(mut addrs: Vec<SocketAddr>) -> Vec<SocketAddr> {
    addrs.sort();
    addrs.dedup();
    addrs
}

/// The addresses every loop of a cluster listens on: what was asked until the first
/// loop listened, then what it got (port 0 resolved). Shared by the loops' setups,
/// which run one after the other.
#[derive(Clone)]
pub struct SharedAddrs(Arc<std::sync::Mutex<Vec<SocketAddr>>>);

impl SharedAddrs {
    /// Starts with the addresses asked for.
    pub fn new(addrs: Vec<SocketAddr>) -> SharedAddrs {
        SharedAddrs(Arc::new(std::sync::Mutex::new(addrs)))
    }

    /// The addresses to listen on.
    pub fn get(&self) -> Vec<SocketAddr> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Records what a loop listens on, for the loops after it.
    pub fn set(&self, addrs: Vec<SocketAddr>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = addrs;
    }
}
