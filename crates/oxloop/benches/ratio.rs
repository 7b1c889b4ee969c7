//! Shared by the benches: remembers what each side measured and prints the ratios.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

static TOTALS: Mutex<BTreeMap<(String, String), (Duration, u64)>> = Mutex::new(BTreeMap::new());

/// Adds one `iter_custom` measurement of `iters` iterations.
pub fn record(bench: &str, side: &str, elapsed: Duration, iters: u64) {
    let mut totals = TOTALS.lock().unwrap();
    let entry = totals
        .entry((bench.to_string(), side.to_string()))
        .or_default();
    entry.0 += elapsed;
    entry.1 += iters;
}

fn mean(bench: &str, side: &str) -> Option<Duration> {
    let totals = TOTALS.lock().unwrap();
    let (total, iters) = totals.get(&(bench.to_string(), side.to_string()))?;
    (*iters > 0).then(|| *total / *iters as u32)
}

/// Prints `peer / subject` for every bench that has both sides.
pub fn print_ratios(subject: &str, peer: &str, targets: &[(&str, f64)]) {
    let benches: Vec<String> = {
        let totals = TOTALS.lock().unwrap();
        let mut names: Vec<String> = totals.keys().map(|(b, _)| b.clone()).collect();
        names.dedup();
        names
    };
    println!();
    println!(
        "{:<28} {:>14} {:>14} {:>10} {:>8}",
        "bench", subject, peer, "ratio", "target"
    );
    for bench in benches {
        let (Some(ours), Some(theirs)) = (mean(&bench, subject), mean(&bench, peer)) else {
            continue;
        };
        let ratio = theirs.as_secs_f64() / ours.as_secs_f64();
        let target = targets
            .iter()
            .find(|(name, _)| *name == bench)
            .map(|(_, t)| format!(">= {t}x"))
            .unwrap_or_default();
        println!(
            "{bench:<28} {:>14} {:>14} {:>9.2}x {:>8}",
            format!("{ours:.2?}"),
            format!("{theirs:.2?}"),
            ratio,
            target
        );
    }
    println!(
        "(ratio = {peer} time / {subject} time per iteration; higher is better for {subject})"
    );
}
