//! The loop-integration examples run and print what they promise.

mod support;
use support::run_example;

use std::time::Duration;

fn run(name: &str) -> String {
    let (stdout, elapsed) = run_example(name, &[]);
    assert!(elapsed < Duration::from_secs(20));
    stdout
}

#[test]
#[cfg(all(feature = "tokio", feature = "calloop"))]
fn three_loops_delivers_every_event_and_shuts_down() {
    let out = run("three_loops");
    for line in [
        "oxloop: timer",
        "oxloop: socket got \"from tokio\"",
        "oxloop: channel got \"hello oxloop\"",
        "calloop: timer",
        "calloop: socket got \"from oxloop\"",
        "calloop: channel got \"hello calloop\"",
        "tokio: timer",
        "tokio: socket got \"from calloop\"",
        "tokio: channel got \"hello tokio\"",
        "all 9 events in",
        "calloop handed back and dropped",
        "oxloop destroyed, tokio runtime dropped",
    ] {
        assert!(out.contains(line), "missing {line:?} in:\n{out}");
    }
}

#[test]
fn embed_in_epoll_drives_oxloop_from_a_raw_epoll_host() {
    let out = run("embed_in_epoll");
    for line in [
        "host: read \"hello host\"",
        "oxloop: timer fired",
        "oxloop: task read \"hello oxloop\"",
        "oxloop: call from another thread",
        "host: oxloop finished its work in",
    ] {
        assert!(out.contains(line), "missing {line:?} in:\n{out}");
    }
}
