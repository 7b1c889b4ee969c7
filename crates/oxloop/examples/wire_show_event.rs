//! aiowire's first program: two `show_event` wires share an event counter. Each run
//! bumps the counter, sleeps `counter × 0.15 s`, prints the counter and, while it is
//! below 5, hands on itself as the next wire. The loop-wide timeout of one second
//! cancels the wire still sleeping when it expires.
//!
//! ```text
//! cargo run -p oxloop --example wire_show_event
//! ```

use oxloop::wire::{RunError, Wire, WireLoop};
use oxloop::{task, EventLoop};
use std::cell::Cell;
use std::time::{Duration, Instant};

thread_local! {
    /// The shared counter (the Python version's global `event`).
    static EVENT: Cell<u32> = const { Cell::new(0) };
}

/// A wire: a plain async function of the loop that returns the next wire, or `None`.
async fn show_event(_ev: EventLoop) -> Option<Wire> {
    println!("Running...");
    let event = EVENT.with(|e| {
        e.set(e.get() + 1);
        e.get()
    });
    task::sleep(Duration::from_millis(150) * event).await;
    let event = EVENT.with(Cell::get);
    println!("Event {event}");
    (event < 5).then(|| Wire::new(show_event))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let ev = EventLoop::new()?;
    let start = Instant::now();
    let wires = WireLoop::new(&ev).timeout(Duration::from_secs(1));
    wires.start(show_event);
    wires.start(show_event);
    match wires.run() {
        Ok(()) => println!("all wires finished"),
        Err(RunError::TimedOut(limit)) => println!(
            "timed out after {limit:?} (ran {:.2} s); the sleeping wire was cancelled",
            start.elapsed().as_secs_f64()
        ),
        Err(e) => return Err(e.into()),
    }
    Ok(())
}
