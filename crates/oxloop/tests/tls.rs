//! TLS (feature `tls`) over oxloop streams, with certificates generated here.

use oxloop::io::{AsyncReadExt, AsyncWriteExt};
use oxloop::net::tls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use oxloop::net::tls::rustls::RootCertStore;
use oxloop::net::tls::{TlsAcceptor, TlsConnector};
use oxloop::net::{TcpListener, TcpStream, UnixStream};
use oxloop::{task, EventLoop};
use std::io;
use std::time::Duration;

/// A self-signed certificate for `names`, and a client that trusts it.
fn identity(names: &[&str]) -> (TlsAcceptor, TlsConnector) {
    let ck =
        rcgen::generate_simple_self_signed(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()));
    let cert: CertificateDer<'static> = ck.cert.der().clone();
    let mut roots = RootCertStore::empty();
    roots.add(cert.clone()).unwrap();
    (
        TlsAcceptor::new(vec![cert], key).unwrap(),
        TlsConnector::new(roots).unwrap(),
    )
}

fn run<T>(f: impl std::future::Future<Output = T>) -> T {
    let ev = EventLoop::new().unwrap();
    ev.block_on(task::timeout(Duration::from_secs(10), f))
        .unwrap()
        .expect("test timed out")
}

/// A TLS echo server on a fresh port, for one connection; returns its address and
/// the server task's outcome.
fn echo_server(acceptor: TlsAcceptor) -> (std::net::SocketAddr, task::JoinHandle<io::Result<()>>) {
    let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    let server = task::spawn(async move {
        let (tcp, _) = listener.accept().await?;
        let mut tls = acceptor.accept(tcp).await?;
        let mut buf = vec![0; 16 * 1024];
        loop {
            let n = tls.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            tls.write_all(&buf[..n]).await?;
        }
        tls.close().await?;
        Ok(())
    });
    (addr, server)
}

#[test]
fn handshake_and_echo_over_tcp() {
    run(async {
        let (acceptor, connector) = identity(&["localhost"]);
        let (addr, server) = echo_server(acceptor);
        let tcp = TcpStream::connect(addr).await.unwrap();
        let mut tls = connector.connect("localhost", tcp).await.unwrap();
        let (_, session) = tls.get_ref();
        assert!(session.protocol_version().is_some());

        tls.write_all(b"hello over tls").await.unwrap();
        let mut echo = [0; 14];
        tls.read_exact(&mut echo).await.unwrap();
        assert_eq!(&echo, b"hello over tls");

        // More than one TLS record and more than the socket buffers.
        let big: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
        let (mut reader, mut writer) = tls.split();
        let expected = big.clone();
        let send = async move {
            writer.write_all(&big).await.unwrap();
            writer.close().await.unwrap();
        };
        let receive = async move {
            let mut got = Vec::new();
            reader.read_to_end(&mut got).await.unwrap();
            got
        };
        let ((), got) = futures_util::future::join(send, receive).await;
        assert!(got == expected, "echo differs ({} bytes)", got.len());
        server.await.unwrap().unwrap();
    });
}

#[test]
fn any_stream_can_be_wrapped() {
    run(async {
        let (acceptor, connector) = identity(&["oxloop.test"]);
        let (a, b) = UnixStream::pair().unwrap();
        let server = task::spawn(async move {
            let mut tls = acceptor.accept(b).await?;
            let mut line = [0; 4];
            tls.read_exact(&mut line).await?;
            tls.write_all(b"pong").await?;
            tls.flush().await?;
            Ok::<_, io::Error>(line)
        });
        let mut tls = connector.connect("oxloop.test", a).await.unwrap();
        tls.write_all(b"ping").await.unwrap();
        let mut reply = [0; 4];
        tls.read_exact(&mut reply).await.unwrap();
        assert_eq!(&reply, b"pong");
        assert_eq!(&server.await.unwrap().unwrap(), b"ping");
    });
}

#[test]
fn wrong_host_certificate_is_refused() {
    run(async {
        let (acceptor, connector) = identity(&["localhost"]);
        let (addr, server) = echo_server(acceptor);
        let tcp = TcpStream::connect(addr).await.unwrap();
        let err = connector.connect("wrong.example", tcp).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
        let msg = err.to_string();
        assert!(msg.contains("wrong.example"), "{msg}");
        assert!(msg.contains("not valid for name"), "{msg}");
        // The server sees the client's alert as an error, not a panic.
        let server_err = server.await.unwrap().unwrap_err();
        assert!(
            server_err
                .to_string()
                .contains("TLS handshake with the client failed"),
            "{server_err}"
        );
    });
}

#[test]
fn untrusted_certificate_is_refused() {
    run(async {
        let (acceptor, _) = identity(&["localhost"]);
        let (_, stranger) = identity(&["localhost"]);
        let (addr, server) = echo_server(acceptor);
        let tcp = TcpStream::connect(addr).await.unwrap();
        let err = stranger.connect("localhost", tcp).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
        assert!(
            err.to_string().contains("invalid peer certificate"),
            "{err}"
        );
        assert!(server.await.unwrap().is_err());
    });
}

#[test]
fn bad_input_and_non_tls_peers_are_errors() {
    run(async {
        let (_, connector) = identity(&["localhost"]);

        let (a, _b) = UnixStream::pair().unwrap();
        let err = connector.connect("not a host name!", a).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");

        // A peer that answers the ClientHello with plain text.
        let (a, mut b) = UnixStream::pair().unwrap();
        let peer = task::spawn(async move {
            let mut hello = [0; 5];
            b.read_exact(&mut hello).await?;
            b.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await?;
            Ok::<_, io::Error>(())
        });
        let err = connector.connect("localhost", a).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
        peer.await.unwrap().unwrap();

        // A peer that hangs up mid-handshake.
        let (a, b) = UnixStream::pair().unwrap();
        drop(b);
        assert!(connector.connect("localhost", a).await.is_err());

        // A key that does not go with the certificate.
        let ck = rcgen::generate_simple_self_signed(vec!["a".to_string()]).unwrap();
        let other = rcgen::generate_simple_self_signed(vec!["b".to_string()]).unwrap();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(other.signing_key.serialize_der()));
        let err = TlsAcceptor::new(vec![ck.cert.der().clone()], key).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
    });
}
