//! A small SMTP client (RFC 5321) driven by the event loop: a non-blocking socket,
//! level-triggered reader/writer callbacks, line-based replies, an idle timeout, and
//! optional STARTTLS (rustls) and AUTH PLAIN / LOGIN.
//!
//! One [`Session`] sends one mail. The loop's callbacks hold only a `Weak` reference to
//! the session state, so dropping the [`Session`] handle (which removes the watchers and
//! the timer) ends everything. The completion callback always runs outside the state's
//! borrow, never synchronously from [`Session::start`].

use super::{AuthMechanism, SmtpConfig, TlsRoots};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use oxloop::{EventLoop, Handle};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, ClientConnection, RootCertStore};
use socket2::{Domain, Protocol, Socket, Type};
use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The longest reply we buffer before calling the server broken.
const MAX_REPLY: usize = 64 * 1024;

/// Why a mail could not be sent.
#[derive(Debug)]
pub(crate) enum SmtpError {
    Resolve(io::Error),
    NoAddress,
    Connect(io::Error),
    Io(io::Error),
    Tls(rustls::Error),
    Timeout(&'static str),
    Closed(&'static str),
    Rejected {
        during: &'static str,
        code: u16,
        text: String,
    },
    Protocol(String),
    NoStartTls,
    NoAuthMechanism(String),
    InsecureAuth,
}

impl fmt::Display for SmtpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SmtpError::Resolve(e) => write!(f, "cannot resolve the server: {e}"),
            SmtpError::NoAddress => f.write_str("the server name has no address"),
            SmtpError::Connect(e) => write!(f, "cannot connect: {e}"),
            SmtpError::Io(e) => write!(f, "connection error: {e}"),
            SmtpError::Tls(e) => write!(f, "TLS error: {e}"),
            SmtpError::Timeout(during) => write!(f, "timed out waiting for {during}"),
            SmtpError::Closed(during) => {
                write!(f, "the server closed the connection during {during}")
            }
            SmtpError::Rejected { during, code, text } => {
                write!(f, "the server answered {code} to {during}: {text}")
            }
            SmtpError::Protocol(what) => write!(f, "protocol error: {what}"),
            SmtpError::NoStartTls => f.write_str("the server does not offer STARTTLS"),
            SmtpError::NoAuthMechanism(offered) => {
                write!(
                    f,
                    "no usable AUTH mechanism (the server offers {offered:?})"
                )
            }
            SmtpError::InsecureAuth => {
                f.write_str("refusing to send credentials without TLS (see allow_insecure_auth)")
            }
        }
    }
}

/// The rustls client configuration for `roots`, with the ring provider.
pub(crate) fn tls_config(roots: &TlsRoots) -> Result<Arc<ClientConfig>, String> {
    let mut store = RootCertStore::empty();
    match roots {
        TlsRoots::WebPki => store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        TlsRoots::Pem(pem) => {
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| format!("bad PEM root certificate: {e}"))?;
                store
                    .add(cert)
                    .map_err(|e| format!("unusable root certificate: {e}"))?;
            }
            if store.is_empty() {
                return Err("the PEM text holds no certificate".into());
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(store)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

type Done = Box<dyn FnOnce(Result<(), SmtpError>)>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Resolve,
    Connect,
    Greeting,
    Ehlo,
    Helo,
    StartTls,
    Handshake,
    AuthPlain,
    AuthLoginUser,
    AuthLoginPass,
    AuthLoginDone,
    MailFrom,
    Rcpt,
    Data,
    Body,
    Quit,
}

impl Step {
    fn describe(self) -> &'static str {
        match self {
            Step::Resolve => "name resolution",
            Step::Connect => "the connection",
            Step::Greeting => "the greeting",
            Step::Ehlo => "EHLO",
            Step::Helo => "HELO",
            Step::StartTls => "STARTTLS",
            Step::Handshake => "the TLS handshake",
            Step::AuthPlain | Step::AuthLoginUser | Step::AuthLoginPass | Step::AuthLoginDone => {
                "AUTH"
            }
            Step::MailFrom => "MAIL FROM",
            Step::Rcpt => "RCPT TO",
            Step::Data => "DATA",
            Step::Body => "the message",
            Step::Quit => "QUIT",
        }
    }
}

/// What EHLO told us.
#[derive(Default)]
struct Extensions {
    starttls: bool,
    auth: Vec<String>,
}

struct Inner {
    ev: EventLoop,
    cfg: Rc<SmtpConfig>,
    weak: Weak<RefCell<Inner>>,
    message: Vec<u8>,
    step: Step,
    addrs: Vec<SocketAddr>,
    next_addr: usize,
    last_connect_error: Option<io::Error>,
    resolve_id: Option<u64>,
    stream: Option<TcpStream>,
    tls: Option<Box<ClientConnection>>,
    inbuf: Vec<u8>,
    outbuf: Vec<u8>,
    reply_code: Option<u16>,
    reply: Vec<String>,
    ext: Extensions,
    rcpt: usize,
    delivered: bool,
    reader_on: bool,
    writer_on: bool,
    timer: Option<Handle>,
    outcome: Option<Result<(), SmtpError>>,
    done: Option<Done>,
}

/// One mail being sent. Dropping it aborts the transfer.
pub(crate) struct Session {
    inner: Rc<RefCell<Inner>>,
}

impl Session {
    /// Starts sending `message` (already dot-stuffed and terminated) in the loop's next
    /// iteration; `done` runs once with the outcome.
    pub(crate) fn start(
        ev: &EventLoop,
        cfg: Rc<SmtpConfig>,
        message: Vec<u8>,
        done: Done,
    ) -> Session {
        let inner = Rc::new_cyclic(|weak| {
            RefCell::new(Inner {
                ev: ev.clone(),
                cfg,
                weak: weak.clone(),
                message,
                step: Step::Resolve,
                addrs: Vec::new(),
                next_addr: 0,
                last_connect_error: None,
                resolve_id: None,
                stream: None,
                tls: None,
                inbuf: Vec::new(),
                outbuf: Vec::new(),
                reply_code: None,
                reply: Vec::new(),
                ext: Extensions::default(),
                rcpt: 0,
                delivered: false,
                reader_on: false,
                writer_on: false,
                timer: None,
                outcome: None,
                done: Some(done),
            })
        });
        let weak = Rc::downgrade(&inner);
        ev.call_soon(move || drive(&weak, Inner::begin));
        Session { inner }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Ok(mut inner) = self.inner.try_borrow_mut() {
            inner.close();
            inner.done = None;
        }
    }
}

static NEXT_RESOLVE: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// Sessions waiting for a name resolution done on a helper thread.
    static RESOLVING: RefCell<HashMap<u64, Weak<RefCell<Inner>>>> = RefCell::new(HashMap::new());
}

/// Runs `f` on the session, then finishes it if it ended, calling `done` after the
/// borrow is released.
fn drive(weak: &Weak<RefCell<Inner>>, f: impl FnOnce(&mut Inner) -> Result<(), SmtpError>) {
    let Some(rc) = weak.upgrade() else { return };
    let finished = {
        let Ok(mut s) = rc.try_borrow_mut() else {
            return;
        };
        if s.done.is_none() {
            return;
        }
        if let Err(e) = f(&mut s) {
            s.outcome = Some(Err(e));
        }
        match s.outcome.take() {
            Some(mut result) => {
                if s.delivered {
                    // The mail was accepted; a failure during QUIT does not matter.
                    result = Ok(());
                }
                s.close();
                s.done.take().map(|d| (d, result))
            }
            None => None,
        }
    };
    if let Some((done, result)) = finished {
        done(result);
    }
}

fn would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

impl Inner {
    fn begin(&mut self) -> Result<(), SmtpError> {
        self.arm_timeout();
        if let Some(ip) = self.cfg.ip {
            self.addrs = vec![SocketAddr::new(ip, self.cfg.port)];
            return self.connect_next();
        }
        // Name resolution blocks, so it runs on a helper thread.
        let id = NEXT_RESOLVE.fetch_add(1, Ordering::Relaxed);
        RESOLVING.with(|r| r.borrow_mut().insert(id, self.weak.clone()));
        self.resolve_id = Some(id);
        let remote = self.ev.remote();
        let (host, port) = (self.cfg.server.clone(), self.cfg.port);
        std::thread::Builder::new()
            .name("oxloop-log-resolve".into())
            .spawn(move || {
                let result = (host.as_str(), port)
                    .to_socket_addrs()
                    .map(|a| a.collect::<Vec<_>>());
                let _ = remote.call_from_thread(move || resolved(id, result));
            })
            .map_err(SmtpError::Resolve)?;
        Ok(())
    }

    fn connect_next(&mut self) -> Result<(), SmtpError> {
        loop {
            let Some(&addr) = self.addrs.get(self.next_addr) else {
                return Err(match self.last_connect_error.take() {
                    Some(e) => SmtpError::Connect(e),
                    None => SmtpError::NoAddress,
                });
            };
            self.next_addr += 1;
            match open_socket(addr) {
                Ok(stream) => {
                    self.stream = Some(stream);
                    self.step = Step::Connect;
                    self.arm_timeout();
                    return self.update_interest();
                }
                Err(e) => self.last_connect_error = Some(e),
            }
        }
    }

    fn on_writable(&mut self) -> Result<(), SmtpError> {
        if self.step == Step::Connect {
            let stream = self.stream.as_ref().expect("connecting without a socket");
            let error = match stream.take_error() {
                Ok(None) => None,
                Ok(Some(e)) | Err(e) => Some(e),
            };
            if let Some(e) = error {
                self.drop_socket();
                self.last_connect_error = Some(e);
                return self.connect_next();
            }
            self.set_reader(true)?;
            if self.cfg.implicit_tls {
                self.start_tls()?;
            } else {
                self.step = Step::Greeting;
            }
        }
        self.arm_timeout();
        self.after_io()
    }

    fn on_readable(&mut self) -> Result<(), SmtpError> {
        let mut buf = [0u8; 8192];
        let mut eof = false;
        let Inner {
            stream, tls, inbuf, ..
        } = self;
        let stream = stream.as_mut().expect("reading without a socket");
        match tls {
            None => loop {
                match stream.read(&mut buf) {
                    Ok(0) => {
                        eof = true;
                        break;
                    }
                    Ok(n) if inbuf.len() + n > MAX_REPLY => {
                        inbuf.extend_from_slice(&buf[..n]);
                        break;
                    }
                    Ok(n) => inbuf.extend_from_slice(&buf[..n]),
                    Err(e) if would_block(&e) => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(SmtpError::Io(e)),
                }
            },
            Some(tls) => loop {
                match tls.read_tls(stream) {
                    Ok(0) => eof = true,
                    Ok(_) => {}
                    Err(e) if would_block(&e) => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(SmtpError::Io(e)),
                }
                tls.process_new_packets().map_err(SmtpError::Tls)?;
                loop {
                    match tls.reader().read(&mut buf) {
                        Ok(0) => {
                            eof = true;
                            break;
                        }
                        Ok(n) => inbuf.extend_from_slice(&buf[..n]),
                        Err(e) if would_block(&e) => break,
                        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                            eof = true;
                            break;
                        }
                        Err(e) => return Err(SmtpError::Io(e)),
                    }
                }
                if eof || inbuf.len() > MAX_REPLY || !socket_has_data(stream) {
                    break;
                }
            },
        }
        self.arm_timeout();
        self.process_lines()?;
        if self.outcome.is_some() {
            return Ok(());
        }
        if self.inbuf.len() > MAX_REPLY || self.reply.len() > MAX_REPLY / 4 {
            return Err(SmtpError::Protocol("reply too long".into()));
        }
        if eof {
            if self.step == Step::Quit {
                self.outcome = Some(Ok(()));
                return Ok(());
            }
            return Err(SmtpError::Closed(self.step.describe()));
        }
        self.after_io()
    }

    /// Writes what can be written, completes the TLS handshake, updates the watchers.
    fn after_io(&mut self) -> Result<(), SmtpError> {
        self.flush()?;
        if self.step == Step::Handshake && self.tls.as_ref().is_some_and(|t| !t.is_handshaking()) {
            if self.cfg.implicit_tls {
                // TLS from the start: now the server greets.
                self.step = Step::Greeting;
            } else {
                // After STARTTLS the client starts over with EHLO (RFC 3207).
                self.ext = Extensions::default();
                self.step = Step::Ehlo;
                let cmd = format!("EHLO {}", self.cfg.helo_name);
                self.send(&cmd)?;
            }
        }
        self.update_interest()
    }

    fn flush(&mut self) -> Result<(), SmtpError> {
        let Inner {
            stream,
            tls,
            outbuf,
            ..
        } = self;
        let Some(stream) = stream.as_mut() else {
            return Ok(());
        };
        match tls {
            None => {
                let mut done = 0;
                while done < outbuf.len() {
                    match stream.write(&outbuf[done..]) {
                        Ok(0) => return Err(SmtpError::Io(io::ErrorKind::WriteZero.into())),
                        Ok(n) => done += n,
                        Err(e) if would_block(&e) => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(SmtpError::Io(e)),
                    }
                }
                outbuf.drain(..done);
            }
            Some(tls) => {
                if !outbuf.is_empty() {
                    let n = tls.writer().write(outbuf).map_err(SmtpError::Io)?;
                    outbuf.drain(..n);
                }
                while tls.wants_write() {
                    match tls.write_tls(stream) {
                        Ok(_) => {}
                        Err(e) if would_block(&e) => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(SmtpError::Io(e)),
                    }
                }
            }
        }
        Ok(())
    }

    fn send(&mut self, command: &str) -> Result<(), SmtpError> {
        self.outbuf.extend_from_slice(command.as_bytes());
        self.outbuf.extend_from_slice(b"\r\n");
        self.flush()
    }

    fn process_lines(&mut self) -> Result<(), SmtpError> {
        while let Some(pos) = self.inbuf.iter().position(|&b| b == b'\n') {
            let raw: Vec<u8> = self.inbuf.drain(..=pos).collect();
            let line = String::from_utf8_lossy(&raw);
            let line = line.trim_end_matches(['\r', '\n']);
            let bytes = line.as_bytes();
            let code = match line.get(..3).map(str::parse::<u16>) {
                Some(Ok(c))
                    if (200..600).contains(&c) && bytes[..3].iter().all(u8::is_ascii_digit) =>
                {
                    c
                }
                _ => return Err(SmtpError::Protocol(format!("malformed reply {line:?}"))),
            };
            let last = match bytes.get(3) {
                None | Some(b' ') => true,
                Some(b'-') => false,
                _ => return Err(SmtpError::Protocol(format!("malformed reply {line:?}"))),
            };
            if self.reply_code.is_some_and(|c| c != code) {
                return Err(SmtpError::Protocol(format!(
                    "reply code changed inside a multi-line reply: {line:?}"
                )));
            }
            self.reply_code = Some(code);
            self.reply.push(line.get(4..).unwrap_or("").to_string());
            if last {
                self.reply_code = None;
                let lines = std::mem::take(&mut self.reply);
                self.on_reply(code, lines)?;
                if self.outcome.is_some() {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    fn rejected(&self, code: u16, lines: &[String]) -> SmtpError {
        SmtpError::Rejected {
            during: self.step.describe(),
            code,
            text: lines.join(" / "),
        }
    }

    fn on_reply(&mut self, code: u16, lines: Vec<String>) -> Result<(), SmtpError> {
        match (self.step, code) {
            (Step::Greeting, 220) => {
                self.step = Step::Ehlo;
                let cmd = format!("EHLO {}", self.cfg.helo_name);
                self.send(&cmd)
            }
            (Step::Ehlo, 250) => {
                self.ext = parse_extensions(&lines[1..]);
                self.after_hello()
            }
            // An old server without ESMTP: HELO does when neither TLS nor AUTH is needed.
            (Step::Ehlo, 500..=502) if self.cfg.tls.is_none() && self.cfg.credentials.is_none() => {
                self.step = Step::Helo;
                let cmd = format!("HELO {}", self.cfg.helo_name);
                self.send(&cmd)
            }
            (Step::Helo, 250) => self.after_hello(),
            (Step::StartTls, 220) => {
                if !self.inbuf.is_empty() {
                    return Err(SmtpError::Protocol(
                        "data received after the STARTTLS reply, before TLS".into(),
                    ));
                }
                self.start_tls()
            }
            (Step::Handshake, _) => Err(SmtpError::Protocol(
                "reply received during the TLS handshake".into(),
            )),
            (Step::AuthPlain | Step::AuthLoginDone, 235) => self.mail_from(),
            (Step::AuthLoginUser, 334) => {
                self.step = Step::AuthLoginPass;
                let user = &self.cfg.credentials.as_ref().expect("credentials").0;
                let cmd = B64.encode(user);
                self.send(&cmd)
            }
            (Step::AuthLoginPass, 334) => {
                self.step = Step::AuthLoginDone;
                let pass = &self.cfg.credentials.as_ref().expect("credentials").1;
                let cmd = B64.encode(pass);
                self.send(&cmd)
            }
            (Step::MailFrom, 250) => {
                self.rcpt = 0;
                self.step = Step::Rcpt;
                let cmd = format!("RCPT TO:<{}>", self.cfg.to[0].email);
                self.send(&cmd)
            }
            (Step::Rcpt, 250 | 251) => {
                self.rcpt += 1;
                if let Some(to) = self.cfg.to.get(self.rcpt) {
                    let cmd = format!("RCPT TO:<{}>", to.email);
                    self.send(&cmd)
                } else {
                    self.step = Step::Data;
                    self.send("DATA")
                }
            }
            (Step::Data, 354) => {
                self.step = Step::Body;
                self.outbuf.extend_from_slice(&self.message);
                self.flush()
            }
            (Step::Body, 250) => {
                self.delivered = true;
                self.step = Step::Quit;
                self.send("QUIT")
            }
            (Step::Quit, _) => {
                self.outcome = Some(Ok(()));
                Ok(())
            }
            (Step::Rcpt, _) => Err(SmtpError::Rejected {
                during: "RCPT TO",
                code,
                text: format!("<{}>: {}", self.cfg.to[self.rcpt].email, lines.join(" / ")),
            }),
            (_, code) => Err(self.rejected(code, &lines)),
        }
    }

    fn start_tls(&mut self) -> Result<(), SmtpError> {
        let (config, name) = self.cfg.tls.clone().expect("TLS without TLS options");
        let conn = ClientConnection::new(config, name).map_err(SmtpError::Tls)?;
        self.tls = Some(Box::new(conn));
        self.step = Step::Handshake;
        Ok(())
    }

    /// After EHLO/HELO: STARTTLS, then AUTH, then the mail.
    fn after_hello(&mut self) -> Result<(), SmtpError> {
        if self.cfg.tls.is_some() && self.tls.is_none() {
            if !self.ext.starttls {
                return Err(SmtpError::NoStartTls);
            }
            self.step = Step::StartTls;
            return self.send("STARTTLS");
        }
        let Some((user, pass)) = self.cfg.credentials.clone() else {
            return self.mail_from();
        };
        if self.tls.is_none() && !self.cfg.allow_insecure_auth {
            return Err(SmtpError::InsecureAuth);
        }
        let offered = |m: &str| self.ext.auth.iter().any(|a| a == m);
        let mechanism = match self.cfg.mechanism {
            Some(m) => m,
            None if offered("PLAIN") => AuthMechanism::Plain,
            None if offered("LOGIN") => AuthMechanism::Login,
            None => return Err(SmtpError::NoAuthMechanism(self.ext.auth.join(" "))),
        };
        match mechanism {
            AuthMechanism::Plain => {
                self.step = Step::AuthPlain;
                let token = B64.encode(format!("\0{user}\0{pass}"));
                self.send(&format!("AUTH PLAIN {token}"))
            }
            AuthMechanism::Login => {
                self.step = Step::AuthLoginUser;
                self.send("AUTH LOGIN")
            }
        }
    }

    fn mail_from(&mut self) -> Result<(), SmtpError> {
        self.step = Step::MailFrom;
        let cmd = format!("MAIL FROM:<{}>", self.cfg.from.email);
        self.send(&cmd)
    }

    fn update_interest(&mut self) -> Result<(), SmtpError> {
        if self.stream.is_none() {
            return Ok(());
        }
        let want_write = self.step == Step::Connect
            || !self.outbuf.is_empty()
            || self.tls.as_ref().is_some_and(|t| t.wants_write());
        self.set_writer(want_write)
    }

    fn set_reader(&mut self, on: bool) -> Result<(), SmtpError> {
        let Some(fd) = self.stream.as_ref().map(|s| s.as_raw_fd()) else {
            return Ok(());
        };
        if on != self.reader_on {
            if on {
                let w = self.weak.clone();
                self.ev
                    .add_reader(fd, move || drive(&w, Inner::on_readable))
                    .map_err(SmtpError::Io)?;
            } else {
                self.ev.remove_reader(fd);
            }
            self.reader_on = on;
        }
        Ok(())
    }

    fn set_writer(&mut self, on: bool) -> Result<(), SmtpError> {
        let Some(fd) = self.stream.as_ref().map(|s| s.as_raw_fd()) else {
            return Ok(());
        };
        if on != self.writer_on {
            if on {
                let w = self.weak.clone();
                self.ev
                    .add_writer(fd, move || drive(&w, Inner::on_writable))
                    .map_err(SmtpError::Io)?;
            } else {
                self.ev.remove_writer(fd);
            }
            self.writer_on = on;
        }
        Ok(())
    }

    /// (Re)starts the idle timeout: it fires when nothing happens for `cfg.timeout`.
    fn arm_timeout(&mut self) {
        if let Some(t) = self.timer.take() {
            t.cancel();
        }
        let w = self.weak.clone();
        self.timer = Some(self.ev.call_later(self.cfg.timeout, move || {
            drive(&w, |s| Err(SmtpError::Timeout(s.step.describe())))
        }));
    }

    fn drop_socket(&mut self) {
        if let Some(stream) = &self.stream {
            let fd = stream.as_raw_fd();
            if self.reader_on {
                self.ev.remove_reader(fd);
            }
            if self.writer_on {
                self.ev.remove_writer(fd);
            }
        }
        self.reader_on = false;
        self.writer_on = false;
        self.tls = None;
        self.stream = None;
    }

    /// Releases the socket, watchers and timer; idempotent.
    fn close(&mut self) {
        self.drop_socket();
        if let Some(t) = self.timer.take() {
            t.cancel();
        }
        if let Some(id) = self.resolve_id.take() {
            RESOLVING.with(|r| r.borrow_mut().remove(&id));
        }
    }
}

/// With TLS, `read_tls` reads one record at a time; keep going while the socket may
/// still hold data (a zero-timeout peek).
fn socket_has_data(stream: &TcpStream) -> bool {
    let mut b = [0u8; 1];
    matches!(stream.peek(&mut b), Ok(n) if n > 0)
}

/// Runs on the loop thread with the helper thread's answer.
fn resolved(id: u64, result: io::Result<Vec<SocketAddr>>) {
    let Some(weak) = RESOLVING.with(|r| r.borrow_mut().remove(&id)) else {
        return;
    };
    drive(&weak, move |s| {
        s.resolve_id = None;
        s.addrs = result.map_err(SmtpError::Resolve)?;
        s.connect_next()
    });
}

fn open_socket(addr: SocketAddr) -> io::Result<TcpStream> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_nonblocking(true)?;
    socket.set_tcp_nodelay(true)?;
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) || would_block(&e) => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from(socket))
}

fn parse_extensions(lines: &[String]) -> Extensions {
    let mut ext = Extensions::default();
    for line in lines {
        let upper = line.to_ascii_uppercase();
        let mut words = upper.split_whitespace();
        match words.next() {
            Some("STARTTLS") => ext.starttls = true,
            Some("AUTH") => ext.auth.extend(words.map(str::to_string)),
            Some(w) if w.starts_with("AUTH=") => {
                ext.auth.push(w[5..].to_string());
                ext.auth.extend(words.map(str::to_string));
            }
            _ => {}
        }
    }
    ext
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extensions() {
        let lines: Vec<String> = ["PIPELINING", "auth login PLAIN", "STARTTLS", "SIZE 100"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let ext = parse_extensions(&lines);
        assert!(ext.starttls);
        assert_eq!(ext.auth, ["LOGIN", "PLAIN"]);
    }

    #[test]
    fn pem_without_certificates_is_refused() {
        let e = tls_config(&TlsRoots::Pem(b"nothing here".to_vec())).unwrap_err();
        assert!(e.contains("no certificate"), "{e}");
    }
}
