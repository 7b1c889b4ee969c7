//! Every example runs and prints what it promises.

mod support;
use support::run_example;

fn run(name: &str, args: &[&str]) -> String {
    run_example(name, args).0
}

#[test]
fn tour_shows_timers_pipe_signal_and_thread() {
    let out = run("tour", &[]);
    let expected = [
        "10 ms timer fired, cancelling the 20 ms one",
        "pipe: read \"line 1\"",
        "50 ms timer fired",
        "pipe: read \"line 3\"",
        "pipe: end of stream",
        "signal: SIGUSR1 handled on the loop thread",
        "thread: call from another thread",
        "signal handled: true",
    ];
    for line in expected {
        assert!(out.contains(line), "missing {line:?} in:\n{out}");
    }
    assert!(
        !out.contains("never printed"),
        "a cancelled timer fired:\n{out}"
    );
}

#[test]
fn select_first_source_wins() {
    let out = run("select", &["pipe"]);
    assert!(
        out.contains("pipe won: \"hello from the pipe\""),
        "pipe run:\n{out}"
    );
    let out = run("select", &["udp"]);
    assert!(
        out.contains("udp won: \"hello over udp\" from 127.0.0.1:"),
        "udp run:\n{out}"
    );
    let out = run("select", &["timeout"]);
    assert!(out.contains("timeout won"), "timeout run:\n{out}");
    assert!(
        out.contains("select(): the quick sleep won"),
        "timeout run:\n{out}"
    );
}
