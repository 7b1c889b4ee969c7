//! The `tokio-io` feature: hyper 1.x and tokio-util codecs running on oxloop's streams
//! and tasks, with no tokio runtime.

use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use oxloop::net::{TcpListener, TcpStream, UnixStream};
use oxloop::{task, EventLoop};
use std::convert::Infallible;
use std::time::Duration;
use tokio_util::codec::{Framed, LinesCodec, LinesCodecError};

async fn echo_upper(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_string();
    let body = req.into_body().collect().await.map(|b| b.to_bytes());
    let text = match body {
        Ok(bytes) => format!("{path}: {}", String::from_utf8_lossy(&bytes).to_uppercase()),
        Err(e) => format!("body error: {e}"),
    };
    Ok(Response::builder()
        .header("x-served-by", "oxloop")
        .body(Full::new(Bytes::from(text)))
        .unwrap())
}

#[test]
fn hyper_serves_and_fetches_on_oxloop() {
    let ev = EventLoop::new().unwrap();
    ev.block_on(task::timeout(Duration::from_secs(10), async {
        let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let server = task::spawn(async move {
            let (conn, _) = listener.accept().await.unwrap();
            hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(conn), hyper::service::service_fn(echo_upper))
                .await
        });

        let stream = TcpStream::connect(addr).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        let client_conn = task::spawn(conn);

        for (path, body) in [("/one", "hello over hyper"), ("/two", "second request")] {
            let req = Request::post(path)
                .header("host", addr.to_string())
                .body(Full::new(Bytes::from(body)))
                .unwrap();
            let resp = sender.send_request(req).await.unwrap();
            assert_eq!(resp.status(), 200);
            assert_eq!(resp.headers()["x-served-by"], "oxloop");
            let got = resp.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(got, format!("{path}: {}", body.to_uppercase()).as_bytes());
        }

        // Closing the client ends both connections cleanly.
        drop(sender);
        client_conn.await.unwrap().unwrap();
        server.await.unwrap().unwrap();
    }))
    .unwrap()
    .expect("timed out");
}

#[test]
fn tokio_util_codec_over_unix_stream_pair() {
    let ev = EventLoop::new().unwrap();
    ev.block_on(task::timeout(Duration::from_secs(10), async {
        let (a, b) = UnixStream::pair().unwrap();
        let mut a = Framed::new(a, LinesCodec::new_with_max_length(64));
        let mut b = Framed::new(b, LinesCodec::new_with_max_length(64));

        let peer = task::spawn(async move {
            // Echo each line back reversed until the other side closes.
            while let Some(line) = b.next().await {
                let line: String = line?;
                b.send(line.chars().rev().collect::<String>()).await?;
            }
            Ok::<_, LinesCodecError>(())
        });

        for word in ["oxloop", "codec", "lines"] {
            a.send(word).await.unwrap();
            let back = a.next().await.unwrap().unwrap();
            assert_eq!(back, word.chars().rev().collect::<String>());
        }
        // A line over the limit is refused as an error, not a panic.
        a.send("x".repeat(100)).await.unwrap();
        drop(a);
        let err = peer.await.unwrap().unwrap_err();
        assert!(
            matches!(err, LinesCodecError::MaxLineLengthExceeded),
            "{err:?}"
        );
    }))
    .unwrap()
    .expect("timed out");
}
