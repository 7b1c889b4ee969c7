//! The wire examples run and print what they promise.

mod support;
use support::run_example;

use std::time::Duration;

/// Runs an example; its stdout and how long it took.
fn run(name: &str) -> (String, Duration) {
    run_example(name, &[])
}

#[test]
fn show_event_counts_events_until_the_loop_timeout() {
    let (out, elapsed) = run("wire_show_event");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines.iter().filter(|l| **l == "Running...").count(),
        5,
        "{out}"
    );
    let events: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with("Event "))
        .collect();
    assert_eq!(
        events,
        ["Event 2", "Event 3", "Event 4", "Event 5"],
        "{out}"
    );
    assert!(
        lines.last().unwrap().starts_with("timed out after 1s"),
        "{out}"
    );
    assert!(elapsed >= Duration::from_secs(1), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
}

#[test]
fn beeps_four_times_a_tenth_of_a_second_apart() {
    let (out, elapsed) = run("wire_beeps");
    assert_eq!(out.lines().filter(|l| *l == "beep").count(), 4, "{out}");
    assert!(out.contains("4 beeps in"), "{out}");
    assert!(elapsed >= Duration::from_millis(400), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
}

#[test]
fn poller_answers_the_socket_and_the_pipe() {
    let (out, _) = run("wire_poller");
    let expected = [
        "socket: \"hello\"",
        "socket: \"how are you?\"",
        "socket: \"bye\"",
        "pipe: \"ping\"",
        "pipe: \"pong\"",
        "socket: end of stream",
        "pipe: end of stream",
        "poller done",
        "peer got: you said \"hello\"",
        "peer got: you said \"how are you?\"",
        "peer got: you said \"bye\"",
    ];
    for line in expected {
        assert!(
            out.lines().any(|l| l == line),
            "missing {line:?} in:\n{out}"
        );
    }
    // Each source's lines are answered in order.
    let pos = |s: &str| out.find(s).unwrap();
    assert!(pos("socket: \"hello\"") < pos("socket: \"how are you?\""));
    assert!(pos("socket: \"how are you?\"") < pos("socket: \"bye\""));
    assert!(pos("pipe: \"ping\"") < pos("pipe: \"pong\""));
    assert!(pos("poller done") < pos("peer got:"));
}
