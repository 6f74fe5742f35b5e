//! Untrusted text on its way to a terminal.
//!
//! A key ID from an envelope, a field of a registry manifest, a pod name from a run record
//! or a line of guest console output may carry control characters: an escape sequence can
//! move the cursor, clear a line and print a fake `ACCEPTED`; a bidi override can reorder
//! what is shown. [`escape`] makes such text inert by spelling every control character
//! out, so what the user reads is what the bytes say.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Whether `c` must not reach a terminal as itself: C0 controls other than tab and line
/// feed, DEL, C1 controls (U+0080-U+009F, which some terminals take as CSI), and the
/// Unicode bidirectional formatting characters (U+061C, U+200E, U+200F, U+202A-U+202E,
/// U+2066-U+2069).
fn is_unsafe(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{8}' | '\u{b}'..='\u{1f}' | '\u{7f}'..='\u{9f}'
        | '\u{61c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `text` with every unsafe character (see above) written as a Rust-style escape: `\x1b`
/// for one below U+0100, `\u{202e}` above. Tab and line feed are kept; borrowed unchanged
/// when there is nothing to escape.
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_unsafe) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len().saturating_add(16));
    for c in text.chars() {
        if !is_unsafe(c) {
            out.push(c);
        } else if u32::from(c) < 0x100 {
            let _ = write!(out, "\\x{:02x}", u32::from(c));
        } else {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        }
    }
    Cow::Owned(out)
}

/// Like [`escape`], for a line of guest console output: a carriage return right before
/// the line feed (serial consoles end lines with CR LF) is kept; any other is escaped, so
/// the guest cannot overwrite what the terminal already shows.
pub fn escape_console_line(line: &str) -> Cow<'_, str> {
    let (body, end) = match line.strip_suffix("\r\n") {
        Some(b) => (b, "\r\n"),
        None => match line.strip_suffix('\n') {
            Some(b) => (b, "\n"),
            None => (line, ""),
        },
    };
    let escaped = escape(body);
    if escaped.contains('\n') || matches!(escaped, Cow::Owned(_)) {
        Cow::Owned(format!("{}{end}", escaped.replace('\n', "\\x0a")))
    } else {
        Cow::Borrowed(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_spelled_out() {
        assert!(matches!(escape("plain text\tand\nlines"), Cow::Borrowed(_)));
        assert_eq!(
            escape("key \u{1b}[2K\r\u{1b}[32mACCEPTED"),
            "key \\x1b[2K\\x0d\\x1b[32mACCEPTED"
        );
        assert_eq!(escape("a\u{9b}31m"), "a\\x9b31m");
        assert_eq!(escape("evil\u{202e}txt.exe"), "evil\\u{202e}txt.exe");
        assert_eq!(escape("\u{0}\u{7f}"), "\\x00\\x7f");
        assert_eq!(escape("ünïcödé"), "ünïcödé");
    }

    #[test]
    fn console_lines_keep_their_line_ending_only() {
        assert!(matches!(
            escape_console_line("boot ok\r\n"),
            Cow::Borrowed(_)
        ));
        assert_eq!(escape_console_line("a\rb\r\n"), "a\\x0db\r\n");
        assert_eq!(escape_console_line("\u{1b}[1A\n"), "\\x1b[1A\n");
        assert_eq!(escape_console_line("no end"), "no end");
    }
}
