//! `oxloop demo` exits 0 and shows every part working.

use std::process::Command;

#[test]
fn demo_shows_every_part() {
    let out = Command::new(env!("CARGO_BIN_EXE_oxloop"))
        .arg("demo")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{:?}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    for expected in [
        "50 ms timer fired",
        "the cancelled timer never fired",
        "SIGUSR1 handled on the loop thread",
        "call from thread",
        "sent \"hello\", got back \"hello\"",
        "got \"datagram\" back from",
        "a third was aborted: true",
        "beep 3",
        "GET /demo -> \"HTTP/1.1 200 OK\"",
        "done: every part worked",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
    assert!(!stdout.contains("must not fire"), "{stdout}");
}

#[test]
fn unknown_subcommand_is_a_clear_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_oxloop"))
        .arg("nonsense")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unrecognized subcommand"));
}
