//! What the machine's TCP did while a target's load ran: memory pressure, segments
//! dropped for want of memory, retransmission timeouts, and the most memory TCP held.
//!
//! Machine-wide, like `ListenOverflows`: other programs' connections count too. These
//! tell a session stopped by TCP itself from one stopped by a server. Above the middle
//! value of `net.ipv4.tcp_mem` the kernel is under memory pressure and drops incoming
//! segments for sockets above their share (above the last value, for every socket);
//! the sender sends them again after a retransmission timeout that doubles with each
//! loss, up to 120 s. A connection with one small segment in flight at a time (a
//! trickle) has no later segments to trigger a fast retransmit, so each loss costs it
//! a whole, growing timeout.

use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// How often the memory TCP holds is read.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// The machine's TCP during one target's load.
#[derive(Debug, Default, Clone, Copy, Serialize, Deserialize)]
pub struct KernelTcp {
    /// Times TCP entered memory pressure (`TCPMemoryPressures` in /proc/net/netstat).
    pub memory_pressures: u64,
    /// Milliseconds it spent under memory pressure (`TCPMemoryPressuresChrono`).
    pub memory_pressure_ms: u64,
    /// Incoming segments dropped because their socket could not get memory
    /// (`TCPRcvQDrop`).
    pub receive_memory_drops: u64,
    /// Retransmission timeouts (`TCPTimeouts`).
    pub retransmission_timeouts: u64,
    /// The most memory TCP held at once, in pages (`TCP: mem` in /proc/net/sockstat,
    /// read every 100 ms).
    pub peak_memory_pages: u64,
    /// `net.ipv4.tcp_mem`, in pages: below the first TCP is not limited, above the
    /// second it is under memory pressure, above the third no socket gets more.
    pub tcp_mem_pages: [u64; 3],
}

impl KernelTcp {
    /// One line for the report.
    pub fn describe(&self) -> String {
        format!(
            "memory pressure entered {} times ({:.1} s), {} segments dropped for want of memory, {} retransmission timeouts, peak {} pages (pressure above {}, limit {})",
            self.memory_pressures,
            self.memory_pressure_ms as f64 / 1000.0,
            self.receive_memory_drops,
            self.retransmission_timeouts,
            self.peak_memory_pages,
            self.tcp_mem_pages[1],
            self.tcp_mem_pages[2]
        )
    }
}

/// The `TcpExt` counters of /proc/net/netstat that [`KernelTcp`] reports.
#[derive(Default, Clone, Copy)]
struct Counters {
    memory_pressures: u64,
    memory_pressure_ms: u64,
    receive_memory_drops: u64,
    retransmission_timeouts: u64,
}

fn counters() -> Counters {
    parse_counters(&std::fs::read_to_string("/proc/net/netstat").unwrap_or_default())
}

/// The `TcpExt` counters in the text of /proc/net/netstat (a line of names, then one
/// of values, per group), by name.
pub(super) fn tcp_ext(netstat: &str) -> impl Iterator<Item = (&str, u64)> {
    let mut lines = netstat.lines().filter(|l| l.starts_with("TcpExt:"));
    let (names, values) = (lines.next().unwrap_or(""), lines.next().unwrap_or(""));
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .map(|(name, value)| (name, value.parse().unwrap_or(0)))
}

/// [`Counters`] from the text of /proc/net/netstat.
fn parse_counters(netstat: &str) -> Counters {
    let mut found = Counters::default();
    for (name, value) in tcp_ext(netstat) {
        let slot = match name {
            "TCPMemoryPressures" => &mut found.memory_pressures,
            "TCPMemoryPressuresChrono" => &mut found.memory_pressure_ms,
            "TCPRcvQDrop" => &mut found.receive_memory_drops,
            "TCPTimeouts" => &mut found.retransmission_timeouts,
            _ => continue,
        };
        *slot = value;
    }
    found
}

/// The pages TCP holds now (`TCP: ... mem N` in /proc/net/sockstat).
fn memory_pages() -> Option<u64> {
    parse_memory_pages(&std::fs::read_to_string("/proc/net/sockstat").ok()?)
}

/// The `mem` figure of the `TCP:` line of /proc/net/sockstat.
fn parse_memory_pages(sockstat: &str) -> Option<u64> {
    let line = sockstat.lines().find(|l| l.starts_with("TCP:"))?;
    let mut words = line.split_whitespace();
    words.find(|w| *w == "mem")?;
    words.next()?.parse().ok()
}

fn tcp_mem_pages() -> [u64; 3] {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_mem").unwrap_or_default();
    let mut values = text.split_whitespace().map(|v| v.parse().unwrap_or(0));
    [(); 3].map(|()| values.next().unwrap_or(0))
}

/// Watches the machine's TCP from [`TcpWatch::start`] to [`TcpWatch::finish`]: the
/// counters are read at both ends, the memory by a thread every 100 ms (joined at the
/// end, so the process's threads are back to what they were).
pub struct TcpWatch {
    before: Counters,
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    sampler: Option<JoinHandle<()>>,
}

impl TcpWatch {
    /// Reads the counters and starts sampling the memory.
    pub fn start() -> TcpWatch {
        let peak = Arc::new(AtomicU64::new(memory_pages().unwrap_or(0)));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (peak.clone(), stop.clone());
        let sampler = std::thread::Builder::new()
            .name("soak-tcp".into())
            .spawn(move || {
                while !s.load(Ordering::Relaxed) {
                    if let Some(pages) = memory_pages() {
                        p.fetch_max(pages, Ordering::Relaxed);
                    }
                    std::thread::sleep(SAMPLE_EVERY);
                }
            })
            .ok();
        TcpWatch {
            before: counters(),
            peak,
            stop,
            sampler,
        }
    }

    /// Stops sampling; what happened since the start.
    pub fn finish(mut self) -> KernelTcp {
        self.stop_sampler();
        let after = counters();
        let since = |f: fn(&Counters) -> u64| f(&after).saturating_sub(f(&self.before));
        KernelTcp {
            memory_pressures: since(|c| c.memory_pressures),
            memory_pressure_ms: since(|c| c.memory_pressure_ms),
            receive_memory_drops: since(|c| c.receive_memory_drops),
            retransmission_timeouts: since(|c| c.retransmission_timeouts),
            peak_memory_pages: self.peak.load(Ordering::Relaxed),
            tcp_mem_pages: tcp_mem_pages(),
        }
    }

    fn stop_sampler(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(sampler) = self.sampler.take() {
            let _ = sampler.join();
        }
    }
}

impl Drop for TcpWatch {
    fn drop(&mut self) {
        // A phase that failed part-way still leaves no thread behind.
        self.stop_sampler();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_memory_are_read_from_the_kernel_tables() {
        let netstat = "TcpExt: SyncookiesSent TCPTimeouts TCPMemoryPressures TCPMemoryPressuresChrono TCPRcvQDrop\n\
                       TcpExt: 1 904966 231 1714280 1433423\n\
                       IpExt: InNoRoutes\n\
                       IpExt: 0\n";
        let c = parse_counters(netstat);
        assert_eq!(
            (
                c.retransmission_timeouts,
                c.memory_pressures,
                c.memory_pressure_ms,
                c.receive_memory_drops
            ),
            (904966, 231, 1714280, 1433423)
        );
        let sockstat = "sockets: used 2233\nTCP: inuse 2195 orphan 38 tw 5856 alloc 2209 mem 8687\nUDP: inuse 0 mem 0\n";
        assert_eq!(parse_memory_pages(sockstat), Some(8687));
        assert_eq!(parse_memory_pages("UDP: inuse 0 mem 0\n"), None);
    }

    #[test]
    fn a_watch_reports_the_kernel_limits() {
        let watch = TcpWatch::start();
        assert!(watch.sampler.is_some());
        std::thread::sleep(SAMPLE_EVERY * 2);
        let tcp = watch.finish();
        let [low, pressure, limit] = tcp.tcp_mem_pages;
        assert!(0 < low && low <= pressure && pressure <= limit, "{tcp:?}");
    }
}
