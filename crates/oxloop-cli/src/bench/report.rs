//! What `oxloop bench` records: the JSON document and the Markdown tables printed.

use serde::Serialize;

/// The whole run.
#[derive(Serialize, Debug, Default)]
pub struct Report {
    /// When the run started (UTC, RFC 3339).
    pub date: String,
    /// Where it ran.
    pub machine: Machine,
    /// The command line.
    pub command: String,
    /// The Cargo profile this program was built with (`fast`, `release`, ...): every
    /// server of the run is built with it, since they are all this one program.
    pub profile: String,
    /// Seconds per echo case.
    pub duration_per_case_s: f64,
    /// Whether `--quick` was given.
    pub quick: bool,
    /// Bytes echoed and compared with what was sent, over the whole run.
    pub verified_bytes: u64,
    /// Echoed bytes that differed, went missing or were cut by a reset. A run with
    /// any of these fails before writing the report, so this is always 0 here.
    pub verification_errors: u64,
    /// Every scenario, in the order run.
    pub scenarios: Vec<Scenario>,
    /// Wall time of the whole run.
    pub elapsed_s: f64,
}

/// The machine.
#[derive(Serialize, Debug, Default)]
pub struct Machine {
    /// CPUs available (what `nproc` prints).
    pub cpus: usize,
    /// `uname -r`.
    pub kernel: String,
    /// The CPU model from `/proc/cpuinfo`.
    pub cpu_model: String,
    /// 1, 5 and 15 minute load averages at the start of the run.
    pub load_average_start: [f64; 3],
    /// The same at the end.
    pub load_average_end: [f64; 3],
    /// Whether servers were pinned to CPU 0 and the load generator to CPU 1.
    pub pinned: bool,
}

/// One scenario.
#[derive(Serialize, Debug, Default)]
pub struct Scenario {
    /// Short name (the `--scenarios` group it belongs to is its prefix).
    pub id: String,
    /// What it measures.
    pub title: String,
    /// Why it was not run, if it was not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    /// Notes on how it was run.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// Echo or HTTP results, one row per server.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub throughput: Vec<ThroughputRow>,
    /// Idle-memory results.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub idle: Vec<IdleRow>,
    /// System calls per message.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub syscalls: Vec<SyscallRow>,
    /// User-space instructions per message (callgrind).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub instructions: Vec<InstructionRow>,
    /// An in-process comparison with tokio.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_process: Option<InProcessRow>,
    /// One server's figures over another's, where the scenario has no raw or tokio
    /// baseline (the Python event loops).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ratios: Vec<RatioRow>,
}

/// One server's throughput and CPU per message over another's, in one scenario.
#[derive(Serialize, Debug, Default, Clone)]
pub struct RatioRow {
    /// The server compared.
    pub server: String,
    /// The server it is compared with.
    pub baseline: String,
    /// Throughput over the baseline's (above 1: faster).
    pub throughput: f64,
    /// CPU per message over the baseline's (below 1: cheaper).
    pub cpu: f64,
}

/// One server under a load.
#[derive(Serialize, Debug, Default, Clone)]
pub struct ThroughputRow {
    /// The server.
    pub server: String,
    /// Messages (or requests) per second.
    pub messages_per_s: f64,
    /// Echoed payload per second, MiB.
    pub mib_per_s: f64,
    /// Median round trip, microseconds.
    pub p50_us: f64,
    /// 99th percentile round trip, microseconds.
    pub p99_us: f64,
    /// Server user CPU per message, nanoseconds.
    pub user_ns_per_msg: f64,
    /// Server user + system CPU per message, nanoseconds.
    pub total_ns_per_msg: f64,
    /// Throughput over the raw epoll server's (the runs just before and after).
    pub throughput_vs_raw: Option<f64>,
    /// Throughput over tokio's.
    pub throughput_vs_tokio: Option<f64>,
    /// CPU per message over the raw epoll server's (lower is better).
    pub cpu_vs_raw: Option<f64>,
    /// CPU per message over tokio's (lower is better).
    pub cpu_vs_tokio: Option<f64>,
    /// Messages echoed and verified.
    pub messages: u64,
    /// For the raw baseline: messages/s of each of its interleaved runs (drift).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub runs: Vec<f64>,
}

/// Idle connections held by one server.
#[derive(Serialize, Debug, Default, Clone)]
pub struct IdleRow {
    /// The server.
    pub server: String,
    /// Idle connections opened (each checked with a 1-byte echo).
    pub connections: usize,
    /// Resident memory before, MiB.
    pub rss_before_mib: f64,
    /// Resident memory with the connections open, MiB.
    pub rss_after_mib: f64,
    /// Growth per connection, bytes.
    pub bytes_per_connection: f64,
    /// Per-connection growth over the raw server's.
    pub vs_raw: Option<f64>,
    /// Per-connection growth over tokio's.
    pub vs_tokio: Option<f64>,
}

/// System calls counted by strace while one server echoed.
#[derive(Serialize, Debug, Default, Clone)]
pub struct SyscallRow {
    /// The server.
    pub server: String,
    /// Messages echoed while traced.
    pub messages: u64,
    /// System calls made, all threads.
    pub calls: u64,
    /// Calls per message.
    pub per_message: f64,
    /// The most frequent calls.
    pub top: String,
    /// Per-message calls over the raw server's.
    pub vs_raw: Option<f64>,
    /// Per-message calls over tokio's.
    pub vs_tokio: Option<f64>,
}

/// User-space instructions one server executed per echoed message, counted by
/// callgrind.
#[derive(Serialize, Debug, Default, Clone)]
pub struct InstructionRow {
    /// The server.
    pub server: String,
    /// Instructions per message (the long run's total minus the short run's, over the
    /// difference in messages).
    pub per_message: f64,
    /// Messages of the short and the long run.
    pub messages: [u64; 2],
    /// Instructions of the short and the long run.
    pub instructions: [u64; 2],
    /// Per-message instructions over the raw server's.
    pub vs_raw: Option<f64>,
    /// Per-message instructions over tokio's.
    pub vs_tokio: Option<f64>,
}

/// One in-process workload on oxloop and on tokio.
#[derive(Serialize, Debug, Default, Clone)]
pub struct InProcessRow {
    /// Operations in the workload.
    pub operations: u64,
    /// oxloop's wall time, milliseconds.
    pub oxloop_ms: f64,
    /// tokio's wall time, milliseconds.
    pub tokio_ms: f64,
    /// oxloop's operations per second.
    pub oxloop_per_s: f64,
    /// tokio's operations per second.
    pub tokio_per_s: f64,
    /// tokio's time over oxloop's (above 1: oxloop is faster).
    pub speedup_vs_tokio: f64,
    /// The times split into phases, where the workload has them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub phases: Vec<PhaseRow>,
}

/// One phase of an in-process workload.
#[derive(Serialize, Debug, Default, Clone)]
pub struct PhaseRow {
    /// insert, cancel, fire.
    pub phase: String,
    /// oxloop's time, milliseconds.
    pub oxloop_ms: f64,
    /// tokio's time, milliseconds.
    pub tokio_ms: f64,
}

fn ratio(v: Option<f64>) -> String {
    v.map_or("–".to_string(), |r| format!("{r:.2}"))
}

impl Scenario {
    /// The scenario as Markdown: a heading, notes and a table.
    pub fn markdown(&self) -> String {
        let mut s = format!("### {} (`{}`)\n\n", self.title, self.id);
        if let Some(why) = &self.skipped {
            s += &format!("Skipped: {why}\n");
            return s;
        }
        for n in &self.notes {
            s += &format!("{n}\n");
        }
        if !self.notes.is_empty() {
            s += "\n";
        }
        let with_baselines = self.throughput.iter().any(|r| {
            r.throughput_vs_raw.is_some()
                || r.throughput_vs_tokio.is_some()
                || r.cpu_vs_raw.is_some()
                || r.cpu_vs_tokio.is_some()
        });
        if !self.throughput.is_empty() {
            s +=
                "| server | msg/s | MiB/s | p50 µs | p99 µs | CPU user ns/msg | CPU total ns/msg |";
            if with_baselines {
                s += " thrpt ÷ raw | thrpt ÷ tokio | CPU ÷ raw | CPU ÷ tokio |";
            }
            s += "\n|---|--:|--:|--:|--:|--:|--:|";
            if with_baselines {
                s += "--:|--:|--:|--:|";
            }
            s += "\n";
            for r in &self.throughput {
                s += &format!(
                    "| {} | {:.0} | {:.1} | {:.1} | {:.1} | {:.0} | {:.0} |",
                    r.server,
                    r.messages_per_s,
                    r.mib_per_s,
                    r.p50_us,
                    r.p99_us,
                    r.user_ns_per_msg,
                    r.total_ns_per_msg,
                );
                if with_baselines {
                    s += &format!(
                        " {} | {} | {} | {} |",
                        ratio(r.throughput_vs_raw),
                        ratio(r.throughput_vs_tokio),
                        ratio(r.cpu_vs_raw),
                        ratio(r.cpu_vs_tokio)
                    );
                }
                s += "\n";
            }
        }
        if !self.ratios.is_empty() {
            s += "\n| ratio | throughput | CPU per message |\n|---|--:|--:|\n";
            for r in &self.ratios {
                s += &format!(
                    "| {} ÷ {} | {:.2} | {:.2} |\n",
                    r.server, r.baseline, r.throughput, r.cpu
                );
            }
        }
        if !self.idle.is_empty() {
            s += "| server | idle connections | RSS before MiB | RSS after MiB | bytes/connection | ÷ raw | ÷ tokio |\n";
            s += "|---|--:|--:|--:|--:|--:|--:|\n";
            for r in &self.idle {
                s += &format!(
                    "| {} | {} | {:.1} | {:.1} | {:.0} | {} | {} |\n",
                    r.server,
                    r.connections,
                    r.rss_before_mib,
                    r.rss_after_mib,
                    r.bytes_per_connection,
                    ratio(r.vs_raw),
                    ratio(r.vs_tokio)
                );
            }
        }
        if !self.syscalls.is_empty() {
            s += "| server | messages | syscalls | per message | most frequent | ÷ raw | ÷ tokio |\n";
            s += "|---|--:|--:|--:|---|--:|--:|\n";
            for r in &self.syscalls {
                s += &format!(
                    "| {} | {} | {} | {:.2} | {} | {} | {} |\n",
                    r.server,
                    r.messages,
                    r.calls,
                    r.per_message,
                    r.top,
                    ratio(r.vs_raw),
                    ratio(r.vs_tokio)
                );
            }
        }
        if !self.instructions.is_empty() {
            s += "| server | instructions per message | ÷ raw | ÷ tokio | messages (short, long run) | instructions (short, long run) |\n";
            s += "|---|--:|--:|--:|--:|--:|\n";
            for r in &self.instructions {
                s += &format!(
                    "| {} | {:.0} | {} | {} | {}, {} | {}, {} |\n",
                    r.server,
                    r.per_message,
                    ratio(r.vs_raw),
                    ratio(r.vs_tokio),
                    r.messages[0],
                    r.messages[1],
                    r.instructions[0],
                    r.instructions[1]
                );
            }
        }
        if let Some(r) = &self.in_process {
            s += "| operations | oxloop ms | tokio ms | oxloop ops/s | tokio ops/s | tokio time ÷ oxloop time |\n";
            s += "|--:|--:|--:|--:|--:|--:|\n";
            s += &format!(
                "| {} | {:.1} | {:.1} | {:.0} | {:.0} | {:.2} |\n",
                r.operations,
                r.oxloop_ms,
                r.tokio_ms,
                r.oxloop_per_s,
                r.tokio_per_s,
                r.speedup_vs_tokio
            );
            if !r.phases.is_empty() {
                s += "\n| phase | oxloop ms | tokio ms |\n|---|--:|--:|\n";
                for p in &r.phases {
                    s += &format!("| {} | {:.1} | {:.1} |\n", p.phase, p.oxloop_ms, p.tokio_ms);
                }
            }
        }
        s
    }
}
