//! CLIP's text cleaning: `whitespace_clean(basic_clean(text)).lower()`.

use super::{ftfy, html};

/// Cleans text exactly as CLIP-as-service does before pre-tokenising: `ftfy.fix_text`,
/// `html.unescape` twice, strip, collapse whitespace runs to one space, strip, lowercase.
///
/// Whitespace-only input cleans to the empty string (and then encodes to `[SOT, EOT]`).
pub(crate) fn clean_text(text: &str) -> String {
    let fixed = ftfy::fix_text(text);
    let unescaped = html::py_unescape(&html::py_unescape(&fixed));
    let collapsed = collapse_whitespace(py_strip(&unescaped));
    py_strip(&collapsed).to_lowercase()
}

/// Python's `str.isspace`: Unicode White_Space plus the four information separators
/// U+001C..U+001F (bidi class B/S), which Python also strips.
fn py_isspace(c: char) -> bool {
    c.is_whitespace() || ('\x1c'..='\x1f').contains(&c)
}

/// Python's `str.strip()` with no argument.
fn py_strip(s: &str) -> &str {
    s.trim_matches(py_isspace)
}

/// `re.sub(r'\s+', ' ', text)` with the `regex` module, whose `\s` is Unicode White_Space,
/// the same set as `char::is_whitespace`.
fn collapse_whitespace(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut in_space = false;
    for c in s.chars() {
        if c.is_whitespace() {
            if !in_space {
                out.push(' ');
            }
            in_space = true;
        } else {
            out.push(c);
            in_space = false;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleaning_examples() {
        assert_eq!(clean_text("  Hello \t\n  WORLD!! "), "hello world!!");
        assert_eq!(clean_text("it's &amp;amp; &lt;b&gt;"), "it's & <b>");
        assert_eq!(clean_text(" \u{3000}\u{a0} "), "");
        assert_eq!(clean_text("ΟΔΟΣ ΣΑΣ."), "οδος σας.");
    }
}
