//! TLS over any oxloop stream (feature `tls`): rustls with the *ring* provider, through
//! `futures-rustls`.
//!
//! Anything that is `futures_io::AsyncRead + AsyncWrite + Unpin` can be wrapped: TCP,
//! Unix sockets, pipes, another TLS stream. The wrapped streams implement the same
//! traits. Handshake failures (bad certificate, wrong host name, protocol errors, a
//! peer hanging up) come back as `io::Error`s whose message names the peer and whose
//! source is the rustls error.
//!
//! ```no_run
//! use oxloop::net::tls::{pki_types::CertificateDer, rustls::RootCertStore, TlsConnector};
//! use oxloop::net::TcpStream;
//! use oxloop::io::{AsyncReadExt, AsyncWriteExt};
//!
//! # async fn demo(ca: CertificateDer<'static>) -> std::io::Result<()> {
//! let mut roots = RootCertStore::empty();
//! roots.add(ca).map_err(std::io::Error::other)?;
//! let connector = TlsConnector::new(roots)?;
//! let tcp = TcpStream::connect("127.0.0.1:8443".parse().unwrap()).await?;
//! let mut tls = connector.connect("localhost", tcp).await?;
//! tls.write_all(b"ping").await?;
//! # Ok(()) }
//! ```

pub use futures_rustls::client::TlsStream as ClientTlsStream;
pub use futures_rustls::server::TlsStream as ServerTlsStream;
pub use futures_rustls::{pki_types, rustls};

use futures_io::{AsyncRead, AsyncWrite};
use pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use std::fmt;
use std::io;
use std::sync::Arc;

/// The crypto provider oxloop's TLS uses (*ring*).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn config_error(e: rustls::Error) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("invalid TLS configuration: {e}"),
    )
}

/// A failed handshake: says with whom, keeps the underlying error as its source.
#[derive(Debug)]
struct HandshakeError {
    peer: String,
    source: io::Error,
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "TLS handshake with {} failed: {}",
            self.peer, self.source
        )
    }
}

impl std::error::Error for HandshakeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

fn handshake_error(peer: impl Into<String>, source: io::Error) -> io::Error {
    let kind = source.kind();
    io::Error::new(
        kind,
        HandshakeError {
            peer: peer.into(),
            source,
        },
    )
}

/// Starts client-side TLS sessions over oxloop streams. Cheap to clone.
#[derive(Clone)]
pub struct TlsConnector {
    inner: futures_rustls::TlsConnector,
}

impl TlsConnector {
    /// A connector trusting the certificate authorities in `roots`, with rustls' safe
    /// default protocol versions and no client certificate.
    pub fn new(roots: RootCertStore) -> io::Result<TlsConnector> {
        let config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(config_error)?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(TlsConnector::from(Arc::new(config)))
    }

    /// Runs the handshake over `stream`, checking that the server's certificate is
    /// valid for `server_name` (a DNS name or an IP address). An unparsable name is an
    /// `InvalidInput` error; a refused certificate is an `InvalidData` error.
    pub async fn connect<S>(&self, server_name: &str, stream: S) -> io::Result<ClientTlsStream<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let name = ServerName::try_from(server_name.to_string()).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{server_name:?} is not a valid TLS server name: {e}"),
            )
        })?;
        self.inner
            .connect(name, stream)
            .await
            .map_err(|e| handshake_error(server_name, e))
    }
}

impl From<Arc<ClientConfig>> for TlsConnector {
    fn from(config: Arc<ClientConfig>) -> TlsConnector {
        TlsConnector {
            inner: futures_rustls::TlsConnector::from(config),
        }
    }
}

impl fmt::Debug for TlsConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TlsConnector")
    }
}

/// Accepts server-side TLS sessions over oxloop streams. Cheap to clone.
#[derive(Clone)]
pub struct TlsAcceptor {
    inner: futures_rustls::TlsAcceptor,
}

impl TlsAcceptor {
    /// An acceptor presenting `cert_chain` (leaf first) signed by `key`, with rustls'
    /// safe default protocol versions and no client authentication. A key that does not
    /// match or cannot be used is an `InvalidInput` error.
    pub fn new(
        cert_chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> io::Result<TlsAcceptor> {
        let config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(config_error)?
            .with_no_client_auth()
            .with_single_cert(cert_chain, key)
            .map_err(config_error)?;
        Ok(TlsAcceptor::from(Arc::new(config)))
    }

    /// Runs the server side of the handshake over `stream`.
    pub async fn accept<S>(&self, stream: S) -> io::Result<ServerTlsStream<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        self.inner
            .accept(stream)
            .await
            .map_err(|e| handshake_error("the client", e))
    }
}

impl From<Arc<ServerConfig>> for TlsAcceptor {
    fn from(config: Arc<ServerConfig>) -> TlsAcceptor {
        TlsAcceptor {
            inner: futures_rustls::TlsAcceptor::from(config),
        }
    }
}

impl fmt::Debug for TlsAcceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TlsAcceptor")
    }
}
