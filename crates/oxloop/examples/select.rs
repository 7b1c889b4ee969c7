//! Waiting on several futures at once: a line from a pipe, a UDP datagram and a
//! timeout race, and the first to finish wins (the others are dropped, cancelling
//! them).
//!
//! ```text
//! cargo run -p oxloop --example select -- pipe      # a line arrives first
//! cargo run -p oxloop --example select -- udp       # a datagram arrives first
//! cargo run -p oxloop --example select -- timeout   # nothing arrives in time
//! ```

use oxloop::io::{pipe, AsyncWriteExt, BufReader};
use oxloop::net::UdpSocket;
use oxloop::task::{self, Either, FutureExt};
use oxloop::EventLoop;
use std::io;
use std::time::Duration;

fn main() -> io::Result<()> {
    let source = std::env::args().nth(1).unwrap_or_else(|| "pipe".into());
    if !["pipe", "udp", "timeout"].contains(&source.as_str()) {
        eprintln!("usage: select [pipe|udp|timeout]");
        std::process::exit(2);
    }
    let ev = EventLoop::new()?;
    ev.block_on(race(source))?
}

async fn race(source: String) -> io::Result<()> {
    let (reader, mut writer) = pipe()?;
    let mut lines = BufReader::new(reader).lines().max_len(1024);
    let socket = UdpSocket::bind("127.0.0.1:0".parse().unwrap())?;
    let addr = socket.local_addr()?;

    // The other side: after 20 ms, feeds the source named on the command line.
    let feeder = task::spawn(async move {
        task::sleep(Duration::from_millis(20)).await;
        match source.as_str() {
            "pipe" => writer.write_all(b"hello from the pipe\n").await?,
            "udp" => {
                let sender = UdpSocket::bind("127.0.0.1:0".parse().unwrap())?;
                sender.send_to(b"hello over udp", addr).await?;
            }
            _ => {}
        }
        // Keep the pipe open until the race is decided.
        task::sleep(Duration::from_secs(5)).await;
        Ok::<_, io::Error>(())
    });

    let mut buf = [0; 1500];
    // `select!` polls every branch and runs the one that finishes first.
    oxloop::task::select! {
        line = lines.next_line().fuse() => match line? {
            Some(line) => println!("pipe won: {line:?}"),
            None => println!("pipe won: end of stream"),
        },
        got = socket.recv_from(&mut buf).fuse() => {
            let (n, from) = got?;
            println!("udp won: {:?} from {from}", String::from_utf8_lossy(&buf[..n]));
        }
        _ = task::sleep(Duration::from_millis(500)).fuse() => println!("timeout won"),
    }
    feeder.abort();

    // The function form: two futures, the loser comes back unfinished.
    let quick = task::sleep(Duration::from_millis(1));
    let slow = task::sleep(Duration::from_secs(5));
    match task::select(Box::pin(quick), Box::pin(slow)).await {
        Either::Left(((), _slow_still_pending)) => println!("select(): the quick sleep won"),
        Either::Right(_) => println!("select(): the slow sleep won?"),
    }
    Ok(())
}
