//! A small SMTP client (RFC 5321) as one async function on the loop's networking, with
//! STARTTLS (RFC 3207) or implicit TLS, and AUTH PLAIN / LOGIN.
//!
//! [`send`] delivers one mail; the mailer runs it as a task and aborts the task to give
//! up. Every step (name resolution, each connection attempt, the TLS handshake, each
//! write, each reply) has its own deadline of `SmtpConfig::timeout`.

use super::reply::{Reply, ReplyParser, MAX_REPLY};
use super::{AuthMechanism, SmtpConfig, TlsRoots};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use futures_io::{AsyncRead, AsyncWrite};
use oxloop::io::{AsyncWriteExt, BufReader};
use oxloop::net::tls::pki_types::pem::PemObject;
use oxloop::net::tls::pki_types::CertificateDer;
use oxloop::net::tls::rustls::{self, RootCertStore};
use oxloop::net::tls::TlsConnector;
use oxloop::net::{lookup_host, TcpStream};
use oxloop::task::timeout;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;

/// Why a mail could not be sent.
#[derive(Debug)]
pub(crate) enum SmtpError {
    Resolve(io::Error),
    NoAddress,
    Connect(io::Error),
    Io(io::Error),
    Tls(io::Error),
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

/// A TLS connector trusting `roots` (ring provider, rustls's safe defaults).
pub(crate) fn tls_connector(roots: &TlsRoots) -> Result<TlsConnector, String> {
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
    TlsConnector::new(store).map_err(|e| e.to_string())
}

/// Sends one mail: `message` is the DATA payload, already dot-stuffed and terminated.
pub(crate) async fn send(cfg: &SmtpConfig, message: &[u8]) -> Result<(), SmtpError> {
    let mut tcp = connect(cfg).await?;
    let Some((connector, name)) = &cfg.tls else {
        let mut smtp = Conversation::new(&mut tcp, cfg);
        smtp.expect("the greeting", &[220]).await?;
        let ext = smtp.hello().await?;
        return smtp.deliver(&ext, false, message).await;
    };
    if !cfg.implicit_tls {
        let mut smtp = Conversation::new(&mut tcp, cfg);
        smtp.expect("the greeting", &[220]).await?;
        if !smtp.hello().await?.starttls {
            return Err(SmtpError::NoStartTls);
        }
        smtp.command("STARTTLS", "STARTTLS", &[220]).await?;
        if !smtp.reader.buffer().is_empty() {
            // Bytes sent in clear could be taken for replies over TLS (command injection).
            return Err(SmtpError::Protocol(
                "data received after the STARTTLS reply, before TLS".into(),
            ));
        }
    }
    let handshake = connector.connect(name, tcp);
    let mut tls = step(cfg, "the TLS handshake", handshake)
        .await?
        .map_err(SmtpError::Tls)?;
    let mut smtp = Conversation::new(&mut tls, cfg);
    if cfg.implicit_tls {
        smtp.expect("the greeting", &[220]).await?;
    }
    // After STARTTLS the client starts over with EHLO (RFC 3207).
    let ext = smtp.hello().await?;
    smtp.deliver(&ext, true, message).await
}

/// Runs `future` with the per-step deadline.
async fn step<F: Future>(
    cfg: &SmtpConfig,
    during: &'static str,
    future: F,
) -> Result<F::Output, SmtpError> {
    timeout(cfg.timeout, future)
        .await
        .map_err(|_| SmtpError::Timeout(during))
}

/// Resolves the server and connects to its addresses in turn, so `localhost` → `::1`
/// refused → `127.0.0.1` works.
async fn connect(cfg: &SmtpConfig) -> Result<TcpStream, SmtpError> {
    let addrs = match cfg.ip {
        Some(ip) => vec![SocketAddr::new(ip, cfg.port)],
        None => step(cfg, "name resolution", lookup_host(&cfg.server, cfg.port))
            .await?
            .map_err(SmtpError::Resolve)?,
    };
    let mut error = SmtpError::NoAddress;
    for addr in addrs {
        error = match step(cfg, "the connection", TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                stream.set_nodelay(true).map_err(SmtpError::Connect)?;
                return Ok(stream);
            }
            Ok(Err(e)) => SmtpError::Connect(e),
            Err(timed_out) => timed_out,
        };
    }
    Err(error)
}

/// What EHLO told us.
#[derive(Default)]
struct Extensions {
    starttls: bool,
    auth: Vec<String>,
}

/// Commands and replies over one stream (plain TCP, or TLS).
struct Conversation<'a, S> {
    reader: BufReader<&'a mut S>,
    cfg: &'a SmtpConfig,
}

impl<'a, S: AsyncRead + AsyncWrite + Unpin> Conversation<'a, S> {
    fn new(stream: &'a mut S, cfg: &'a SmtpConfig) -> Self {
        Conversation {
            reader: BufReader::new(stream),
            cfg,
        }
    }

    async fn write(&mut self, during: &'static str, bytes: &[u8]) -> Result<(), SmtpError> {
        let stream = self.reader.get_mut();
        let write = async {
            stream.write_all(bytes).await?;
            stream.flush().await
        };
        step(self.cfg, during, write).await?.map_err(SmtpError::Io)
    }

    /// Reads the next reply; a code not in `accepted` is a rejection.
    async fn expect(&mut self, during: &'static str, accepted: &[u16]) -> Result<Reply, SmtpError> {
        let reply = step(self.cfg, during, read_reply(&mut self.reader, during)).await??;
        if accepted.contains(&reply.code) {
            Ok(reply)
        } else {
            Err(SmtpError::Rejected {
                during,
                code: reply.code,
                text: reply.text(),
            })
        }
    }

    /// Sends `line` and expects one of the `accepted` codes back.
    async fn command(
        &mut self,
        line: &str,
        during: &'static str,
        accepted: &[u16],
    ) -> Result<Reply, SmtpError> {
        self.write(during, format!("{line}\r\n").as_bytes()).await?;
        self.expect(during, accepted).await
    }

    /// EHLO, or HELO for an old server when neither TLS nor AUTH is needed.
    async fn hello(&mut self) -> Result<Extensions, SmtpError> {
        let cfg = self.cfg;
        let ehlo = format!("EHLO {}", cfg.helo_name);
        let helo_will_do = cfg.tls.is_none() && cfg.credentials.is_none();
        let accepted: &[u16] = if helo_will_do {
            &[250, 500, 501, 502]
        } else {
            &[250]
        };
        let reply = self.command(&ehlo, "EHLO", accepted).await?;
        if reply.code == 250 {
            return Ok(parse_extensions(&reply.lines[1..]));
        }
        let helo = format!("HELO {}", cfg.helo_name);
        self.command(&helo, "HELO", &[250]).await?;
        Ok(Extensions::default())
    }

    /// AUTH when configured, then the envelope, the message and QUIT.
    async fn deliver(
        &mut self,
        ext: &Extensions,
        tls: bool,
        message: &[u8],
    ) -> Result<(), SmtpError> {
        let cfg = self.cfg;
        if let Some((user, pass)) = &cfg.credentials {
            if !tls && !cfg.allow_insecure_auth {
                return Err(SmtpError::InsecureAuth);
            }
            let offered = |m: &str| ext.auth.iter().any(|a| a == m);
            let mechanism = match cfg.mechanism {
                Some(m) => m,
                None if offered("PLAIN") => AuthMechanism::Plain,
                None if offered("LOGIN") => AuthMechanism::Login,
                None => return Err(SmtpError::NoAuthMechanism(ext.auth.join(" "))),
            };
            match mechanism {
                AuthMechanism::Plain => {
                    let token = B64.encode(format!("\0{user}\0{pass}"));
                    self.command(&format!("AUTH PLAIN {token}"), "AUTH", &[235])
                        .await?;
                }
                AuthMechanism::Login => {
                    self.command("AUTH LOGIN", "AUTH", &[334]).await?;
                    self.command(&B64.encode(user), "AUTH", &[334]).await?;
                    self.command(&B64.encode(pass), "AUTH", &[235]).await?;
                }
            }
        }
        let from = format!("MAIL FROM:<{}>", cfg.from.email);
        self.command(&from, "MAIL FROM", &[250]).await?;
        for to in &cfg.to {
            let rcpt = format!("RCPT TO:<{}>", to.email);
            match self.command(&rcpt, "RCPT TO", &[250, 251]).await {
                Err(SmtpError::Rejected { during, code, text }) => {
                    let text = format!("<{}>: {text}", to.email);
                    return Err(SmtpError::Rejected { during, code, text });
                }
                other => other?,
            };
        }
        self.command("DATA", "DATA", &[354]).await?;
        self.write("the message", message).await?;
        self.expect("the message", &[250]).await?;
        // The mail is accepted: how QUIT goes does not matter.
        let _ = self.command("QUIT", "QUIT", &[221]).await;
        Ok(())
    }
}

/// Reads lines until a reply is complete. Each line, and the reply as a whole, is held
/// to `MAX_REPLY` bytes.
async fn read_reply<R: AsyncRead + Unpin>(
    reader: &mut BufReader<R>,
    during: &'static str,
) -> Result<Reply, SmtpError> {
    let mut parser = ReplyParser::default();
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until_newline(&mut line, MAX_REPLY).await {
            Ok(_) if line.ends_with(b"\n") => {}
            Ok(_) => return Err(SmtpError::Closed(during)),
            // TLS failures are `InvalidData` too, but carry the rustls error.
            Err(e)
                if e.kind() == io::ErrorKind::InvalidData
                    && !e.get_ref().is_some_and(|inner| inner.is::<rustls::Error>()) =>
            {
                return Err(SmtpError::Protocol("reply too long".into()));
            }
            Err(e) => return Err(SmtpError::Io(e)),
        }
        if let Some(reply) = parser.push(&line).map_err(SmtpError::Protocol)? {
            return Ok(reply);
        }
    }
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
        let e = tls_connector(&TlsRoots::Pem(b"nothing here".to_vec())).unwrap_err();
        assert!(e.contains("no certificate"), "{e}");
    }
}
