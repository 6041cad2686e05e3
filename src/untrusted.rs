//! Text from remote parties (peers, relays, strangers) shown in logs and error messages.
//!
//! Anything a remote party chose — a NOTICE, a close reason, a username, an endpoint, an
//! error string — is shown through [`Untrusted`]: at most a bounded number of characters,
//! with control characters (newlines included) escaped, so one line in the log stays one
//! line and a hostile peer cannot forge log entries or fill the disk with one message.

use std::fmt;

/// How many characters of remote text a log line or error message shows by default.
pub const SHOWN_CHARS: usize = 120;

/// Remote text, shown escaped and truncated (`…` marks a cut).
#[derive(Clone, Copy)]
pub struct Untrusted<'a> {
    text: &'a str,
    max_chars: usize,
}

impl<'a> Untrusted<'a> {
    /// Shows at most [`SHOWN_CHARS`] characters of `text`.
    pub fn new(text: &'a str) -> Self {
        Self::at_most(text, SHOWN_CHARS)
    }

    /// Shows at most `max_chars` characters of `text`.
    pub fn at_most(text: &'a str, max_chars: usize) -> Self {
        Self { text, max_chars }
    }
}

/// Shorthand for [`Untrusted::new`].
pub fn untrusted(text: &str) -> Untrusted<'_> {
    Untrusted::new(text)
}

/// Remote bytes (not necessarily UTF-8), shown like [`Untrusted`] at most `max` bytes long.
pub fn shown_bytes(bytes: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(max)]);
    let mut out = Untrusted::at_most(&text, usize::MAX).to_string();
    if bytes.len() > max {
        out.push('…');
    }
    out
}

impl fmt::Display for Untrusted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (shown, c) in self.text.chars().enumerate() {
            if shown == self.max_chars {
                return f.write_str("…");
            }
            if c.is_control() || c == '\\' {
                for e in c.escape_debug() {
                    fmt::Write::write_char(f, e)?;
                }
            } else {
                fmt::Write::write_char(f, c)?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Untrusted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newlines_and_controls_are_escaped() {
        let shown = untrusted("ok\nERROR forged line\r\x1b[31m").to_string();
        assert!(!shown.contains('\n') && !shown.contains('\r') && !shown.contains('\x1b'));
        assert_eq!(shown, "ok\\nERROR forged line\\r\\u{1b}[31m");
    }

    #[test]
    fn long_text_is_cut_at_the_limit() {
        let long = "é".repeat(10_000);
        let shown = Untrusted::at_most(&long, 5).to_string();
        assert_eq!(shown, "ééééé…");
        assert_eq!(
            untrusted(&long).to_string().chars().count(),
            SHOWN_CHARS + 1
        );
        assert_eq!(untrusted("short").to_string(), "short");
    }

    #[test]
    fn bytes_are_cut_and_escaped() {
        assert_eq!(shown_bytes(b"a\nb", 64), "a\\nb");
        assert_eq!(shown_bytes(&[b'x'; 100], 3), "xxx…");
    }
}
