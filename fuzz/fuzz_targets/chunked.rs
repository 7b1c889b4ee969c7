//! The chunked body decoder: no input makes it panic, and feeding the input in two
//! pieces gives exactly what feeding it whole gives. The first two bytes pick the split.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let split = usize::from(u16::from_le_bytes([data[0], data[1]]));
    let status = oxloop_http::fuzz::fuzz_chunked(&data[2..], split);
    assert!(
        status == 0 || status == 400 || status == 431,
        "status {status}"
    );
});
