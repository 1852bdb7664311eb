//! ftfy's `fix_encoding` (6.3.1, default settings): spot mojibake with ftfy's badness heuristic
//! and undo it by re-encoding in a single-byte codec and decoding as UTF-8.
//!
//! CLIP runs `ftfy.fix_text` on every text, so this also changes legitimate text that the
//! heuristic misreads (e.g. `ß’` becomes `ߒ`); token ids must reproduce that too. The patterns
//! below follow `badness.py` and `chardata.py` alternative by alternative; Python's `\s` and `\w`
//! are spelled out because the `regex` crate defines them slightly differently.

use std::collections::HashMap;
use std::sync::LazyLock;

use regex::bytes::Regex as BytesRegex;
use regex::Regex;

use super::ftfy_data as d;
use super::html::windows_1252_c1;

/// Python `re`'s `\s` for `str` patterns: Unicode White_Space plus U+001C..U+001F.
const PY_SPACE: &str = r"\s\x1c-\x1f";
/// Python `re`'s `\w` for `str` patterns (`str.isalnum()` or `_`).
const PY_WORD: &str = r"[\p{L}\p{N}_]";

/// One of ftfy's `CHARMAP_ENCODINGS`, ready to encode.
struct Codec {
    name: &'static str,
    sloppy: bool,
    encode_high: HashMap<char, u8>,
}

impl Codec {
    fn new(map: &d::Charmap) -> Self {
        let encode_high = map.high.chars().zip(0x80..=0xFFu8).collect();
        Self {
            name: map.name,
            sloppy: map.sloppy,
            encode_high,
        }
    }

    /// `text.encode(codec)`, or `None` where a character has no byte (ftfy's
    /// `possible_encoding` is exactly "encodes without error"). Sloppy codecs write U+FFFD as
    /// byte 0x1A and cannot write U+001A.
    fn encode(&self, text: &str) -> Option<Vec<u8>> {
        let mut out = Vec::with_capacity(text.len());
        for c in text.chars() {
            let byte = match c {
                '\x1a' if self.sloppy => return None,
                '\u{FFFD}' if self.sloppy => 0x1A,
                c if c.is_ascii() => u8::try_from(c).ok()?,
                c => *self.encode_high.get(&c)?,
            };
            out.push(byte);
        }
        Some(out)
    }
}

/// Compiled patterns and codecs.
struct Mojibake {
    badness: Regex,
    utf8_detector: Regex,
    continuation_strict: Regex,
    altered_utf8: BytesRegex,
    lossy_utf8: BytesRegex,
    codecs: Vec<Codec>,
}

static MOJIBAKE: LazyLock<Option<Mojibake>> = LazyLock::new(|| Mojibake::new().ok());

/// `ftfy.fix_encoding(text)`.
pub(super) fn fix_encoding(text: &str) -> String {
    match MOJIBAKE.as_ref() {
        Some(m) => m.fix_encoding(text),
        None => text.to_owned(),
    }
}

/// `fixes.fix_c1_controls`: C1 controls read as sloppy windows-1252.
pub(super) fn fix_c1_controls(text: &str) -> String {
    text.chars()
        .map(|c| match u8::try_from(u32::from(c)) {
            Ok(b @ 0x80..=0x9F) => windows_1252_c1(b),
            _ => c,
        })
        .collect()
}

/// `BADNESS_RE` from `badness.py`, one alternative per line there.
fn badness_pattern() -> String {
    let (c1, bad, law, cur) = (d::C1, d::BAD, d::LAW, d::CURRENCY);
    let (sp, ep, num, kao) = (
        d::START_PUNCTUATION,
        d::END_PUNCTUATION,
        d::NUMERIC,
        d::KAOMOJI,
    );
    let (ua, la, uc, lc) = (
        d::UPPER_ACCENTED,
        d::LOWER_ACCENTED,
        d::UPPER_COMMON,
        d::LOWER_COMMON,
    );
    let (bx, com) = (d::BOX, d::COMMON);
    [
        format!("[{c1}]"),
        format!("[{bad}{la}{ua}{bx}{sp}{ep}{cur}{num}{law}][{bad}]"),
        format!("[a-zA-Z][{lc}{uc}][{bad}]"),
        format!("[{bad}][{la}{ua}{bx}{sp}{ep}{cur}{num}{law}]"),
        format!("[{la}{lc}{bx}{ep}{cur}{num}][{ua}]"),
        format!("[{bx}{ep}{cur}{num}][{la}]"),
        format!("[{la}{bx}{ep}][{cur}]"),
        format!("[{PY_SPACE}][{ua}][{cur}]"),
        format!("[{ua}{bx}][{num}{law}]"),
        format!("[{la}{ua}{bx}{cur}{ep}][{sp}][{num}]"),
        format!("[{la}{ua}{cur}{num}{bx}{law}][{ep}][{sp}]"),
        format!("[{cur}{num}{bx}][{sp}]"),
        format!("[a-z][{ua}][{sp}{cur}]"),
        format!("[{bx}][{kao}]"),
        format!("[{la}{ua}{cur}{num}{sp}{ep}{law}][{bx}]"),
        format!("[{bx}][{ep}]"),
        format!("[{la}{ua}][{sp}{ep}]{PY_WORD}"),
        "[Œœ][^A-Za-z]".to_owned(),
        format!("[{ua}]°"),
        format!("[ÂÃÎÐ][€œŠš¢£Ÿž\u{a0}\u{ad}®©°·»{sp}{ep}–—´]"),
        "×[²³]".to_owned(),
        format!("[ØÙ][{com}{cur}{bad}{num}{sp}ŸŠ®°µ»][ØÙ][{com}{cur}{bad}{num}{sp}ŸŠ®°µ»]"),
        "à[²µ¹¼½¾]".to_owned(),
        "√[±∂†≠®™´≤≥¥µø]".to_owned(),
        "≈[°¢]".to_owned(),
        "‚Ä[ìîïòôúùû†°¢π]".to_owned(),
        "‚[âó][àä°ê]".to_owned(),
        "вЂ".to_owned(),
        format!("[ВГРС][{c1}{bad}{sp}{ep}{cur}°µ][ВГРС]"),
        r"ГўВЂВ.[A-Za-z\x20]".to_owned(),
        "Ã[\u{a0}¡]".to_owned(),
        format!(r"[a-z][{PY_SPACE}]?[ÃÂ]\x20"),
        r"^[ÃÂ]\x20".to_owned(),
        format!(r"[a-z.,?!{ep}]Â[\x20{sp}{ep}]"),
        "β€[™\u{a0}Ά\u{ad}®°]".to_owned(),
        format!("[ΒΓΞΟ][{c1}{bad}{sp}{ep}{cur}°][ΒΓΞΟ]"),
        "ā€".to_owned(),
    ]
    .join("|")
}

/// `UTF8_DETECTOR_RE` from `chardata.py` without its one-character negative lookbehind,
/// which [`Mojibake::detector_matches`] applies by hand.
fn utf8_detector_pattern() -> String {
    let cont = d::UTF8_CONTINUATION;
    format!(
        "(?:[{f2}][{cont}]|[{f3}][{cont}]{{2}}|[{f4}][{cont}]{{3}})+",
        f2 = d::UTF8_FIRST_OF_2,
        f3 = d::UTF8_FIRST_OF_3,
        f4 = d::UTF8_FIRST_OF_4,
    )
}

/// `chardata.ALTERED_UTF8_RE`: UTF-8 sequences where byte A0 became a space.
const ALTERED_UTF8: &str = r"(?-u)[\xc2\xc3\xc5\xce\xd0\xd9]\x20|[\xe2\xe3]\x20[\x80-\x84\x86-\x9f\xa1-\xbf]|[\xe0-\xe3][\x80-\x84\x86-\x9f\xa1-\xbf]\x20|\xf0\x20[\x80-\xbf][\x80-\xbf]|\xf0[\x80-\xbf]\x20[\x80-\xbf]|\xf0[\x80-\xbf][\x80-\xbf]\x20";

/// `chardata.LOSSY_UTF8_RE`: UTF-8 sequences with bytes lost to 0x1A (or one `?`).
const LOSSY_UTF8: &str = r"(?-u)[\xc2-\xdf]\x1a|[\xc2-\xc3]\?|\xed[\xa0-\xaf][\x1a?]\xed[\xb0-\xbf][\x1a?\x80-\xbf]|\xed[\xa0-\xaf][\x1a?\x80-\xbf]\xed[\xb0-\xbf][\x1a?]|[\xe0-\xef][\x1a?][\x1a\x80-\xbf]|[\xe0-\xef][\x1a\x80-\xbf][\x1a?]|[\xf0-\xf4][\x1a?][\x1a\x80-\xbf][\x1a\x80-\xbf]|[\xf0-\xf4][\x1a\x80-\xbf][\x1a?][\x1a\x80-\xbf]|[\xf0-\xf4][\x1a\x80-\xbf][\x1a\x80-\xbf][\x1a?]|\x1a";

impl Mojibake {
    fn new() -> Result<Self, regex::Error> {
        Ok(Self {
            badness: Regex::new(&badness_pattern())?,
            utf8_detector: Regex::new(&utf8_detector_pattern())?,
            continuation_strict: Regex::new(&format!("^[{}]$", d::UTF8_CONTINUATION_STRICT))?,
            altered_utf8: BytesRegex::new(ALTERED_UTF8)?,
            lossy_utf8: BytesRegex::new(LOSSY_UTF8)?,
            codecs: d::CHARMAPS.iter().map(Codec::new).collect(),
        })
    }

    /// `badness.is_bad`.
    fn is_bad(&self, text: &str) -> bool {
        self.badness.is_match(text)
    }

    /// `ftfy.fix_encoding`: repeat single steps until nothing changes.
    fn fix_encoding(&self, text: &str) -> String {
        let mut text = text.to_owned();
        loop {
            let next = self.one_step(&text);
            if next == text {
                return text;
            }
            text = next;
        }
    }

    /// `_fix_encoding_one_step_and_explain`, without the explanation.
    fn one_step(&self, text: &str) -> String {
        if text.is_empty() || text.is_ascii() || !self.is_bad(text) {
            return text.to_owned();
        }
        let mut latin1_possible = false;
        for codec in &self.codecs {
            let Some(mut bytes) = codec.encode(text) else {
                continue;
            };
            latin1_possible |= codec.name == "latin-1";
            if codec.name != "macroman" && self.altered_utf8.is_match(&bytes) {
                bytes = self.restore_byte_a0(&bytes);
            }
            if codec.sloppy {
                bytes = self
                    .lossy_utf8
                    .replace_all(&bytes, "\u{FFFD}".as_bytes())
                    .into_owned();
            }
            let decoded = if bytes.contains(&0xED) || bytes.contains(&0xC0) {
                decode_utf8_variants(&bytes)
            } else {
                String::from_utf8(bytes).ok()
            };
            if let Some(fixed) = decoded {
                return fixed;
            }
        }
        if !self.detector_matches(text).is_empty() {
            let fixed = self.decode_inconsistent_utf8(text);
            if fixed != text {
                return fixed;
            }
        }
        // ftfy checks for "windows-1252" among the possible codecs, but only the sloppy one can
        // be there, so Latin-1 text always gets the strict windows-1252 re-decoding attempt.
        if latin1_possible {
            if let Some(fixed) = latin1_as_windows_1252(text) {
                if fixed != text {
                    return fixed;
                }
            }
        }
        if text.chars().any(|c| ('\u{80}'..='\u{9F}').contains(&c)) {
            return fix_c1_controls(text);
        }
        text.to_owned()
    }

    /// Matches of `UTF8_DETECTOR_RE`, including its lookbehind: a match may not start right
    /// after a strict continuation character.
    fn detector_matches(&self, text: &str) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        let mut pos = 0;
        while pos <= text.len() {
            let Some(m) = self.utf8_detector.find_at(text, pos) else {
                break;
            };
            let blocked = text[..m.start()].chars().next_back().is_some_and(|c| {
                let mut buf = [0u8; 4];
                self.continuation_strict.is_match(c.encode_utf8(&mut buf))
            });
            if blocked {
                pos = m.start() + text[m.start()..].chars().next().map_or(1, char::len_utf8);
            } else {
                out.push((m.start(), m.end()));
                pos = m.end();
            }
        }
        out
    }

    /// `fixes.decode_inconsistent_utf8`: fix mojibake islands inside otherwise good text.
    fn decode_inconsistent_utf8(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut last = 0;
        for (start, end) in self.detector_matches(text) {
            out.push_str(&text[last..start]);
            let sub = &text[start..end];
            if sub.len() < text.len() && self.is_bad(sub) {
                out.push_str(&self.fix_encoding(sub));
            } else {
                out.push_str(sub);
            }
            last = end;
        }
        out.push_str(&text[last..]);
        out
    }

    /// `fixes.restore_byte_a0`.
    fn restore_byte_a0(&self, bytes: &[u8]) -> Vec<u8> {
        let bytes = restore_a_grave(bytes);
        self.altered_utf8
            .replace_all(&bytes, |caps: &regex::bytes::Captures<'_>| {
                caps[0]
                    .iter()
                    .map(|&b| if b == b' ' { 0xA0 } else { b })
                    .collect::<Vec<u8>>()
            })
            .into_owned()
    }
}

/// `A_GRAVE_WORD_RE.sub(b"\xc3\xa0 ", ...)`: `\xc3 ` not followed by ` `, `quele`, `quela`,
/// `quilo` or `s ` becomes `\xc3\xa0 `.
fn restore_a_grave(bytes: &[u8]) -> Vec<u8> {
    const KEEP: [&[u8]; 5] = [b" ", b"quele", b"quela", b"quilo", b"s "];
    let mut out = Vec::with_capacity(bytes.len() + 4);
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i..].starts_with(b"\xc3 ") && !KEEP.iter().any(|k| bytes[i + 2..].starts_with(k)) {
            out.extend_from_slice(b"\xc3\xa0 ");
            i += 2;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

/// Strict Python `text.encode("latin-1").decode("windows-1252")`; `None` on the five bytes
/// windows-1252 leaves undefined.
fn latin1_as_windows_1252(text: &str) -> Option<String> {
    text.chars()
        .map(|c| match u32::from(c) {
            0x81 | 0x8D | 0x8F | 0x90 | 0x9D => None,
            n @ 0x80..=0x9F => u8::try_from(n).ok().map(windows_1252_c1),
            n if n <= 0xFF => Some(c),
            _ => None,
        })
        .collect()
}

/// Python's `$` in a bytes pattern without MULTILINE: the end, or just before a final `\n`.
fn at_dollar(input: &[u8], pos: usize) -> bool {
    pos == input.len() || (pos + 1 == input.len() && input[pos] == b'\n')
}

/// Matches a sequence of groups, each "one byte in the set, or `$`", at `start`; returns the
/// end position. Once `$` holds, the remaining groups can only be `$` too.
fn match_groups(input: &[u8], start: usize, groups: &[fn(u8) -> bool]) -> Option<usize> {
    let mut pos = start;
    for group in groups {
        if input.get(pos).copied().is_some_and(group) {
            pos += 1;
        } else if !at_dollar(input, pos) {
            return None;
        }
    }
    Some(pos)
}

const CESU8_GROUPS: [fn(u8) -> bool; 6] = [
    |b| b == 0xED,
    |b| (0xA0..=0xAF).contains(&b),
    |b| (0x80..=0xBF).contains(&b),
    |b| b == 0xED,
    |b| (0xB0..=0xBF).contains(&b),
    |b| (0x80..=0xBF).contains(&b),
];

/// Does `SPECIAL_BYTES_RE` (Java-style NUL, CESU-8 pair, or lone surrogate) match at `i`?
fn special_at(input: &[u8], i: usize) -> bool {
    match input[i] {
        0xC0 => input.get(i + 1) == Some(&0x80) || at_dollar(input, i + 1),
        0xED => {
            match_groups(input, i, &CESU8_GROUPS).is_some()
                || match_groups(
                    input,
                    i,
                    &[
                        |b| b == 0xED,
                        |b| (0xA0..=0xBF).contains(&b),
                        |b| (0x80..=0xBF).contains(&b),
                    ],
                )
                .is_some()
        }
        _ => false,
    }
}

/// ftfy's `utf-8-variants` codec (strict, final): UTF-8 plus CESU-8 surrogate pairs and
/// `C0 80` as NUL, including the quirks Python's `$` gives it at a final newline.
fn decode_utf8_variants(input: &[u8]) -> Option<String> {
    let mut out = String::with_capacity(input.len());
    let mut pos = 0;
    while pos < input.len() {
        let rest = &input[pos..];
        match (0..rest.len()).find(|&i| special_at(rest, i)) {
            None => {
                out.push_str(std::str::from_utf8(rest).ok()?);
                pos = input.len();
            }
            Some(0) if rest[0] == 0xC0 => {
                // `C0 80`, or `C0` before a final newline (which Python's `$` lets it eat).
                if rest.len() < 2 {
                    return None;
                }
                out.push('\0');
                pos += 2;
            }
            Some(0) => {
                if rest.len() < 6 || match_groups(rest, 0, &CESU8_GROUPS).is_none() {
                    return None;
                }
                let cp = (u32::from(rest[1] & 0x0F) << 16)
                    + (u32::from(rest[2] & 0x3F) << 10)
                    + (u32::from(rest[4] & 0x0F) << 6)
                    + u32::from(rest[5] & 0x3F)
                    + 0x10000;
                out.push(char::from_u32(cp)?);
                pos += 6;
            }
            Some(cut) => {
                out.push_str(std::str::from_utf8(&rest[..cut]).ok()?);
                pos += cut;
            }
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_compile() {
        assert!(MOJIBAKE.is_some());
    }

    #[test]
    fn ftfy_examples() {
        assert_eq!(fix_encoding("sÃ³"), "só");
        assert_eq!(fix_encoding("voilÃ le travail"), "voilà le travail");
        assert_eq!(fix_encoding("âœ” No problems"), "✔ No problems");
        assert_eq!(fix_encoding("&ATILDE;&SUP3;"), "&ATILDE;&SUP3;");
        assert_eq!(fix_encoding("plain ascii"), "plain ascii");
        assert_eq!(fix_encoding("café naïve"), "café naïve");
    }

    #[test]
    fn utf8_variants() {
        assert_eq!(decode_utf8_variants(b"a\xc0\x80b").as_deref(), Some("a\0b"));
        assert_eq!(
            decode_utf8_variants(b"\xed\xa0\xbd\xed\xb8\x8d").as_deref(),
            Some("\u{1F60D}")
        );
        assert_eq!(decode_utf8_variants(b"\xed\xa0\x80"), None);
        assert_eq!(decode_utf8_variants(b"x\xc0\n").as_deref(), Some("x\0"));
    }
}
