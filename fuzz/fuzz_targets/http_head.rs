//! The HTTP request head parser, and the chunked decoder behind an accepted chunked
//! head: no input makes them panic, and an accepted head never holds a bare LF.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let status = oxloop_http::fuzz::fuzz_parse(data);
    assert!(
        status == 0 || (400..=505).contains(&status),
        "status {status}"
    );
});
