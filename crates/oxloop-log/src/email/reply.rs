//! SMTP replies (RFC 5321 section 4.2): one or more lines sharing a three-digit code,
//! `250-more follows` on every line but the last, `250 done` (or a bare `250`) on the
//! last. Pure: lines go in, complete replies come out.

/// The most bytes one reply may take, all its lines and line breaks together.
pub(crate) const MAX_REPLY: usize = 64 * 1024;

/// A complete reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reply {
    /// The reply code, 200 to 599.
    pub code: u16,
    /// The text of each line, after the code and its separator.
    pub lines: Vec<String>,
}

impl Reply {
    /// The text of all lines, for error messages.
    pub fn text(&self) -> String {
        self.lines.join(" / ")
    }
}

/// Gathers the lines of one reply.
#[derive(Debug, Default)]
pub(crate) struct ReplyParser {
    code: Option<u16>,
    lines: Vec<String>,
    size: usize,
}

impl ReplyParser {
    /// Takes the next line (its `\r\n` or `\n` may be included) and returns the reply
    /// when that line was its last. The error says what is wrong with the line.
    pub fn push(&mut self, raw: &[u8]) -> Result<Option<Reply>, String> {
        self.size += raw.len();
        if self.size > MAX_REPLY {
            return Err("reply too long".into());
        }
        let line = String::from_utf8_lossy(raw);
        let line = line.trim_end_matches(['\r', '\n']);
        let bytes = line.as_bytes();
        let code = match bytes.get(..3) {
            Some(digits) if digits.iter().all(u8::is_ascii_digit) => {
                digits.iter().fold(0, |n, d| n * 10 + u16::from(d - b'0'))
            }
            _ => return Err(format!("malformed reply {line:?}")),
        };
        let last = match bytes.get(3) {
            None | Some(b' ') => true,
            Some(b'-') => false,
            _ => return Err(format!("malformed reply {line:?}")),
        };
        if !(200..600).contains(&code) {
            return Err(format!("malformed reply {line:?}"));
        }
        if self.code.is_some_and(|c| c != code) {
            return Err(format!(
                "reply code changed inside a multi-line reply: {line:?}"
            ));
        }
        self.code = Some(code);
        // Bytes 0..4 are ASCII, so 4 is a character boundary.
        self.lines.push(line.get(4..).unwrap_or("").to_string());
        if !last {
            return Ok(None);
        }
        let lines = std::mem::take(&mut self.lines);
        *self = ReplyParser::default();
        Ok(Some(Reply { code, lines }))
    }
}

/// Feeds `input`, split into lines at each `\n`, to a reply parser and checks what
/// comes out: codes in 200..600, at least one line per reply, no reply over
/// `MAX_REPLY` bytes. For fuzzing: must never panic.
pub fn fuzz_replies(input: &[u8]) {
    let mut parser = ReplyParser::default();
    let mut since_reply = 0;
    for line in input.split_inclusive(|&b| b == b'\n') {
        since_reply += line.len();
        match parser.push(line) {
            Ok(Some(reply)) => {
                assert!((200..600).contains(&reply.code), "code {}", reply.code);
                assert!(!reply.lines.is_empty(), "a reply without lines");
                assert!(since_reply <= MAX_REPLY, "a reply over the limit");
                since_reply = 0;
            }
            Ok(None) => {}
            // The connection is dropped on a bad reply: start again, as a new one would.
            Err(_) => {
                parser = ReplyParser::default();
                since_reply = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(lines: &[&str]) -> Result<Vec<Reply>, String> {
        let mut parser = ReplyParser::default();
        let mut replies = Vec::new();
        for line in lines {
            replies.extend(parser.push(line.as_bytes())?);
        }
        Ok(replies)
    }

    fn reply(code: u16, lines: &[&str]) -> Reply {
        Reply {
            code,
            lines: lines.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn single_and_multi_line() {
        assert_eq!(parse(&["220 ready\r\n"]).unwrap(), [reply(220, &["ready"])]);
        assert_eq!(parse(&["250\r\n"]).unwrap(), [reply(250, &[""])]);
        assert_eq!(
            parse(&[
                "250-sink\r\n",
                "250-AUTH PLAIN\n",
                "250 8BITMIME",
                "354 go\r\n"
            ])
            .unwrap(),
            [
                reply(250, &["sink", "AUTH PLAIN", "8BITMIME"]),
                reply(354, &["go"])
            ]
        );
        assert_eq!(parse(&["250-a"]).unwrap(), []);
        assert_eq!(reply(250, &["a", "b"]).text(), "a / b");
    }

    #[test]
    fn malformed_lines() {
        for bad in [
            "hello there\r\n",
            "25\r\n",
            "+25 x",
            "2500 x",
            "199 x",
            "600 x",
            "",
        ] {
            let e = parse(&[bad]).unwrap_err();
            assert!(e.starts_with("malformed reply"), "{bad:?}: {e}");
        }
        assert_eq!(
            parse(&["hello there\r\n"]).unwrap_err(),
            "malformed reply \"hello there\""
        );
        let e = parse(&["250-a", "251 b"]).unwrap_err();
        assert!(e.contains("code changed"), "{e}");
    }

    #[test]
    fn invalid_utf8_is_replaced_not_refused() {
        assert_eq!(
            parse(&["554 caf\u{e9}"]).unwrap(),
            [reply(554, &["caf\u{e9}"])]
        );
        let mut parser = ReplyParser::default();
        let r = parser.push(b"554 \xff\r\n").unwrap().unwrap();
        assert_eq!(r.lines, ["\u{fffd}"]);
    }

    #[test]
    fn the_whole_reply_is_bounded() {
        let line = format!("250-{}\r\n", "x".repeat(1000));
        let mut parser = ReplyParser::default();
        let mut error = None;
        for _ in 0..100 {
            if let Err(e) = parser.push(line.as_bytes()) {
                error = Some(e);
                break;
            }
        }
        assert_eq!(error.as_deref(), Some("reply too long"));
    }
}
