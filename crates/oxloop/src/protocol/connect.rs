//! Non-blocking connect with an optional timeout.

use super::stream::{prepare_stream, Transport};
use super::Protocol;
use crate::{EventLoop, Handle};
use socket2::{Domain, SockAddr, Socket, Type};
use std::cell::RefCell;
use std::io;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::Duration;

type Done = Box<dyn FnOnce(io::Result<Transport>)>;

/// How a client connects. `ConnectOptions::default()` has no timeout.
#[derive(Clone, Debug, Default)]
pub struct ConnectOptions {
    timeout: Option<Duration>,
}

impl ConnectOptions {
    /// No timeout: the connect takes as long as the system lets it.
    pub fn new() -> ConnectOptions {
        ConnectOptions::default()
    }

    /// Gives up after `timeout`; the callback then gets an
    /// [`io::ErrorKind::TimedOut`] error.
    pub fn timeout(mut self, timeout: Duration) -> ConnectOptions {
        self.timeout = Some(timeout);
        self
    }
}

struct Pending {
    sock: Socket,
    protocol: Box<dyn Protocol>,
    done: Done,
    timer: Option<Handle>,
}

/// Shared between the writer and the timeout: whichever comes first takes it.
type Slot = Rc<RefCell<Option<Pending>>>;

pub(crate) fn connect(
    ev: &EventLoop,
    addr: SockAddr,
    protocol: Box<dyn Protocol>,
    options: &ConnectOptions,
    done: Done,
) -> io::Result<()> {
    let domain = addr.domain();
    let sock = Socket::new(domain, Type::STREAM, None)?;
    sock.set_nonblocking(true)?;
    let shown = describe(&addr);
    let result = sock.connect(&addr);
    let in_progress = match &result {
        Ok(()) => false,
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => true,
        // A Unix stream connect never completes later: EAGAIN means the listener's
        // backlog is full.
        Err(_) => false,
    };
    let slot: Slot = Rc::new(RefCell::new(Some(Pending {
        sock,
        protocol,
        done,
        timer: None,
    })));
    if !in_progress {
        let outcome = result.map_err(|e| connect_error(&shown, e, domain));
        let ev2 = ev.clone();
        ev.call_soon(move || complete(&ev2, &slot, outcome));
        return Ok(());
    }
    let fd = slot.borrow().as_ref().map(|p| p.sock.as_raw_fd()).unwrap();
    {
        let (ev2, slot2, shown2) = (ev.clone(), slot.clone(), shown.clone());
        ev.add_writer(fd, move || {
            ev2.remove_writer(fd);
            let status = match slot2.borrow().as_ref() {
                Some(pending) => pending.sock.take_error(),
                None => return,
            };
            let outcome = match status {
                Ok(None) => Ok(()),
                Ok(Some(e)) | Err(e) => Err(connect_error(&shown2, e, domain)),
            };
            complete(&ev2, &slot2, outcome);
        })?;
    }
    if let Some(timeout) = options.timeout {
        let (ev2, slot2) = (ev.clone(), slot.clone());
        let timer = ev.call_later(timeout, move || {
            ev2.remove_writer(fd);
            let err = io::Error::new(
                io::ErrorKind::TimedOut,
                format!("connecting to {shown} timed out after {timeout:?}"),
            );
            complete(&ev2, &slot2, Err(err));
        });
        if let Some(pending) = slot.borrow_mut().as_mut() {
            pending.timer = Some(timer);
        }
    }
    Ok(())
}

/// Finishes a connect attempt once: on success starts the transport (the protocol gets
/// `connection_made`) and hands it to `done`; on failure closes the socket and hands
/// `done` the error.
fn complete(ev: &EventLoop, slot: &Slot, outcome: io::Result<()>) {
    let Some(pending) = slot.borrow_mut().take() else {
        return;
    };
    let Pending {
        sock,
        protocol,
        done,
        timer,
    } = pending;
    if let Some(timer) = timer {
        timer.cancel();
    }
    let result = outcome
        .and_then(|()| prepare_stream(&sock))
        .and_then(|()| Transport::start(ev, sock, protocol));
    done(result);
}

fn describe(addr: &SockAddr) -> String {
    match addr.as_socket() {
        Some(inet) => inet.to_string(),
        None => match addr.as_pathname() {
            Some(path) => path.display().to_string(),
            None => "(unnamed socket)".to_string(),
        },
    }
}

fn connect_error(shown: &str, e: io::Error, domain: Domain) -> io::Error {
    let kind = if domain == Domain::UNIX && e.kind() == io::ErrorKind::WouldBlock {
        io::ErrorKind::ConnectionRefused
    } else {
        e.kind()
    };
    io::Error::new(kind, format!("cannot connect to {shown}: {e}"))
}
