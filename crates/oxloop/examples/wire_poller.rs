//! A `Poller` answering lines from a TCP socket and from a pipe.
//!
//! Another thread plays the peer: it writes lines into both, closes them, and collects
//! the socket's answers. On the loop, one Poller watches the server end of the socket
//! and the read end of the pipe; whenever one is readable its wire reads what is there,
//! answers each complete line (on the socket, or on stdout for the pipe) and, at end of
//! stream, removes its fd from the Poller. With no fd left the Poller is done, and so
//! is the run.
//!
//! ```text
//! cargo run -p oxloop --example wire_poller
//! ```

use oxloop::io::Async;
use oxloop::wire::{Poller, PollerHandle, Wire, WireLoop};
use oxloop::EventLoop;
use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::rc::Rc;
use std::time::Duration;

/// A readable end and the bytes read from it that do not make a full line yet.
struct Source<T: AsFd> {
    io: Async<T>,
    pending: RefCell<Vec<u8>>,
}

impl<T: AsFd> Source<T>
where
    for<'a> &'a T: Read,
{
    fn new(io: T) -> io::Result<Rc<Source<T>>> {
        Ok(Rc::new(Source {
            io: Async::new(io)?,
            pending: RefCell::default(),
        }))
    }

    /// Reads what is readable now; returns the complete lines, `None` at end of stream.
    /// The Poller is level-triggered: whatever this leaves unread makes it run again.
    async fn read_lines(&self) -> io::Result<Option<Vec<String>>> {
        let mut chunk = [0; 4096];
        let n = self.io.read_with(|mut s| s.read(&mut chunk)).await?;
        if n == 0 {
            return Ok(None);
        }
        let mut pending = self.pending.borrow_mut();
        pending.extend_from_slice(&chunk[..n]);
        let mut lines = Vec::new();
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            lines.push(String::from_utf8_lossy(&line[..end]).into_owned());
        }
        Ok(Some(lines))
    }
}

/// The socket's wire: answers each line on the socket itself.
fn answer_socket(sock: Rc<Source<TcpStream>>, poller: PollerHandle) -> Wire {
    Wire::new(move |_| {
        let (sock, poller) = (sock.clone(), poller.clone());
        async move {
            let Some(lines) = sock.read_lines().await? else {
                println!("socket: end of stream");
                poller.remove(&sock.io);
                return sock.io.get_ref().shutdown(Shutdown::Write);
            };
            for line in lines {
                println!("socket: {line:?}");
                let answer = format!("you said {line:?}\n");
                let mut rest = answer.as_bytes();
                while !rest.is_empty() {
                    let n = sock.io.write_with(|mut s| s.write(rest)).await?;
                    rest = &rest[n..];
                }
            }
            Ok(())
        }
    })
}

/// The pipe's wire: answers each line on stdout.
fn answer_pipe(pipe: Rc<Source<io::PipeReader>>, poller: PollerHandle) -> Wire {
    Wire::new(move |_| {
        let (pipe, poller) = (pipe.clone(), poller.clone());
        async move {
            match pipe.read_lines().await? {
                Some(lines) => lines.iter().for_each(|line| println!("pipe: {line:?}")),
                None => {
                    println!("pipe: end of stream");
                    poller.remove(&pipe.io);
                }
            }
            Ok::<(), io::Error>(())
        }
    })
}

/// The other side, on its own thread with blocking I/O: returns the socket's answers.
fn peer(mut sock: TcpStream, mut pipe: io::PipeWriter) -> io::Result<String> {
    sock.write_all(b"hello\n")?;
    pipe.write_all(b"ping\n")?;
    std::thread::sleep(Duration::from_millis(20));
    sock.write_all(b"how are you?\nbye\n")?;
    pipe.write_all(b"pong\n")?;
    drop(pipe);
    sock.shutdown(Shutdown::Write)?;
    let mut answers = String::new();
    sock.read_to_string(&mut answers)?; // until the loop side shuts down its end
    Ok(answers)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let ev = EventLoop::new()?;
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let client = TcpStream::connect(listener.local_addr()?)?;
    let (server, _) = listener.accept()?;
    let (pipe_reader, pipe_writer) = io::pipe()?;
    let other_side = std::thread::spawn(move || peer(client, pipe_writer));

    let sock = Source::new(server)?;
    let pipe = Source::new(pipe_reader)?;
    let poller = Poller::new();
    let handle = poller.handle();
    let poller = poller
        .on(&sock.io, answer_socket(sock.clone(), handle.clone()))?
        .on(&pipe.io, answer_pipe(pipe.clone(), handle))?;

    let wires = WireLoop::new(&ev).timeout(Duration::from_secs(10));
    wires.start(poller);
    wires.run()?;
    println!("poller done");

    let answers = other_side.join().expect("the peer thread panicked")?;
    for answer in answers.lines() {
        println!("peer got: {answer}");
    }
    Ok(())
}
