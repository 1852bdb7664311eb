//! `ftfy.fix_text` (ftfy 6.3.1, default settings), which CLIP runs before anything else.
//!
//! Replicated: per-line segmentation, the "auto" HTML rule (no unescaping once a segment
//! contains `<`), the fix-until-stable loop, `unescape_html`, `fix_encoding` (mojibake repair, in
//! [`super::mojibake`]), `fix_c1_controls`, `fix_latin_ligatures`, `fix_character_width`,
//! `uncurl_quotes`, `fix_line_breaks`, `remove_terminal_escapes`, `remove_control_chars` and NFC.
//! `fix_surrogates` has nothing to do on a Rust `str`. Unicode tables (NFC here, letters and
//! case elsewhere) come from the Rust crates, so characters assigned after Unicode 14 (Python
//! 3.11) may be handled differently than by a given Python installation.

use std::borrow::Cow;
use std::sync::LazyLock;

use regex::Regex;
use unicode_normalization::{is_nfc_quick, IsNormalized, UnicodeNormalization};

use super::html;
use super::mojibake::{fix_c1_controls, fix_encoding};

/// ftfy's `max_decode_length`, counted in code points.
const MAX_DECODE_LENGTH: usize = 1_000_000;

/// `fixes.ANSI_RE`; `\d` is any Unicode decimal digit there, as in the `regex` crate.
static ANSI_RE: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"\x1b\[(?:\d|;)*[a-zA-Z]").ok());

/// `ftfy.fix_text` with default settings.
pub(super) fn fix_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut unescape = true;
    let mut rest = text;
    while !rest.is_empty() {
        let line_end = rest.find('\n').map_or(rest.len(), |p| p + 1);
        let seg_end = rest[..line_end]
            .char_indices()
            .nth(MAX_DECODE_LENGTH)
            .map_or(line_end, |(p, _)| p);
        let (segment, tail) = rest.split_at(seg_end);
        // ftfy switches "auto" unescaping off for this and every later segment.
        if unescape && segment.contains('<') {
            unescape = false;
        }
        out.push_str(&fix_segment(segment, unescape));
        rest = tail;
    }
    out
}

/// `ftfy.fix_and_explain` on one segment: apply every fixer in order until nothing changes.
fn fix_segment(segment: &str, unescape: bool) -> String {
    let mut text = segment.to_owned();
    loop {
        let orig = text.clone();
        if unescape {
            text = html::ftfy_unescape(&text);
        }
        text = fix_encoding(&text);
        text = fix_c1_controls(&text);
        text = map_chars(&text, latin_ligature);
        text = map_chars(&text, character_width);
        text = map_chars(&text, uncurl_quote);
        text = fix_line_breaks(&text);
        text = remove_terminal_escapes(&text);
        text.retain(|c| !is_removed_control(c));
        if is_nfc_quick(text.chars()) != IsNormalized::Yes {
            text = text.nfc().collect();
        }
        if text == orig {
            return text;
        }
    }
}

/// Applies a per-character replacement, like Python's `str.translate`.
fn map_chars(text: &str, f: fn(char) -> Option<Cow<'static, str>>) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match f(c) {
            Some(rep) => out.push_str(&rep),
            None => out.push(c),
        }
    }
    out
}

/// `chardata.LIGATURES`.
fn latin_ligature(c: char) -> Option<Cow<'static, str>> {
    let s = match c {
        'Ĳ' => "IJ",
        'ĳ' => "ij",
        'ŉ' => "ʼn",
        'Ǳ' => "DZ",
        'ǲ' => "Dz",
        'ǳ' => "dz",
        'Ǆ' => "DŽ",
        'ǅ' => "Dž",
        'ǆ' => "dž",
        'Ǉ' => "LJ",
        'ǈ' => "Lj",
        'ǉ' => "lj",
        'Ǌ' => "NJ",
        'ǋ' => "Nj",
        'ǌ' => "nj",
        'ﬀ' => "ff",
        'ﬁ' => "fi",
        'ﬂ' => "fl",
        'ﬃ' => "ffi",
        'ﬄ' => "ffl",
        'ﬅ' => "ſt",
        'ﬆ' => "st",
        _ => return None,
    };
    Some(Cow::Borrowed(s))
}

/// `chardata.WIDTH_MAP`: U+3000 to a space, and U+FF01..U+FFEF to their NFKC form.
fn character_width(c: char) -> Option<Cow<'static, str>> {
    match c {
        '\u{3000}' => Some(Cow::Borrowed(" ")),
        '\u{FF01}'..='\u{FFEF}' => {
            let alt: String = std::iter::once(c).nfkc().collect();
            let mut it = alt.chars();
            (it.next() != Some(c) || it.next().is_some()).then_some(Cow::Owned(alt))
        }
        _ => None,
    }
}

/// `fixes.uncurl_quotes`.
fn uncurl_quote(c: char) -> Option<Cow<'static, str>> {
    match c {
        '\u{02BC}' | '\u{2018}'..='\u{201B}' => Some(Cow::Borrowed("'")),
        '\u{201C}'..='\u{201F}' => Some(Cow::Borrowed("\"")),
        _ => None,
    }
}

/// `fixes.fix_line_breaks`.
fn fix_line_breaks(text: &str) -> String {
    text.replace("\r\n", "\n")
        .replace(['\r', '\u{2028}', '\u{2029}', '\u{85}'], "\n")
}

/// `fixes.remove_terminal_escapes`.
fn remove_terminal_escapes(text: &str) -> String {
    match ANSI_RE.as_ref() {
        Some(re) if text.contains('\x1b') => re.replace_all(text, "").into_owned(),
        _ => text.to_owned(),
    }
}

/// `chardata.CONTROL_CHARS`.
fn is_removed_control(c: char) -> bool {
    matches!(
        c,
        '\0'..='\x08'
            | '\x0b'
            | '\x0e'..='\x1f'
            | '\x7f'
            | '\u{206A}'..='\u{206F}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFC}'
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ansi_pattern_compiles() {
        assert!(ANSI_RE.is_some());
    }

    #[test]
    fn ftfy_docstring_examples() {
        assert_eq!(fix_text("ＬＯＵＤ　ＮＯＩＳＥＳ"), "LOUD NOISES");
        assert_eq!(fix_text("Ｕﾀｰﾝ"), "Uターン");
        assert_eq!(fix_text("ﬂuﬃeﬆ"), "fluffiest");
        assert_eq!(
            fix_text("Broken text&hellip; it&#x2019;s ﬂubberiﬁc!"),
            "Broken text… it's flubberific!"
        );
        assert_eq!(fix_text("\x1b[36;44mI'm blue\x1b[0m"), "I'm blue");
        assert_eq!(fix_text("a\r\nb\rc\u{2028}d"), "a\nb\nc\nd");
        assert_eq!(fix_text("&lt;b&gt; &amp;amp;"), "<b> &");
        assert_eq!(fix_text("<b> &amp;amp;"), "<b> &amp;amp;");
    }
}
