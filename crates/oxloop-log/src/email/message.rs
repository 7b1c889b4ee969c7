//! The mail itself: headers and body by lettre's message builder, then the SMTP DATA
//! framing (dot-stuffing and the final `.`).

use super::SmtpConfig;
use lettre::message::header::ContentType;
use lettre::Message;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// The DATA payload for one report: RFC 5322 headers (From, To, Subject, Date,
/// Message-ID, MIME), the body with a suitable transfer encoding, dot-stuffed and
/// terminated by `CRLF . CRLF`.
pub(crate) fn build(config: &SmtpConfig, body: String) -> Result<Vec<u8>, String> {
    let now = SystemTime::now();
    let nanos = now
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let id = format!(
        "<{nanos}.{}.{}@{}>",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        config.from.email.domain()
    );
    let mut builder = Message::builder()
        .from(config.from.clone())
        .subject(config.subject.clone())
        .date(now)
        .message_id(Some(id))
        .header(ContentType::TEXT_PLAIN);
    for to in &config.to {
        builder = builder.to(to.clone());
    }
    let message = builder.body(body).map_err(|e| e.to_string())?;
    Ok(dot_stuff(&message.formatted()))
}

/// Doubles a `.` that starts a line, makes sure the text ends with a line break and
/// appends the end-of-data line (RFC 5321 section 4.5.2).
pub(crate) fn dot_stuff(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + 8);
    let mut at_line_start = true;
    for &b in text {
        if at_line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        at_line_start = b == b'\n';
    }
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_stuffing() {
        assert_eq!(
            dot_stuff(b".a\r\nb\r\n..c\r\n"),
            b"..a\r\nb\r\n...c\r\n.\r\n"
        );
        assert_eq!(dot_stuff(b"x"), b"x\r\n.\r\n");
        assert_eq!(dot_stuff(b"x.\r\n.\r\n"), b"x.\r\n..\r\n.\r\n");
    }
}
