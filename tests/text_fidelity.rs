//! The CLIP tokenizer must reproduce CLIP-as-service's `SimpleTokenizer` id for id.
//!
//! `tests/fixtures/text/tokens.json` is produced by `scripts/fixtures/ref_text.py` (ftfy 6.3.1).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fmt::Write as _;

use clip_worker::preprocess::text::{ClipTokenizer, CONTEXT_LENGTH, EOT_ID, SOT_ID};

const FIXTURE: &str = include_str!("fixtures/text/tokens.json");

fn tokenizer() -> ClipTokenizer {
    ClipTokenizer::new().expect("tokenizer builds from the embedded vocabulary")
}

/// Reads `[{"text": ..., "ids": [...]}, ...]`.
fn corpus() -> Vec<(String, Vec<u32>)> {
    let rows: Vec<serde_json::Value> = serde_json::from_str(FIXTURE).expect("fixture is JSON");
    rows.iter()
        .map(|row| {
            let text = row["text"].as_str().expect("text field").to_owned();
            let ids = row["ids"]
                .as_array()
                .expect("ids field")
                .iter()
                .map(|v| u32::try_from(v.as_u64().expect("id is a number")).expect("id fits u32"))
                .collect();
            (text, ids)
        })
        .collect()
}

#[test]
fn corpus_matches_reference_ids() {
    let tok = tokenizer();
    let corpus = corpus();
    assert!(
        corpus.len() >= 220,
        "corpus has only {} entries",
        corpus.len()
    );
    let mut report = String::new();
    let mut mismatches = 0;
    for (text, want) in &corpus {
        let got = tok.encode(text).expect("encode");
        if &got != want {
            mismatches += 1;
            if mismatches <= 5 {
                let _ = writeln!(report, "text {text:?}\n  want {want:?}\n  got  {got:?}");
            }
        }
    }
    assert!(
        mismatches == 0,
        "{mismatches}/{} corpus entries differ; first ones:\n{report}",
        corpus.len()
    );
}

#[test]
fn golden_table() {
    let tok = tokenizer();
    let table: &[(&str, &[u32])] = &[
        ("hello, world", &[49406, 3306, 267, 1002, 49407]),
        ("goodbye, world", &[49406, 6968, 267, 1002, 49407]),
        ("hello world", &[49406, 3306, 1002, 49407]),
        ("Hello   WORLD!!", &[49406, 3306, 1002, 748, 49407]),
        (
            "a photo of a television studio",
            &[49406, 320, 1125, 539, 320, 8608, 3155, 49407],
        ),
        (
            "she smiled, with pain",
            &[49406, 1043, 34362, 267, 593, 4495, 49407],
        ),
        (
            "it's 2023 &amp; I'm here",
            &[
                49406, 585, 568, 273, 271, 273, 274, 261, 328, 880, 763, 49407,
            ],
        ),
        (
            "café naïve 東京",
            &[49406, 15304, 1097, 35689, 563, 48338, 21078, 361, 49407],
        ),
        ("a <|endoftext|> b", &[49406, 320, 49407, 321, 49407]),
    ];
    for (text, want) in table {
        assert_eq!(tok.encode(text).expect("encode"), *want, "text {text:?}");
    }
    let mut hundred = vec![SOT_ID];
    hundred.extend(std::iter::repeat_n(3306, 75));
    hundred.push(EOT_ID);
    assert_eq!(tok.encode(&"hello ".repeat(100)).expect("encode"), hundred);
}

#[test]
fn truncation_keeps_77_ids_with_eot_last() {
    let tok = tokenizer();
    // "word " is one token, so n words give n + 2 ids before truncation.
    for n in [74, 75, 76, 200] {
        let ids = tok.encode(&"word ".repeat(n)).expect("encode");
        assert_eq!(ids.len(), (n + 2).min(CONTEXT_LENGTH), "n = {n}");
        assert_eq!(ids.first(), Some(&SOT_ID));
        assert_eq!(ids.last(), Some(&EOT_ID));
        assert!(ids[1..ids.len() - 1].iter().all(|&id| id != EOT_ID));
    }
    let long = tok.encode(&"x".repeat(100_000)).expect("encode");
    assert_eq!(long.len(), CONTEXT_LENGTH);
    assert_eq!(long[CONTEXT_LENGTH - 1], EOT_ID);
}

#[test]
fn whitespace_only_text_is_sot_eot() {
    let tok = tokenizer();
    for text in ["", "   ", "\t\n\u{3000}\u{a0}", "\u{feff}\u{0}"] {
        assert_eq!(
            tok.encode(text).expect("encode"),
            [SOT_ID, EOT_ID],
            "text {text:?}"
        );
    }
}

#[test]
fn shared_across_threads() {
    let tok = std::sync::Arc::new(tokenizer());
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let tok = std::sync::Arc::clone(&tok);
            std::thread::spawn(move || tok.encode(&format!("a photo of {i} cats")))
        })
        .collect();
    for handle in handles {
        let ids = handle.join().expect("thread").expect("encode");
        assert_eq!(ids.first(), Some(&SOT_ID));
    }
}
