//! Text a worker sent (failure reasons, names in refused snapshots), made safe to print and to store in a report.

/// Longest worker-supplied text kept, in characters; the rest is cut and marked with `…`.
pub const MAX_CHARS: usize = 200;

/// `text` with every control character (C0, DEL and C1: terminal escapes,
/// newlines) and bidirectional override replaced by `�`, cut to
/// [`MAX_CHARS`] characters, so that a worker cannot rewrite the operator's
/// terminal, forge log lines or grow a report without bound.
pub fn clean(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_CHARS * 4));
    for (i, c) in text.chars().enumerate() {
        if i == MAX_CHARS {
            out.push('…');
            break;
        }
        out.push(if c.is_control() || is_bidi_control(c) {
            '\u{fffd}'
        } else {
            c
        });
    }
    out
}

/// Unicode bidirectional controls, which reorder what a terminal shows (Trojan Source).
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_are_replaced_and_length_is_bounded() {
        assert_eq!(clean("disk full"), "disk full");
        assert_eq!(
            clean("a\x1b[2Jb\nc\u{202e}d"),
            "a\u{fffd}[2Jb\u{fffd}c\u{fffd}d"
        );
        let long = clean(&"é".repeat(10_000));
        assert_eq!(long.chars().count(), MAX_CHARS + 1);
        assert!(long.ends_with('…'));
    }
}
