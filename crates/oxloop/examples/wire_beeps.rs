//! aiowire's second program: four beeps a tenth of a second apart, written as one
//! expression, `(Call(sleep 0.1 s) >> Call(print "beep")) * 4`.
//!
//! ```text
//! cargo run -p oxloop --example wire_beeps
//! ```

use oxloop::wire::{Call, WireLoop};
use oxloop::{task, EventLoop};
use std::time::{Duration, Instant};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let ev = EventLoop::new()?;
    let start = Instant::now();
    // `Call` takes a sync function (its result ignored) or one returning a future (awaited).
    let prog = (Call(|| task::sleep(Duration::from_millis(100))) >> Call(|| println!("beep"))) * 4;
    let wires = WireLoop::new(&ev);
    wires.start(prog);
    wires.run()?;
    println!("4 beeps in {:.2} s", start.elapsed().as_secs_f64());
    Ok(())
}
