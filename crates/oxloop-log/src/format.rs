//! One-line rendering of an event for the e-mail body, and UTC timestamps.

use std::fmt::{self, Write};
use std::time::{SystemTime, UNIX_EPOCH};
use tracing::field::{Field, Visit};
use tracing::Event;

/// `2026-11-21T12:34:56.789012Z` for `t`.
pub(crate) fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (y, m, day) = civil_from_days((secs / 86_400) as i64);
    let s = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        s / 3600,
        s / 60 % 60,
        s % 60,
        d.subsec_micros()
    )
}

/// Year, month (1-12) and day (1-31) of a day count since 1970-01-01 (proleptic
/// Gregorian calendar; H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// `<time> <LEVEL> <spans:>target: message key=value ...` on one line (newlines in the
/// message are kept but indented so each event stays recognisable).
pub(crate) fn event_line(event: &Event<'_>, spans: &str) -> String {
    let meta = event.metadata();
    let mut v = LineVisitor::default();
    event.record(&mut v);
    let mut line = format!("{} {:>5} ", rfc3339(SystemTime::now()), meta.level());
    if !spans.is_empty() {
        line.push_str(spans);
        line.push_str(": ");
    }
    line.push_str(meta.target());
    line.push_str(": ");
    line.push_str(&v.message);
    line.push_str(&v.fields);
    line.replace('\n', "\n    ")
}

#[derive(Default)]
struct LineVisitor {
    message: String,
    fields: String,
}

impl Visit for LineVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
        let t = UNIX_EPOCH + Duration::new(951_782_400 + 86_399, 5_000);
        assert_eq!(rfc3339(t), "2000-02-29T23:59:59.000005Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        assert_eq!(rfc3339(t), "2026-11-18T11:06:40.000000Z");
    }
}
