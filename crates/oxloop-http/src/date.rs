//! The `Date` header, formatted at most once per second per thread.

use std::cell::RefCell;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

struct Cached {
    /// Until when `text` is right (the next whole second, on the loop's clock).
    valid_until: Option<Instant>,
    text: [u8; 29],
}

thread_local! {
    static DATE: RefCell<Cached> = const { RefCell::new(Cached { valid_until: None, text: [0; 29] }) };
}

/// Appends the date in HTTP form (`Sun, 06 Nov 1994 08:49:37 GMT`). `now` is the
/// loop's cached clock; the wall clock is read and the text re-formatted only when a
/// new second started, so a response costs a comparison and a 29-byte copy.
pub(crate) fn push_date(out: &mut Vec<u8>, now: Instant) {
    DATE.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.valid_until.is_none_or(|until| now >= until) {
            let wall = SystemTime::now();
            let into_second = wall.duration_since(UNIX_EPOCH).map_or(Duration::ZERO, |d| {
                Duration::from_nanos(u64::from(d.subsec_nanos()))
            });
            let text = httpdate::fmt_http_date(wall);
            if text.len() == 29 {
                cached.text.copy_from_slice(text.as_bytes());
                cached.valid_until = Some(now + (Duration::from_secs(1) - into_second));
            }
        }
        out.extend_from_slice(&cached.text);
    });
}
