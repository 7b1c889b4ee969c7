//! The SMTP reply parser, line by line: no input makes it panic, and every reply it
//! returns has a valid code, at least one line and stays under the size limit.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    oxloop_log::fuzz::fuzz_replies(data);
});
