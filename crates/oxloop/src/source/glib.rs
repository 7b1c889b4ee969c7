//! oxloop and GLib in one thread (feature `glib`).
//!
//! - [`GlibContext`]: a GLib main context as an oxloop source. Before oxloop sleeps, the
//!   context is *prepared* and *queried* (which fds, how long), its fds become oxloop
//!   watchers and its timeout an oxloop deadline; when one fires, the context is
//!   *checked* and *dispatched*, then prepared again. This is GLib's own iteration
//!   (`g_main_context_iteration`) with oxloop doing the polling.
//! - [`attach`]: the other way round, oxloop inside GLib's main loop: a unix-fd source
//!   on oxloop's fd and a timeout for oxloop's next timer, both on the default main
//!   context, run one oxloop iteration each time they fire.
//!
//! ```
//! use oxloop::source::LoopSourceExt;
//! use oxloop::{source::glib::GlibContext, EventLoop};
//! use std::sync::atomic::{AtomicBool, Ordering};
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! let ev = EventLoop::new()?;
//! let ctx = glib::MainContext::new();
//! let fired = Arc::new(AtomicBool::new(false));
//! let f = fired.clone();
//! glib::timeout_source_new(Duration::from_millis(5), None, glib::Priority::DEFAULT, move || {
//!     f.store(true, Ordering::SeqCst);
//!     glib::ControlFlow::Break
//! })
//! .attach(Some(&ctx));
//! let handle = ev.insert_source(GlibContext::new(ctx))?;
//! handle.set_ref(false);
//! ev.call_later(Duration::from_millis(20), || {});
//! ev.run()?; // the GLib timeout fires inside oxloop's run
//! assert!(fired.load(Ordering::SeqCst));
//! # Ok::<(), std::io::Error>(())
//! ```

use super::{Event, EventSource, PostAction, Registration};
use crate::reactor::glib::{check, query};
use crate::reactor::{Interest, Trigger};
use crate::EventLoop;
use glib::ffi::{GPollFD, G_IO_ERR, G_IO_HUP, G_IO_IN, G_IO_OUT, G_IO_PRI};
use glib::{ControlFlow, IOCondition, MainContext, SourceId};
use std::cell::RefCell;
use std::fmt;
use std::io;
use std::os::fd::AsRawFd;
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

/// A GLib main context driven by oxloop.
///
/// GLib contexts belong to one thread at a time: this one acquires the context around
/// each step. Sources added to the context from this thread outside a dispatch change
/// its timeout without oxloop knowing: call [`SourceHandle::update`](super::SourceHandle::update)
/// after adding one (from other threads, GLib wakes the context through its own fd,
/// which oxloop watches).
pub struct GlibContext {
    ctx: MainContext,
    fds: Vec<GPollFD>,
    max_priority: i32,
    deadline: Option<Instant>,
}

impl GlibContext {
    /// Wraps `ctx` (which must not be iterated by anyone else meanwhile).
    pub fn new(ctx: MainContext) -> GlibContext {
        GlibContext {
            ctx,
            fds: Vec::new(),
            max_priority: 0,
            deadline: None,
        }
    }

    /// The context.
    pub fn context(&self) -> &MainContext {
        &self.ctx
    }

    /// Hands back the context.
    pub fn into_inner(self) -> MainContext {
        self.ctx
    }
}

impl fmt::Debug for GlibContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GlibContext")
            .field("fds", &self.fds.len())
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

fn busy() -> io::Error {
    io::Error::new(
        io::ErrorKind::WouldBlock,
        "the GLib main context is owned by another thread",
    )
}

impl EventSource for GlibContext {
    fn register(&mut self, reg: &mut Registration) -> io::Result<()> {
        let _owner = self.ctx.acquire().map_err(|_| busy())?;
        let (ready, max_priority) = self.ctx.prepare();
        self.max_priority = max_priority;
        let timeout = query(&self.ctx, max_priority, &mut self.fds);
        self.deadline = if ready {
            Some(Instant::now())
        } else if timeout >= 0 {
            Some(Instant::now() + Duration::from_millis(timeout as u64))
        } else {
            None
        };
        for pfd in &self.fds {
            let events = u32::from(pfd.events);
            let interest = Interest {
                read: events & (G_IO_IN | G_IO_PRI) != 0,
                write: events & G_IO_OUT != 0,
            };
            if !interest.is_empty() {
                reg.watch_raw(pfd.fd, interest, Trigger::Level);
            }
        }
        Ok(())
    }

    fn deadline(&mut self) -> Option<Instant> {
        self.deadline
    }

    fn dispatch(&mut self, event: Event) -> PostAction {
        let Ok(_owner) = self.ctx.acquire() else {
            return PostAction::Reregister; // try again at the next iteration
        };
        if let Event::Io {
            fd,
            readable,
            writable,
        } = event
        {
            for pfd in self.fds.iter_mut().filter(|p| p.fd == fd) {
                let mut revents = 0;
                if readable {
                    revents |= G_IO_IN | G_IO_HUP | G_IO_ERR;
                }
                if writable {
                    revents |= G_IO_OUT;
                }
                pfd.revents = (revents & (u32::from(pfd.events) | G_IO_HUP | G_IO_ERR)) as u16;
            }
        }
        if check(&self.ctx, self.max_priority, &mut self.fds) {
            self.ctx.dispatch();
        }
        // GLib's fd set and timeout may have changed: prepare and query again.
        PostAction::Reregister
    }
}

/// oxloop attached to GLib's default main context; dropping it detaches.
pub struct GlibHost {
    state: Rc<HostState>,
}

struct HostState {
    ev: EventLoop,
    fd_source: RefCell<Option<SourceId>>,
    timer: RefCell<Option<SourceId>>,
}

/// Runs `ev` from GLib's default main context (the one `glib::MainLoop::new(None, _)`
/// runs): oxloop iterates whenever its fd is readable or its next timer is due. Call
/// from the thread that owns the default context; keep the returned value alive.
pub fn attach(ev: &EventLoop) -> io::Result<GlibHost> {
    let state = Rc::new(HostState {
        ev: ev.clone(),
        fd_source: RefCell::new(None),
        timer: RefCell::new(None),
    });
    let weak = Rc::downgrade(&state);
    let ctx = MainContext::default();
    let _owner = ctx.acquire().map_err(|_| busy())?;
    let id = glib::source::unix_fd_add_local(ev.as_raw_fd(), IOCondition::IN, move |_, _| {
        if let Some(state) = weak.upgrade() {
            state.run();
        }
        ControlFlow::Continue
    });
    *state.fd_source.borrow_mut() = Some(id);
    state.schedule();
    Ok(GlibHost { state })
}

impl HostState {
    /// One oxloop iteration, then the timeout for the next timer.
    fn run(self: &Rc<Self>) {
        if let Err(e) = self.ev.run_once(Some(Duration::ZERO)) {
            tracing::error!(target: "oxloop", "oxloop iteration from GLib failed: {e}");
        }
        self.schedule();
    }

    fn schedule(self: &Rc<Self>) {
        if let Some(old) = self.timer.borrow_mut().take() {
            old.remove();
        }
        let Some(wait) = self.ev.prepare_wait() else {
            return;
        };
        // GLib counts whole milliseconds: round up, so oxloop's timer is due when it fires.
        let millis = wait.as_nanos().div_ceil(1_000_000);
        let wait = Duration::from_millis(u64::try_from(millis).unwrap_or(u64::MAX));
        let weak: Weak<HostState> = Rc::downgrade(self);
        let id = glib::timeout_add_local_once(wait, move || {
            if let Some(state) = weak.upgrade() {
                state.timer.borrow_mut().take(); // this source ends by itself
                state.run();
            }
        });
        *self.timer.borrow_mut() = Some(id);
    }
}

impl GlibHost {
    /// Looks at oxloop's timers again (after work was given to it from outside its
    /// callbacks, e.g. from a GLib callback).
    pub fn update(&self) {
        self.state.schedule();
    }
}

impl Drop for GlibHost {
    fn drop(&mut self) {
        if let Some(id) = self.state.fd_source.borrow_mut().take() {
            id.remove();
        }
        if let Some(id) = self.state.timer.borrow_mut().take() {
            id.remove();
        }
    }
}

impl fmt::Debug for GlibHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GlibHost").finish_non_exhaustive()
    }
}
