//! E-mail output: a `tracing` layer that queues events, and a mailer on the event loop
//! that batches them and sends them over SMTP at most once per interval.
//!
//! The layer may run on any thread. It appends a formatted line to the shared
//! [`Outbox`] and, when the outbox was idle, asks the loop (through its
//! [`LoopRemote`](oxloop::LoopRemote)) to look at it. The loop-side [`Mailer`] is found
//! through a thread-local registry, since the closure sent to the loop must be `Send`
//! and the mailer is not.

mod message;
mod reply;
mod smtp;

use crate::format;
use crate::{LogError, INTERNAL_TARGET};
use oxloop::net::tls::pki_types::ServerName;
use oxloop::net::tls::TlsConnector;
use oxloop::task::JoinHandle;
use oxloop::{EventLoop, Handle, LoopRemote};
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tracing::{Dispatch, Event, Level, Subscriber};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{Layer, Registry};

pub use reply::fuzz_replies;
pub(crate) use smtp::SmtpError;

/// Which certificates authenticate the SMTP server after STARTTLS.
#[derive(Debug, Clone)]
pub enum TlsRoots {
    /// The Mozilla root set shipped by `webpki-roots`.
    WebPki,
    /// Only the certificates in this PEM text (one or more `CERTIFICATE` blocks), e.g.
    /// a private CA or a self-signed server certificate.
    Pem(Vec<u8>),
}

/// The SASL mechanism used to log in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMechanism {
    /// `AUTH PLAIN` (RFC 4616): one command.
    Plain,
    /// `AUTH LOGIN`: user name and password in two steps.
    Login,
}

/// Where and how to send the e-mail reports.
///
/// Defaults: events at ERROR, at most one mail per 60 s, a 1 s gathering delay before a
/// mail is sent, 30 s for each step of the SMTP conversation, 1000 events per mail, 3
/// attempts per event, no TLS, no login.
///
/// ```
/// use oxloop_log::{EmailOptions, TlsRoots};
/// use std::time::Duration;
///
/// let options = EmailOptions::new("smtp.example.com", 587, "App <app@example.com>", ["ops@example.com"])
///     .subject("myapp errors")
///     .interval(Duration::from_secs(300))
///     .starttls(TlsRoots::WebPki)
///     .credentials("app", "secret");
/// ```
#[derive(Debug, Clone)]
pub struct EmailOptions {
    server: String,
    port: u16,
    from: String,
    to: Vec<String>,
    subject: String,
    level: Level,
    interval: Duration,
    gather: Duration,
    timeout: Duration,
    starttls: Option<TlsRoots>,
    implicit_tls: bool,
    tls_server_name: Option<String>,
    credentials: Option<(String, String)>,
    mechanism: Option<AuthMechanism>,
    allow_insecure_auth: bool,
    max_events: usize,
    max_attempts: u32,
    helo_name: String,
}

impl EmailOptions {
    /// Mails from `from` to every address of `to` through `server:port` (a host name or
    /// an IP address). Addresses may carry a display name: `"Ops <ops@example.com>"`.
    pub fn new<S: Into<String>>(
        server: impl Into<String>,
        port: u16,
        from: impl Into<String>,
        to: impl IntoIterator<Item = S>,
    ) -> Self {
        EmailOptions {
            server: server.into(),
            port,
            from: from.into(),
            to: to.into_iter().map(Into::into).collect(),
            subject: "Errors logged".to_string(),
            level: Level::ERROR,
            interval: Duration::from_secs(60),
            gather: Duration::from_secs(1),
            timeout: Duration::from_secs(30),
            starttls: None,
            implicit_tls: false,
            tls_server_name: None,
            credentials: None,
            mechanism: None,
            allow_insecure_auth: false,
            max_events: 1000,
            max_attempts: 3,
            helo_name: "localhost".to_string(),
        }
    }

    /// The subject of every mail.
    pub fn subject(mut self, subject: impl Into<String>) -> Self {
        self.subject = subject.into();
        self
    }

    /// Mails events at this level and above (default ERROR).
    pub fn level(mut self, level: Level) -> Self {
        self.level = level;
        self
    }

    /// The least time between the starts of two mails (default 60 s).
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// How long to wait after the first event of a batch before sending it, so that a
    /// burst ends up in one mail (default 1 s).
    pub fn gather(mut self, gather: Duration) -> Self {
        self.gather = gather;
        self
    }

    /// Gives up when one step of the SMTP conversation (name resolution, connecting to
    /// one address, the TLS handshake, sending a command or the message, waiting for a
    /// reply) takes longer than this (default 30 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Requires STARTTLS, verifying the server against `roots`; a server that does not
    /// offer it is a failure.
    pub fn starttls(mut self, roots: TlsRoots) -> Self {
        self.starttls = Some(roots);
        self.implicit_tls = false;
        self
    }

    /// Speaks TLS from the first byte ("implicit TLS", usually port 465) instead of
    /// upgrading with STARTTLS, verifying the server against `roots`.
    pub fn implicit_tls(mut self, roots: TlsRoots) -> Self {
        self.starttls = Some(roots);
        self.implicit_tls = true;
        self
    }

    /// The name the server's certificate must carry (default: the server's host name).
    pub fn tls_server_name(mut self, name: impl Into<String>) -> Self {
        self.tls_server_name = Some(name.into());
        self
    }

    /// Logs in with these credentials (the mechanism is chosen from what the server
    /// offers, PLAIN first, unless [`EmailOptions::auth_mechanism`] is set).
    pub fn credentials(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.credentials = Some((user.into(), password.into()));
        self
    }

    /// Forces the login mechanism.
    pub fn auth_mechanism(mut self, mechanism: AuthMechanism) -> Self {
        self.mechanism = Some(mechanism);
        self
    }

    /// Allows sending credentials over a connection without TLS (refused by default).
    pub fn allow_insecure_auth(mut self, allow: bool) -> Self {
        self.allow_insecure_auth = allow;
        self
    }

    /// The most events in one mail; more are counted and mentioned (default 1000). Also
    /// the most events held while waiting to send.
    pub fn max_events(mut self, n: usize) -> Self {
        self.max_events = n;
        self
    }

    /// How many mails an event may be part of before it is given up after failures
    /// (default 3). Given-up events are reported in the local log.
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n;
        self
    }

    /// The name announced in EHLO (default `localhost`).
    pub fn helo_name(mut self, name: impl Into<String>) -> Self {
        self.helo_name = name.into();
        self
    }
}

/// The validated configuration the SMTP client uses.
pub(crate) struct SmtpConfig {
    pub server: String,
    pub port: u16,
    pub ip: Option<IpAddr>,
    pub from: lettre::message::Mailbox,
    pub to: Vec<lettre::message::Mailbox>,
    pub subject: String,
    pub timeout: Duration,
    /// The connector and the name the server's certificate must carry.
    pub tls: Option<(TlsConnector, String)>,
    pub implicit_tls: bool,
    pub credentials: Option<(String, String)>,
    pub mechanism: Option<AuthMechanism>,
    pub allow_insecure_auth: bool,
    pub helo_name: String,
}

impl EmailOptions {
    fn validate(self) -> Result<(SmtpConfig, Policy), LogError> {
        let bad = |why: String| LogError::Email(why);
        if self.server.is_empty() {
            return Err(bad("the server is empty".into()));
        }
        if self.port == 0 {
            return Err(bad("the port is zero".into()));
        }
        let from = self
            .from
            .parse()
            .map_err(|e| bad(format!("sender {:?}: {e}", self.from)))?;
        if self.to.is_empty() {
            return Err(bad("no recipient".into()));
        }
        let to = self
            .to
            .iter()
            .map(|t| t.parse().map_err(|e| bad(format!("recipient {t:?}: {e}"))))
            .collect::<Result<Vec<_>, _>>()?;
        if self.subject.contains(['\r', '\n']) {
            return Err(bad("the subject contains a line break".into()));
        }
        if self.helo_name.is_empty() || self.helo_name.contains(|c: char| c.is_whitespace()) {
            return Err(bad(format!("EHLO name {:?}", self.helo_name)));
        }
        if self.max_events == 0 || self.max_attempts == 0 {
            return Err(bad("max_events and max_attempts must be at least 1".into()));
        }
        if self.timeout.is_zero() {
            return Err(bad("the timeout is zero".into()));
        }
        if let Some((user, pass)) = &self.credentials {
            if user.contains('\0') || pass.contains('\0') {
                return Err(bad("credentials contain a NUL character".into()));
            }
        }
        let ip = self
            .server
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .ok();
        let tls = match &self.starttls {
            None => None,
            Some(roots) => {
                let name = self.tls_server_name.clone().unwrap_or_else(|| {
                    self.server
                        .trim_start_matches('[')
                        .trim_end_matches(']')
                        .to_string()
                });
                ServerName::try_from(name.as_str())
                    .map_err(|e| bad(format!("TLS server name {name:?}: {e}")))?;
                Some((smtp::tls_connector(roots).map_err(bad)?, name))
            }
        };
        let policy = Policy {
            level: self.level,
            interval: self.interval,
            gather: self.gather,
            max_events: self.max_events,
            max_attempts: self.max_attempts,
        };
        Ok((
            SmtpConfig {
                server: self.server,
                port: self.port,
                ip,
                from,
                to,
                subject: self.subject,
                timeout: self.timeout,
                tls,
                implicit_tls: self.implicit_tls,
                credentials: self.credentials,
                mechanism: self.mechanism,
                allow_insecure_auth: self.allow_insecure_auth,
                helo_name: self.helo_name,
            },
            policy,
        ))
    }
}

/// Batching and rate limiting.
#[derive(Clone, Copy)]
struct Policy {
    level: Level,
    interval: Duration,
    gather: Duration,
    max_events: usize,
    max_attempts: u32,
}

/// An event waiting to be mailed.
struct Pending {
    line: String,
    attempts: u32,
}

/// The queue shared by the layer (any thread) and the mailer (loop thread).
struct Outbox {
    id: u64,
    remote: LoopRemote,
    cap: usize,
    state: Mutex<OutboxState>,
}

#[derive(Default)]
struct OutboxState {
    events: VecDeque<Pending>,
    /// Events not queued because the queue was full, to mention in the next mail.
    omitted: u64,
    /// A wake-up is on its way to the loop.
    wake_sent: bool,
}

impl Outbox {
    fn lock(&self) -> MutexGuard<'_, OutboxState> {
        // A panic while holding the lock leaves consistent data (plain pushes/pops).
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, line: String) {
        let mut st = self.lock();
        if st.events.len() >= self.cap {
            st.omitted += 1;
        } else {
            st.events.push_back(Pending { line, attempts: 0 });
        }
        if !st.wake_sent {
            st.wake_sent = true;
            drop(st);
            let id = self.id;
            // If the loop is gone the events stay queued; the guard reports them.
            let _ = self.remote.call_from_thread(move || wake(id));
        }
    }
}

/// The layer that feeds the outbox.
struct EmailLayer {
    outbox: Arc<Outbox>,
    level: Level,
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for EmailLayer {
    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let meta = event.metadata();
        if *meta.level() > self.level || meta.target().starts_with(INTERNAL_TARGET) {
            return;
        }
        let mut spans = String::new();
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                if !spans.is_empty() {
                    spans.push(':');
                }
                spans.push_str(span.name());
            }
        }
        self.outbox.push(format::event_line(event, &spans));
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    static MAILERS: RefCell<HashMap<u64, Weak<Mailer>>> = RefCell::new(HashMap::new());
}

/// Runs on the loop thread when new events were queued.
fn wake(id: u64) {
    let mailer = MAILERS.with(|m| m.borrow().get(&id).and_then(Weak::upgrade));
    if let Some(mailer) = mailer {
        mailer.outbox.lock().wake_sent = false;
        mailer.schedule();
    }
}

/// A mailer configured but not yet running (it needs the finished `Dispatch`).
pub(crate) struct MailerSetup {
    mailer: Mailer,
}

/// Validates the options and creates the layer and its (not yet started) mailer.
pub(crate) fn setup(
    options: EmailOptions,
    ev: &EventLoop,
) -> Result<(Box<dyn Layer<Registry> + Send + Sync>, MailerSetup), LogError> {
    let (config, policy) = options.validate()?;
    let outbox = Arc::new(Outbox {
        id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        remote: ev.remote(),
        cap: policy.max_events,
        state: Mutex::new(OutboxState::default()),
    });
    // A per-layer level filter (not only the check in `on_event`) so that the
    // subscriber's max-level hint stays tight: callsites below every output's level are
    // then disabled outright instead of being built and dropped.
    let layer = EmailLayer {
        outbox: outbox.clone(),
        level: policy.level,
    }
    .with_filter(LevelFilter::from_level(policy.level));
    let mailer = Mailer {
        ev: ev.clone(),
        config: Rc::new(config),
        policy,
        outbox,
        dispatch: RefCell::new(None),
        state: RefCell::new(MailerState::default()),
        sent: Cell::new(0),
        weak_self: Weak::new(),
    };
    Ok((Box::new(layer), MailerSetup { mailer }))
}

impl MailerSetup {
    /// Registers the mailer on this thread; it logs its own failures to `dispatch`.
    pub(crate) fn start(self, dispatch: Dispatch) -> Rc<Mailer> {
        let mailer = Rc::new_cyclic(|weak| {
            let mut m = self.mailer;
            m.weak_self = weak.clone();
            *m.dispatch.borrow_mut() = Some(dispatch);
            m
        });
        MAILERS.with(|m| {
            m.borrow_mut()
                .insert(mailer.outbox.id, Rc::downgrade(&mailer))
        });
        // Events logged between `build` and now already sent their wake-up.
        mailer
    }
}

/// The loop-side sender.
pub(crate) struct Mailer {
    ev: EventLoop,
    config: Rc<SmtpConfig>,
    policy: Policy,
    outbox: Arc<Outbox>,
    dispatch: RefCell<Option<Dispatch>>,
    state: RefCell<MailerState>,
    sent: Cell<u64>,
    weak_self: Weak<Mailer>,
}

#[derive(Default)]
struct MailerState {
    timer: Option<Handle>,
    /// The task sending a mail, and the events it carries.
    in_flight: Option<(JoinHandle<()>, Vec<Pending>)>,
    last_start: Option<Instant>,
    closed: bool,
}

impl Mailer {
    /// Arms the send timer if events wait and nothing is armed or in flight.
    fn schedule(&self) {
        let mut st = self.state.borrow_mut();
        if st.closed || st.in_flight.is_some() || st.timer.is_some() {
            return;
        }
        {
            let ob = self.outbox.lock();
            if ob.events.is_empty() && ob.omitted == 0 {
                return;
            }
        }
        let mut at = Instant::now() + self.policy.gather;
        if let Some(last) = st.last_start {
            at = at.max(last + self.policy.interval);
        }
        let weak = self.weak_self.clone();
        st.timer = Some(self.ev.call_at(at, move || {
            if let Some(m) = weak.upgrade() {
                m.state.borrow_mut().timer = None;
                m.start_send();
            }
        }));
    }

    /// Sends now, ignoring the rate limit.
    pub(crate) fn send_now(&self) {
        let timer = self.state.borrow_mut().timer.take();
        if let Some(t) = timer {
            t.cancel();
        }
        if self.state.borrow().in_flight.is_none() {
            self.start_send();
        }
    }

    fn start_send(&self) {
        if self.state.borrow().closed || self.state.borrow().in_flight.is_some() {
            return;
        }
        let (events, omitted) = {
            let mut ob = self.outbox.lock();
            let n = ob.events.len().min(self.policy.max_events);
            let events: Vec<Pending> = ob.events.drain(..n).collect();
            (events, std::mem::take(&mut ob.omitted))
        };
        if events.is_empty() && omitted == 0 {
            return;
        }
        let mut body = String::new();
        for e in &events {
            body.push_str(&e.line);
            body.push('\n');
        }
        if omitted > 0 {
            let _ = writeln!(
                body,
                "\n{omitted} more event(s) were logged but not included; see the local log."
            );
        }
        let message = match message::build(&self.config, body) {
            Ok(m) => m,
            Err(e) => {
                self.log_error(format_args!(
                    "cannot build the e-mail for {} event(s): {e}",
                    events.len()
                ));
                return;
            }
        };
        let (weak, config) = (self.weak_self.clone(), self.config.clone());
        let task = self.ev.spawn(async move {
            let result = smtp::send(&config, &message).await;
            if let Some(m) = weak.upgrade() {
                m.finished(result);
            }
        });
        let mut st = self.state.borrow_mut();
        st.last_start = Some(Instant::now());
        st.in_flight = Some((task, events));
    }

    /// Called by the sending task when it ends.
    fn finished(&self, result: Result<(), SmtpError>) {
        let Some((_task, events)) = self.state.borrow_mut().in_flight.take() else {
            return;
        };
        match result {
            Ok(()) => {
                self.sent.set(self.sent.get() + 1);
                self.log_debug(format_args!("mailed {} event(s)", events.len()));
            }
            Err(e) => {
                let mut retry = Vec::new();
                let mut given_up = 0;
                for mut p in events {
                    p.attempts += 1;
                    if p.attempts < self.policy.max_attempts {
                        retry.push(p);
                    } else {
                        given_up += 1;
                    }
                }
                let what = format!(
                    "cannot e-mail the log to {}:{}: {e}",
                    self.config.server, self.config.port
                );
                match (retry.len(), given_up) {
                    (r, 0) => self.log_error(format_args!("{what}; {r} event(s) will be retried")),
                    (0, g) => self.log_error(format_args!(
                        "{what}; {g} event(s) given up (they are in the local log)"
                    )),
                    (r, g) => self.log_error(format_args!(
                        "{what}; {r} event(s) will be retried, {g} given up (they are in the local log)"
                    )),
                }
                if !retry.is_empty() {
                    let mut ob = self.outbox.lock();
                    for p in retry.into_iter().rev() {
                        ob.events.push_front(p);
                    }
                    while ob.events.len() > self.policy.max_events {
                        ob.events.pop_back();
                        ob.omitted += 1;
                    }
                }
            }
        }
        self.schedule();
    }

    fn log_error(&self, args: std::fmt::Arguments<'_>) {
        self.with_dispatch(|| tracing::error!(target: INTERNAL_TARGET, "{args}"));
    }

    fn log_debug(&self, args: std::fmt::Arguments<'_>) {
        self.with_dispatch(|| tracing::debug!(target: INTERNAL_TARGET, "{args}"));
    }

    fn with_dispatch(&self, f: impl FnOnce()) {
        let dispatch = self.dispatch.borrow().clone();
        match dispatch {
            Some(d) => tracing::dispatcher::with_default(&d, f),
            None => f(),
        }
    }

    /// Events queued or being sent.
    pub(crate) fn pending(&self) -> usize {
        let flying = self
            .state
            .borrow()
            .in_flight
            .as_ref()
            .map_or(0, |(_, e)| e.len());
        let ob = self.outbox.lock();
        flying + ob.events.len() + ob.omitted as usize
    }

    /// Mails sent successfully.
    pub(crate) fn sent(&self) -> u64 {
        self.sent.get()
    }

    /// Stops sending; returns how many events were not mailed.
    pub(crate) fn shutdown(&self) -> usize {
        let unsent = self.pending();
        let (timer, flight) = {
            let mut st = self.state.borrow_mut();
            st.closed = true;
            (st.timer.take(), st.in_flight.take())
        };
        if let Some(t) = timer {
            t.cancel();
        }
        if let Some((task, _)) = flight {
            task.abort();
        }
        MAILERS.with(|m| m.borrow_mut().remove(&self.outbox.id));
        // The dispatch holds the layers; drop it so nothing keeps a cycle alive.
        self.dispatch.borrow_mut().take();
        unsent
    }
}
