//! HTML character references, decoded exactly as Python does.
//!
//! Two decoders are needed: Python's `html.unescape` (run twice by CLIP's `basic_clean`) and
//! ftfy's stricter `unescape_html` (run inside `ftfy.fix_text`). `htmlize::unescape` follows the
//! WHATWG parser instead, which differs from Python on numeric references (Python drops control
//! characters and noncharacters such as `&#1;` or `&#xFFFE;`; htmlize keeps them) and on which
//! prefix wins for bare names, so only htmlize's entity table is used here.

use std::collections::HashMap;
use std::sync::LazyLock;

/// Longest name Python's `html._charref` pattern captures (`[^\t\n\f <&#;]{1,32}`).
const PY_NAME_MAX: usize = 32;
/// Longest name ftfy's `HTML_ENTITY_RE` accepts (`&#?[0-9A-Za-z]{1,24};`).
const FTFY_NAME_MAX: usize = 24;

/// Looks up `&name` (with or without `;`) in the HTML5 table; keys include the `&`.
fn html5(name_with_amp: &str) -> Option<&'static str> {
    htmlize::ENTITIES
        .get(name_with_amp.as_bytes())
        .and_then(|v| std::str::from_utf8(v).ok())
}

/// Python's `html.unescape`.
pub(super) fn py_unescape(s: &str) -> String {
    if !s.contains('&') {
        return s.to_owned();
    }
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '&' {
            if let Some((end, text)) = py_charref_at(&chars, i + 1) {
                out.push_str(&text);
                i = end;
                continue;
            }
        }
        out.push(chars[i]);
        i += 1;
    }
    out
}

/// Matches `#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\f <&#;]{1,32};?` at `start` (just after `&`)
/// and returns the end index and the replacement.
fn py_charref_at(chars: &[char], start: usize) -> Option<(usize, String)> {
    let at = |k: usize| chars.get(k).copied();
    if at(start) == Some('#') {
        let (radix, digits_start) = match at(start + 1) {
            Some(c) if c.is_ascii_digit() => (10, start + 1),
            Some('x' | 'X') if at(start + 2).is_some_and(|c| c.is_ascii_hexdigit()) => {
                (16, start + 2)
            }
            _ => return None,
        };
        let mut end = digits_start;
        // Saturate: anything above U+10FFFF decodes to U+FFFD, however many digits follow.
        let mut num: u64 = 0;
        while let Some(d) = at(end).and_then(|c| c.to_digit(radix)) {
            num = num
                .saturating_mul(u64::from(radix))
                .saturating_add(u64::from(d))
                .min(0x11_0000);
            end += 1;
        }
        if at(end) == Some(';') {
            end += 1;
        }
        return Some((end, py_numeric_charref(num)));
    }
    let mut end = start;
    while end - start < PY_NAME_MAX
        && at(end).is_some_and(|c| !matches!(c, '\t' | '\n' | '\x0c' | ' ' | '<' | '&' | '#' | ';'))
    {
        end += 1;
    }
    if end == start {
        return None;
    }
    if at(end) == Some(';') {
        end += 1;
    }
    let name: String = chars[start..end].iter().collect();
    if let Some(v) = html5(&format!("&{name}")) {
        return Some((end, v.to_owned()));
    }
    // Longest bare prefix of at least two characters, as Python's loop does.
    for x in (2..end - start).rev() {
        let prefix: String = chars[start..start + x].iter().collect();
        if let Some(v) = html5(&format!("&{prefix}")) {
            let rest: String = chars[start + x..end].iter().collect();
            return Some((end, format!("{v}{rest}")));
        }
    }
    Some((end, format!("&{name}")))
}

/// Python's `html._replace_charref` for numbers: windows-1252 remap, U+FFFD for impossible
/// values, and silent removal of control characters and noncharacters.
fn py_numeric_charref(num: u64) -> String {
    if let Some(c) = invalid_charref(num) {
        return c.to_string();
    }
    if (0xD800..=0xDFFF).contains(&num) || num > 0x10_FFFF {
        return '\u{FFFD}'.to_string();
    }
    if is_invalid_codepoint(num) {
        return String::new();
    }
    u32::try_from(num)
        .ok()
        .and_then(char::from_u32)
        .unwrap_or('\u{FFFD}')
        .to_string()
}

/// `html._invalid_charrefs`.
fn invalid_charref(num: u64) -> Option<char> {
    Some(match num {
        0x00 => '\u{FFFD}',
        0x0D => '\r',
        0x80..=0x9F => windows_1252_c1(u8::try_from(num).ok()?),
        _ => return None,
    })
}

/// `html._invalid_codepoints`.
fn is_invalid_codepoint(num: u64) -> bool {
    matches!(num, 0x1..=0x8 | 0xB | 0xE..=0x1F | 0x7F..=0x9F | 0xFDD0..=0xFDEF)
        || (num <= 0x10_FFFF && (num & 0xFFFF) >= 0xFFFE)
}

/// Windows-1252 meaning of a C1 byte; the five undefined bytes stay as their C1 code point
/// (ftfy's "sloppy" codec and Python's charref table agree on this).
pub(super) fn windows_1252_c1(byte: u8) -> char {
    match byte {
        0x80 => '\u{20AC}',
        0x82 => '\u{201A}',
        0x83 => '\u{0192}',
        0x84 => '\u{201E}',
        0x85 => '\u{2026}',
        0x86 => '\u{2020}',
        0x87 => '\u{2021}',
        0x88 => '\u{02C6}',
        0x89 => '\u{2030}',
        0x8A => '\u{0160}',
        0x8B => '\u{2039}',
        0x8C => '\u{0152}',
        0x8E => '\u{017D}',
        0x91 => '\u{2018}',
        0x92 => '\u{2019}',
        0x93 => '\u{201C}',
        0x94 => '\u{201D}',
        0x95 => '\u{2022}',
        0x96 => '\u{2013}',
        0x97 => '\u{2014}',
        0x98 => '\u{02DC}',
        0x99 => '\u{2122}',
        0x9A => '\u{0161}',
        0x9B => '\u{203A}',
        0x9C => '\u{0153}',
        0x9E => '\u{017E}',
        0x9F => '\u{0178}',
        other => char::from(other),
    }
}

/// ftfy's `HTML_ENTITIES`: every `;`-terminated HTML5 name, plus the all-caps spelling of
/// lowercase names when that spelling is not itself a reference (`&EACUTE;` → `É`).
static FTFY_ENTITIES: LazyLock<HashMap<String, String>> = LazyLock::new(|| {
    let mut map = HashMap::new();
    for (key, value) in htmlize::ENTITIES.entries() {
        let (Ok(key), Ok(value)) = (std::str::from_utf8(key), std::str::from_utf8(value)) else {
            continue;
        };
        if !key.ends_with(';') {
            continue;
        }
        map.insert(key.to_owned(), value.to_owned());
    }
    let lower: Vec<(String, String)> = map
        .iter()
        .filter(|(k, _)| !k.bytes().any(|b| b.is_ascii_uppercase()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (key, value) in lower {
        let upper = key.to_ascii_uppercase();
        if py_unescape(&upper) == upper {
            map.insert(upper, value.to_uppercase());
        }
    }
    map
});

/// ftfy's `fixes.unescape_html`: only `&name;` / `&#...;` forms, no bare names.
pub(super) fn ftfy_unescape(s: &str) -> String {
    if !s.contains('&') {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find('&') {
        out.push_str(&rest[..pos]);
        let tail = &rest[pos..];
        match ftfy_entity_len(tail) {
            Some(len) => {
                out.push_str(&ftfy_fixup(&tail[..len]));
                rest = &tail[len..];
            }
            None => {
                out.push('&');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Byte length of a match of `&#?[0-9A-Za-z]{1,24};` at the start of `s`.
fn ftfy_entity_len(s: &str) -> Option<usize> {
    let bytes = s.as_bytes();
    let mut i = 1;
    if bytes.get(i) == Some(&b'#') {
        i += 1;
    }
    let run = bytes[i..]
        .iter()
        .take_while(|b| b.is_ascii_alphanumeric())
        .count();
    ((1..=FTFY_NAME_MAX).contains(&run) && bytes.get(i + run) == Some(&b';')).then_some(i + run + 1)
}

/// ftfy's `_unescape_fixup`.
fn ftfy_fixup(entity: &str) -> String {
    if let Some(v) = FTFY_ENTITIES.get(entity) {
        return v.clone();
    }
    if entity.starts_with("&#") {
        let unescaped = py_unescape(entity);
        if !unescaped.contains(';') {
            return unescaped;
        }
    }
    entity.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_unescape_cases() {
        assert_eq!(py_unescape("&amp;amp;"), "&amp;");
        assert_eq!(py_unescape("&notin; &notin &notit; &amp"), "∉ ¬in ¬it; &");
        assert_eq!(py_unescape("&#1;&#x7f;&#xFFFE;x"), "x");
        assert_eq!(py_unescape("&#x80;&#129;&#0;"), "€\u{81}\u{FFFD}");
        assert_eq!(
            py_unescape("&#99999999999999999999;&#xD800;"),
            "\u{FFFD}\u{FFFD}"
        );
        assert_eq!(py_unescape("&#;&#x;&Amp;"), "&#;&#x;&Amp;");
    }

    #[test]
    fn ftfy_unescape_cases() {
        assert_eq!(ftfy_unescape("P&EACUTE;REZ &amp &lt;"), "PÉREZ &amp <");
        assert_eq!(ftfy_unescape("BUNDESSTRA&SZLIG;E"), "BUNDESSTRASSE");
        assert_eq!(
            ftfy_unescape("&ntilde; &Ntilde; &NTILDE; &nTILDE;"),
            "ñ Ñ Ñ &nTILDE;"
        );
        assert_eq!(ftfy_unescape("&#x2019;&#12ab;"), "\u{2019}&#12ab;");
    }
}
