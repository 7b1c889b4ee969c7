//! The syscall layer choice: one level-triggered wait on a socket that stays readable,
//! through rustix's epoll (what oxloop uses on Linux) and through the `polling` crate
//! (oxloop's portable backend), in one process. Prints the ratio.
//!
//! ```text
//! cargo bench -p oxloop --bench backend
//! ```

#[path = "ratio.rs"]
mod ratio;

use criterion::{criterion_group, Criterion};
use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

const WAITS: u64 = 1000;

fn ready_socket() -> (UnixStream, UnixStream) {
    let (a, mut b) = UnixStream::pair().unwrap();
    b.write_all(b"x").unwrap();
    (a, b)
}

fn backends(c: &mut Criterion) {
    let mut group = c.benchmark_group("wait_1000_ready");
    group.sample_size(20);

    let (a, _b) = ready_socket();
    use rustix::event::epoll;
    let ep = epoll::create(epoll::CreateFlags::CLOEXEC).unwrap();
    epoll::add(
        &ep,
        a.as_fd(),
        epoll::EventData::new_u64(1),
        epoll::EventFlags::IN,
    )
    .unwrap();
    let mut events: Vec<epoll::Event> = Vec::with_capacity(64);
    let zero = rustix::event::Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    group.bench_function("rustix_epoll", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters * WAITS {
                events.clear();
                epoll::wait(
                    &ep,
                    rustix::buffer::spare_capacity(&mut events),
                    Some(&zero),
                )
                .unwrap();
                assert_eq!(events.len(), 1);
            }
            let t = start.elapsed();
            ratio::record("wait_1000_ready", "rustix_epoll", t, iters);
            t
        })
    });

    let (c2, _d) = ready_socket();
    let poller = polling::Poller::new().unwrap();
    // SAFETY: `c2` outlives the poller's use of it and is deleted before being dropped.
    unsafe {
        poller
            .add_with_mode(&c2, polling::Event::readable(1), polling::PollMode::Level)
            .unwrap()
    };
    let mut pevents = polling::Events::new();
    group.bench_function("polling_crate", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters * WAITS {
                pevents.clear();
                poller.wait(&mut pevents, Some(Duration::ZERO)).unwrap();
                assert_eq!(pevents.len(), 1);
            }
            let t = start.elapsed();
            ratio::record("wait_1000_ready", "polling_crate", t, iters);
            t
        })
    });
    poller.delete(&c2).unwrap();
    group.finish();
}

criterion_group!(benches, backends);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    ratio::print_ratios("rustix_epoll", "polling_crate", &[]);
}
