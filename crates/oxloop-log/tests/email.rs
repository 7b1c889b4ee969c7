//! E-mail delivery end to end: an SMTP sink on 127.0.0.1 (std threads, optional
//! STARTTLS with rustls and a certificate made by rcgen, optional AUTH) receives what
//! the loop sends.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use oxloop::EventLoop;
use oxloop_log::{AuthMechanism, EmailOptions, FileOptions, Log, LogGuard, TlsRoots};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ServerConfig, ServerConnection, StreamOwned};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::Dispatch;

// ---------------------------------------------------------------- the sink

#[derive(Debug, Clone)]
struct Mail {
    /// When the connection that carried it was accepted.
    at: Instant,
    from: String,
    to: Vec<String>,
    data: String,
    user: Option<String>,
    tls: bool,
}

impl Mail {
    fn header(&self, name: &str) -> Option<String> {
        let head = self.data.split("\r\n\r\n").next().unwrap();
        head.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .map(str::to_string)
    }

    /// The body, transfer encoding undone.
    fn body(&self) -> String {
        let raw = self.data.split_once("\r\n\r\n").unwrap().1;
        match self.header("Content-Transfer-Encoding").as_deref() {
            Some("quoted-printable") => {
                let joined = raw.replace("=\r\n", "");
                let b = joined.as_bytes();
                let mut out = Vec::new();
                let mut i = 0;
                while i < b.len() {
                    if b[i] == b'=' {
                        out.push(u8::from_str_radix(&joined[i + 1..i + 3], 16).unwrap());
                        i += 3;
                    } else {
                        out.push(b[i]);
                        i += 1;
                    }
                }
                String::from_utf8(out).unwrap()
            }
            Some("base64") => {
                String::from_utf8(B64.decode(raw.replace("\r\n", "")).unwrap()).unwrap()
            }
            _ => raw.to_string(),
        }
    }
}

#[derive(Default, Clone)]
struct SinkOptions {
    refuse: bool,
    tls: Option<Arc<ServerConfig>>,
    /// TLS from the first byte instead of STARTTLS.
    implicit: bool,
    auth: Option<(String, String)>,
}

struct Sink {
    addr: SocketAddr,
    mails: Arc<Mutex<Vec<Mail>>>,
}

impl Sink {
    fn start(opts: SinkOptions) -> Sink {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mails = Arc::new(Mutex::new(Vec::new()));
        let m = mails.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let (m, opts) = (m.clone(), opts.clone());
                std::thread::spawn(move || {
                    let _ = serve(conn, &opts, &m);
                });
            }
        });
        Sink { addr, mails }
    }

    fn mails(&self) -> Vec<Mail> {
        self.mails.lock().unwrap().clone()
    }
}

trait Rw: Read + Write {}
impl<T: Read + Write> Rw for T {}

fn read_line(s: &mut dyn Rw) -> io::Result<String> {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    loop {
        if s.read(&mut b)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        line.push(b[0]);
        if line.ends_with(b"\r\n") {
            line.truncate(line.len() - 2);
            return Ok(String::from_utf8(line).unwrap());
        }
    }
}

fn serve(conn: TcpStream, opts: &SinkOptions, mails: &Mutex<Vec<Mail>>) -> io::Result<()> {
    let accepted = Instant::now();
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut s: Box<dyn Rw> = Box::new(conn.try_clone()?);
    if opts.refuse {
        s.write_all(b"554 no service here\r\n")?;
        let _ = read_line(&mut *s);
        return Ok(());
    }
    let mut tls = false;
    if opts.implicit {
        let server = ServerConnection::new(opts.tls.clone().unwrap()).unwrap();
        s = Box::new(StreamOwned::new(server, conn.try_clone()?));
        tls = true;
    }
    s.write_all(b"220 sink ESMTP\r\n")?;
    let (mut user, mut from, mut to) = (None, String::new(), Vec::new());
    loop {
        let line = read_line(&mut *s)?;
        let upper = line.to_ascii_uppercase();
        if upper.starts_with("EHLO") {
            let mut reply = String::from("250-sink\r\n");
            if opts.tls.is_some() && !tls {
                reply.push_str("250-STARTTLS\r\n");
            }
            if opts.auth.is_some() {
                reply.push_str("250-AUTH LOGIN PLAIN\r\n");
            }
            reply.push_str("250 8BITMIME\r\n");
            s.write_all(reply.as_bytes())?;
        } else if upper == "STARTTLS" {
            s.write_all(b"220 go ahead\r\n")?;
            let server = ServerConnection::new(opts.tls.clone().unwrap()).unwrap();
            s = Box::new(StreamOwned::new(server, conn.try_clone()?));
            tls = true;
        } else if let Some(token) = line.strip_prefix("AUTH PLAIN ") {
            let raw = String::from_utf8(B64.decode(token).unwrap()).unwrap();
            let parts: Vec<&str> = raw.split('\0').collect();
            user = check(opts, parts[1], parts[2]);
            s.write_all(if user.is_some() {
                b"235 ok\r\n"
            } else {
                b"535 no\r\n"
            })?;
        } else if upper == "AUTH LOGIN" {
            s.write_all(b"334 VXNlcm5hbWU6\r\n")?;
            let u = String::from_utf8(B64.decode(read_line(&mut *s)?).unwrap()).unwrap();
            s.write_all(b"334 UGFzc3dvcmQ6\r\n")?;
            let p = String::from_utf8(B64.decode(read_line(&mut *s)?).unwrap()).unwrap();
            user = check(opts, &u, &p);
            s.write_all(if user.is_some() {
                b"235 ok\r\n"
            } else {
                b"535 no\r\n"
            })?;
        } else if let Some(rest) = upper.strip_prefix("MAIL FROM:") {
            if opts.auth.is_some() && user.is_none() {
                s.write_all(b"530 authentication required\r\n")?;
                continue;
            }
            from = line[line.len() - rest.len()..].to_string();
            to.clear();
            s.write_all(b"250 ok\r\n")?;
        } else if upper.starts_with("RCPT TO:") {
            to.push(line[8..].to_string());
            s.write_all(b"250 ok\r\n")?;
        } else if upper == "DATA" {
            s.write_all(b"354 go\r\n")?;
            let mut data = String::new();
            loop {
                let l = read_line(&mut *s)?;
                if l == "." {
                    break;
                }
                data.push_str(l.strip_prefix('.').unwrap_or(&l));
                data.push_str("\r\n");
            }
            mails.lock().unwrap().push(Mail {
                at: accepted,
                from: from.clone(),
                to: to.clone(),
                data,
                user: user.clone(),
                tls,
            });
            s.write_all(b"250 queued\r\n")?;
        } else if upper == "QUIT" {
            s.write_all(b"221 bye\r\n")?;
            s.flush()?;
            return Ok(());
        } else {
            s.write_all(b"502 what\r\n")?;
        }
    }
}

fn check(opts: &SinkOptions, user: &str, pass: &str) -> Option<String> {
    let (u, p) = opts.auth.as_ref()?;
    (u == user && p == pass).then(|| user.to_string())
}

fn tls_server(names: &[&str]) -> (Arc<ServerConfig>, String) {
    let ck =
        rcgen::generate_simple_self_signed(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()));
    let cert: CertificateDer<'static> = ck.cert.der().clone();
    let config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .unwrap();
    (Arc::new(config), ck.cert.pem())
}

// ---------------------------------------------------------------- helpers

fn options(addr: SocketAddr) -> EmailOptions {
    EmailOptions::new(
        "127.0.0.1",
        addr.port(),
        "Oxloop App <app@example.com>",
        ["ops@example.com", "dev@example.org"],
    )
    .subject("Errors in the test app")
    .interval(Duration::from_millis(300))
    .gather(Duration::from_millis(30))
    .timeout(Duration::from_secs(3))
}

fn setup(ev: &EventLoop, dir: &Path, email: EmailOptions) -> (Dispatch, LogGuard) {
    Log::builder()
        .filter("info")
        .file(FileOptions::size(dir, "app", 1 << 20))
        .email(email)
        .build(ev)
        .unwrap()
}

fn file_text(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("app.log")).unwrap()
}

/// Runs the loop until it has no work left, failing the test if that takes too long.
fn run_bounded(ev: &EventLoop) {
    let remote = ev.remote();
    let watchdog = ev.call_later(Duration::from_secs(10), move || {
        let _ = remote.stop();
        panic!("the loop still had work after 10 s");
    });
    watchdog.unref();
    ev.run().unwrap();
    watchdog.cancel();
}

// ---------------------------------------------------------------- tests

#[test]
fn burst_is_one_mail_and_the_next_waits_for_the_interval() {
    let sink = Sink::start(SinkOptions::default());
    let ev = EventLoop::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (dispatch, guard) = setup(&ev, dir.path(), options(sink.addr));
    let _default = tracing::dispatcher::set_default(&dispatch);

    for i in 1..=5 {
        tracing::error!(request = i, "request failed: error number {i}");
    }
    tracing::warn!("only a warning");
    tracing::info!("all is well");
    run_bounded(&ev);
    let mails = sink.mails();
    assert_eq!(mails.len(), 1);
    let m = &mails[0];
    assert_eq!(m.from, "<app@example.com>");
    assert_eq!(m.to, ["<ops@example.com>", "<dev@example.org>"]);
    assert_eq!(
        m.header("Subject").as_deref(),
        Some("Errors in the test app")
    );
    assert!(
        m.header("From").unwrap().contains("app@example.com"),
        "{}",
        m.data
    );
    assert!(
        m.header("To").unwrap().contains("dev@example.org"),
        "{}",
        m.data
    );
    assert!(
        m.header("Date").is_some() && m.header("Message-ID").is_some(),
        "{}",
        m.data
    );
    let body = m.body();
    for i in 1..=5 {
        assert!(
            body.contains(&format!("error number {i} request={i}")),
            "{body}"
        );
    }
    assert_eq!(body.matches("ERROR").count(), 5, "{body}");
    assert!(!body.contains("only a warning"), "{body}");

    // A second burst: sent no sooner than the interval after the first mail.
    tracing::error!("second burst a");
    tracing::error!("second burst b");
    run_bounded(&ev);
    let mails = sink.mails();
    assert_eq!(mails.len(), 2);
    let gap = mails[1].at - mails[0].at;
    assert!(
        // Accept times: the first may lag its start by the connect time.
        gap >= Duration::from_millis(250),
        "second mail after {gap:?}"
    );
    let body = mails[1].body();
    assert!(
        body.contains("second burst a") && body.contains("second burst b"),
        "{body}"
    );
    assert!(!body.contains("error number"), "{body}");
    assert_eq!(guard.mails_sent(), 2);
    assert_eq!(guard.mail_pending(), 0);
    drop(guard);
    let text = file_text(dir.path());
    assert!(
        text.contains("error number 5") && text.contains("only a warning"),
        "{text}"
    );
}

/// Runs the loop until `done` holds (checked every 10 ms), for at most 10 s.
fn run_until(ev: &EventLoop, done: impl Fn() -> bool + 'static) {
    fn poll(ev: EventLoop, done: Rc<dyn Fn() -> bool>, deadline: Instant) {
        if done() {
            ev.stop();
            return;
        }
        assert!(Instant::now() < deadline, "condition not met within 10 s");
        let e = ev.clone();
        ev.call_later(Duration::from_millis(10), move || poll(e, done, deadline));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    poll(ev.clone(), Rc::new(done), deadline);
    ev.run_forever().unwrap();
}

#[test]
fn errors_are_mailed_even_when_the_local_filter_is_off() {
    let sink = Sink::start(SinkOptions::default());
    let ev = EventLoop::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (dispatch, guard) = Log::builder()
        .filter("off")
        .file(FileOptions::size(dir.path(), "app", 1 << 20))
        .email(options(sink.addr))
        .build(&ev)
        .unwrap();
    tracing::dispatcher::with_default(&dispatch, || {
        tracing::error!("mailed anyway");
        tracing::debug!("not mailed");
    });
    run_bounded(&ev);
    let mails = sink.mails();
    assert_eq!(mails.len(), 1);
    assert!(mails[0].body().contains("mailed anyway"));
    assert!(!mails[0].body().contains("not mailed"));
    drop(guard);
    assert_eq!(file_text(dir.path()), "", "the file follows the filter");
}

#[test]
fn events_from_other_threads_reach_the_running_loop() {
    let sink = Sink::start(SinkOptions::default());
    let ev = EventLoop::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    // A host name, resolved on a helper thread ("localhost" may give ::1 first, where
    // nothing listens; the client then tries the next address).
    let opts = EmailOptions::new(
        "localhost",
        sink.addr.port(),
        "app@example.com",
        ["ops@example.com"],
    )
    .interval(Duration::from_millis(300))
    .gather(Duration::from_millis(300))
    .timeout(Duration::from_secs(3))
    .subject("threads");
    let (dispatch, guard) = setup(&ev, dir.path(), opts);
    let start = Arc::new(std::sync::Barrier::new(4));
    let producers: Vec<_> = (0..4)
        .map(|t| {
            let d = dispatch.clone();
            let start = start.clone();
            std::thread::spawn(move || {
                start.wait();
                tracing::dispatcher::with_default(&d, || {
                    for i in 0..3 {
                        tracing::error!("thread {t} failure {i}");
                        std::thread::sleep(Duration::from_millis(5));
                    }
                })
            })
        })
        .collect();
    let mails = sink.mails.clone();
    run_until(&ev, move || !mails.lock().unwrap().is_empty());
    for p in producers {
        p.join().unwrap();
    }
    let mails = sink.mails();
    assert_eq!(mails.len(), 1, "{mails:?}");
    let body = mails[0].body();
    for t in 0..4 {
        for i in 0..3 {
            assert!(body.contains(&format!("thread {t} failure {i}")), "{body}");
        }
    }
    drop(guard);
}

/// Sends one error through `email`, runs the loop until the mailer gives up, and
/// returns the file output and the guard's view.
fn fail_once(email: EmailOptions) -> String {
    let ev = EventLoop::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (dispatch, guard) = setup(&ev, dir.path(), email.max_attempts(1));
    tracing::dispatcher::with_default(&dispatch, || {
        tracing::error!("the original error");
        tracing::info!("an ordinary line");
    });
    run_bounded(&ev);
    assert_eq!(guard.mails_sent(), 0);
    assert_eq!(guard.mail_pending(), 0, "given up after one attempt");
    tracing::dispatcher::with_default(&dispatch, || tracing::info!("after the failure"));
    drop(guard);
    let text = file_text(dir.path());
    for expected in [
        "the original error",
        "an ordinary line",
        "after the failure",
        "given up",
    ] {
        assert!(text.contains(expected), "{expected:?} missing from {text}");
    }
    text
}

#[test]
fn refused_greeting_is_logged_locally() {
    let sink = Sink::start(SinkOptions {
        refuse: true,
        ..SinkOptions::default()
    });
    let text = fail_once(options(sink.addr));
    assert!(
        text.contains("answered 554 to the greeting: no service here"),
        "{text}"
    );
    assert!(sink.mails().is_empty());
}

#[test]
fn closed_port_is_logged_locally() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let text = fail_once(options(addr));
    assert!(text.contains("cannot connect"), "{text}");
}

#[test]
fn silent_server_times_out() {
    // Accepts the connection (the backlog does) but never greets.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let text =
        fail_once(options(listener.local_addr().unwrap()).timeout(Duration::from_millis(300)));
    assert!(
        text.contains("timed out waiting for the greeting"),
        "{text}"
    );
}

#[test]
fn a_failed_batch_is_retried_with_the_next_one() {
    // The first connection is refused, the next one accepted: the event of the failed
    // mail arrives in the second mail.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mails = Arc::new(Mutex::new(Vec::new()));
    let m = mails.clone();
    std::thread::spawn(move || {
        for (n, conn) in listener.incoming().enumerate() {
            let opts = SinkOptions {
                refuse: n == 0,
                ..SinkOptions::default()
            };
            let _ = serve(conn.unwrap(), &opts, &m);
        }
    });
    let ev = EventLoop::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (dispatch, guard) = setup(&ev, dir.path(), options(addr));
    tracing::dispatcher::with_default(&dispatch, || tracing::error!("first error"));
    run_bounded(&ev);
    let mails = mails.lock().unwrap().clone();
    assert_eq!(mails.len(), 1);
    assert!(mails[0].body().contains("first error"));
    drop(guard);
    let text = file_text(dir.path());
    assert!(text.contains("1 event(s) will be retried"), "{text}");
}

#[test]
fn auth_plain_and_login() {
    for mechanism in [None, Some(AuthMechanism::Login)] {
        let sink = Sink::start(SinkOptions {
            auth: Some(("robot".into(), "s3cret".into())),
            ..SinkOptions::default()
        });
        let ev = EventLoop::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut email = options(sink.addr)
            .credentials("robot", "s3cret")
            .allow_insecure_auth(true);
        if let Some(m) = mechanism {
            email = email.auth_mechanism(m);
        }
        let (dispatch, guard) = setup(&ev, dir.path(), email);
        tracing::dispatcher::with_default(&dispatch, || tracing::error!("authenticated"));
        run_bounded(&ev);
        let mails = sink.mails();
        assert_eq!(mails.len(), 1, "{mechanism:?}: {}", file_text(dir.path()));
        assert_eq!(mails[0].user.as_deref(), Some("robot"));
        drop(guard);
    }
}

#[test]
fn wrong_password_and_plaintext_credentials_fail_clearly() {
    let sink = Sink::start(SinkOptions {
        auth: Some(("robot".into(), "s3cret".into())),
        ..SinkOptions::default()
    });
    let text = fail_once(
        options(sink.addr)
            .credentials("robot", "wrong")
            .allow_insecure_auth(true),
    );
    assert!(text.contains("answered 535 to AUTH"), "{text}");
    let text = fail_once(options(sink.addr).credentials("robot", "s3cret"));
    assert!(
        text.contains("refusing to send credentials without TLS"),
        "{text}"
    );
    assert!(sink.mails().is_empty());
}

#[test]
fn starttls_with_a_private_certificate() {
    let (server, pem) = tls_server(&["localhost"]);
    let sink = Sink::start(SinkOptions {
        tls: Some(server),
        auth: Some(("robot".into(), "s3cret".into())),
        ..SinkOptions::default()
    });
    let ev = EventLoop::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let email = options(sink.addr)
        .starttls(TlsRoots::Pem(pem.into_bytes()))
        .tls_server_name("localhost")
        .credentials("robot", "s3cret"); // no allow_insecure_auth: TLS is required
    let (dispatch, guard) = setup(&ev, dir.path(), email);
    tracing::dispatcher::with_default(&dispatch, || {
        for i in 0..200 {
            tracing::error!("over TLS {i}: {}", ".".repeat(i));
        }
    });
    run_bounded(&ev);
    let mails = sink.mails();
    assert_eq!(mails.len(), 1, "{}", file_text(dir.path()));
    assert!(mails[0].tls);
    assert_eq!(mails[0].user.as_deref(), Some("robot"));
    let body = mails[0].body();
    assert!(
        body.contains("over TLS 0: \n") || body.contains("over TLS 0: \r\n"),
        "{body}"
    );
    assert!(body.contains(&format!("over TLS 199: {}", ".".repeat(199))));
    drop(guard);
}

#[test]
fn implicit_tls() {
    let (server, pem) = tls_server(&["localhost"]);
    let sink = Sink::start(SinkOptions {
        tls: Some(server),
        implicit: true,
        ..SinkOptions::default()
    });
    let ev = EventLoop::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let email = options(sink.addr)
        .implicit_tls(TlsRoots::Pem(pem.into_bytes()))
        .tls_server_name("localhost");
    let (dispatch, guard) = setup(&ev, dir.path(), email);
    tracing::dispatcher::with_default(&dispatch, || tracing::error!("implicit"));
    run_bounded(&ev);
    let mails = sink.mails();
    assert_eq!(mails.len(), 1, "{}", file_text(dir.path()));
    assert!(mails[0].tls && mails[0].body().contains("implicit"));
    drop(guard);
}

#[test]
fn starttls_rejects_an_unknown_certificate() {
    let (server, _) = tls_server(&["localhost"]);
    let (_, other_pem) = tls_server(&["localhost"]);
    let sink = Sink::start(SinkOptions {
        tls: Some(server),
        ..SinkOptions::default()
    });
    let text = fail_once(
        options(sink.addr)
            .starttls(TlsRoots::Pem(other_pem.into_bytes()))
            .tls_server_name("localhost"),
    );
    assert!(text.contains("TLS error"), "{text}");
    assert!(sink.mails().is_empty());
}

#[test]
fn starttls_required_but_not_offered() {
    let sink = Sink::start(SinkOptions::default());
    let (_, pem) = tls_server(&["localhost"]);
    let text = fail_once(options(sink.addr).starttls(TlsRoots::Pem(pem.into_bytes())));
    assert!(text.contains("does not offer STARTTLS"), "{text}");
}

#[test]
fn bad_email_options_are_clear_errors() {
    let ev = EventLoop::new().unwrap();
    let addr: SocketAddr = ([127, 0, 0, 1], 25).into();
    let cases = [
        (
            "no recipient",
            EmailOptions::new("127.0.0.1", 25, "a@b.c", Vec::<String>::new()),
        ),
        (
            "sender",
            EmailOptions::new("127.0.0.1", 25, "not an address", ["a@b.c"]),
        ),
        (
            "recipient",
            EmailOptions::new("127.0.0.1", 25, "a@b.c", ["a@b.c", "@@"]),
        ),
        ("line break", options(addr).subject("two\nlines")),
        (
            "no certificate",
            options(addr).starttls(TlsRoots::Pem(b"junk".to_vec())),
        ),
        (
            "port is zero",
            EmailOptions::new("127.0.0.1", 0, "a@b.c", ["a@b.c"]),
        ),
    ];
    for (expected, email) in cases {
        let err = Log::builder()
            .filter("info")
            .email(email)
            .build(&ev)
            .unwrap_err();
        assert!(err.to_string().contains(expected), "{expected}: {err}");
    }
}

#[test]
fn unsent_events_are_reported_when_the_guard_drops() {
    let sink = Sink::start(SinkOptions::default());
    let ev = EventLoop::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (dispatch, guard) = setup(&ev, dir.path(), options(sink.addr));
    tracing::dispatcher::with_default(&dispatch, || {
        tracing::error!("never mailed 1");
        tracing::error!("never mailed 2");
    });
    // The loop never runs.
    assert_eq!(guard.mail_pending(), 2);
    drop(guard);
    let text = file_text(dir.path());
    assert!(
        text.contains("2 event(s) were logged but not e-mailed"),
        "{text}"
    );
}

#[test]
fn send_mail_now_skips_the_rate_limit() {
    let sink = Sink::start(SinkOptions::default());
    let ev = EventLoop::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (dispatch, guard) = setup(
        &ev,
        dir.path(),
        options(sink.addr).interval(Duration::from_secs(60)),
    );
    tracing::dispatcher::with_default(&dispatch, || tracing::error!("one"));
    run_bounded(&ev);
    tracing::dispatcher::with_default(&dispatch, || tracing::error!("two"));
    let started = Instant::now();
    guard.send_mail_now();
    run_bounded(&ev);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(sink.mails().len(), 2);
    drop(guard);
}

#[test]
fn malformed_and_endless_replies_are_protocol_errors() {
    for (greeting, expected) in [
        (
            b"hello there\r\n".to_vec(),
            "malformed reply \"hello there\"",
        ),
        (
            [b"220-".to_vec(), vec![b'x'; 200_000]].concat(),
            "reply too long",
        ),
    ] {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let _ = conn.write_all(&greeting);
            let _ = conn.read(&mut [0u8; 64]);
        });
        let text = fail_once(options(addr));
        assert!(text.contains(expected), "{expected}: {text}");
    }
}

#[test]
fn bytes_after_the_starttls_reply_are_refused() {
    // A reply injected in clear right behind `220` must not be read as if it came over TLS.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let (conn, _) = listener.accept().unwrap();
        let mut s: Box<dyn Rw> = Box::new(conn);
        s.write_all(b"220 sink ESMTP\r\n").unwrap();
        let _ = read_line(&mut *s); // EHLO
        s.write_all(b"250-sink\r\n250 STARTTLS\r\n").unwrap();
        let _ = read_line(&mut *s); // STARTTLS
        s.write_all(b"220 go ahead\r\n250 injected\r\n").unwrap();
        let _ = s.read(&mut [0u8; 64]);
    });
    let (_, pem) = tls_server(&["localhost"]);
    let text = fail_once(
        options(addr)
            .starttls(TlsRoots::Pem(pem.into_bytes()))
            .tls_server_name("localhost"),
    );
    assert!(
        text.contains("data received after the STARTTLS reply"),
        "{text}"
    );
}
