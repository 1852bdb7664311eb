//! Robustness on stable, in seconds: every fuzz target's body (`clip_worker::fuzzing`, the same
//! code `fuzz/` runs under libFuzzer) over its committed seed corpus `fuzz/seeds/TARGET` and a
//! few hundred deterministic mutations of it; and property tests of the wire protocol (any
//! valid request or response survives encode → decode).
//!
//! A panic anywhere in a target fails the test, even one a decoder wrapper catches and turns
//! into an error: the worker survives those, but they are bugs all the same.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use clip_worker::fuzzing::{Target, TARGETS};
use clip_worker::preprocess::input::Modality;
use clip_worker::protocol::{
    self, EmbeddingDtype, EmbeddingPayload, ObjectRef, Params, Request, Response, ResultDoc,
    Scores, WireDoc, WireError, WireTensor,
};
use proptest::prelude::*;
use std::cell::RefCell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

/// Mutated inputs per target, on top of the seeds.
const MUTATIONS: usize = 300;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = fuzz_dir().join("seeds").join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect()
}

/// xorshift64*: the mutations must be the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One to four libFuzzer-style edits of `seed`, sometimes spliced with `other`.
fn mutate(rng: &mut Rng, seed: &[u8], other: &[u8]) -> Vec<u8> {
    const INTERESTING: [u8; 7] = [0, 1, 0x7F, 0x80, 0xFE, 0xFF, 0x10];
    let mut data = seed.to_vec();
    for _ in 0..=rng.below(4) {
        let len = data.len();
        match rng.below(7) {
            0 if len > 0 => {
                let i = rng.below(len);
                data[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                data[i] = INTERESTING[rng.below(INTERESTING.len())];
            }
            2 => data.truncate(rng.below(len + 1)),
            3 if len > 0 => {
                let (a, b) = (rng.below(len), rng.below(len));
                let chunk = data[a.min(b)..a.max(b)].to_vec();
                let at = rng.below(len + 1);
                data.splice(at..at, chunk);
            }
            4 if len > 0 => {
                let (a, b) = (rng.below(len), rng.below(len));
                data.drain(a.min(b)..a.max(b));
            }
            // A large 16-bit big-endian value, where image headers keep their sizes.
            5 if len > 1 => {
                let i = rng.below(len - 1);
                let v: u16 = [0xFFFF, 0x8000, 0x4000, 0x0100, 0][rng.below(5)];
                data[i..i + 2].copy_from_slice(&v.to_be_bytes());
            }
            6 if !other.is_empty() => {
                let cut = rng.below(len + 1);
                data.truncate(cut);
                data.extend_from_slice(&other[rng.below(other.len())..]);
            }
            _ => data.push(rng.next() as u8),
        }
    }
    data
}

thread_local! {
    /// Panics on this thread since the last [`take_panics`], caught or not.
    static PANICS: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

fn record_panics() {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let _ = PANICS.try_with(|p| p.borrow_mut().push(info.to_string()));
            default(info);
        }));
    });
}

fn take_panics() -> Vec<String> {
    PANICS.with(|p| std::mem::take(&mut *p.borrow_mut()))
}

/// Runs `body` over the seeds of `target` and [`MUTATIONS`] mutations; fails listing every
/// input that panicked.
fn smoke(name: &str) {
    record_panics();
    let body: Target = TARGETS.iter().find(|(n, _)| *n == name).unwrap().1;
    let seeds = seeds(name);
    assert!(!seeds.is_empty(), "no seeds for {name}");
    let mut inputs: Vec<(String, Vec<u8>)> = seeds.clone();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ name.len() as u64);
    for k in 0..MUTATIONS {
        let (seed_name, seed) = &seeds[rng.below(seeds.len())];
        let other = &seeds[rng.below(seeds.len())].1;
        inputs.push((
            format!("{seed_name} mutation {k}"),
            mutate(&mut rng, seed, other),
        ));
    }
    let mut failures = Vec::new();
    take_panics();
    for (label, input) in &inputs {
        let outcome = catch_unwind(AssertUnwindSafe(|| body(input)));
        let panics = take_panics();
        if outcome.is_err() || !panics.is_empty() {
            failures.push(format!("{label} ({} bytes): {panics:?}", input.len()));
        }
    }
    assert!(
        failures.is_empty(),
        "{name}: {} of {} inputs panicked:\n{}",
        failures.len(),
        inputs.len(),
        failures.join("\n")
    );
}

#[test]
fn fuzz_smoke_request() {
    smoke("request");
}

#[test]
fn fuzz_smoke_jpeg() {
    smoke("jpeg");
}

#[test]
fn fuzz_smoke_avif() {
    smoke("avif");
}

#[test]
fn fuzz_smoke_image_pipeline() {
    smoke("image_pipeline");
}

/// Every target has its libFuzzer entry point and seeds, and nothing in fuzz/ is left unrun.
#[test]
fn fuzz_targets_match_the_fuzz_crate() {
    let mut names: Vec<&str> = TARGETS.iter().map(|(n, _)| *n).collect();
    names.sort();
    let listed = |dir: &str, strip: &str| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(fuzz_dir().join(dir))
            .unwrap()
            .map(|e| {
                let name = e.unwrap().file_name().to_string_lossy().into_owned();
                name.trim_end_matches(strip).to_owned()
            })
            .collect();
        v.sort();
        v
    };
    assert_eq!(listed("fuzz_targets", ".rs"), names);
    assert_eq!(listed("seeds", ""), names);
    let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).unwrap();
    for name in &names {
        assert!(
            manifest.contains(&format!("path = \"fuzz_targets/{name}.rs\"")),
            "fuzz/Cargo.toml has no [[bin]] for {name}"
        );
    }
}

/// The mutator is the smoke's only source of variety: make sure it varies.
#[test]
fn mutations_differ_from_their_seed() {
    let mut rng = Rng(7);
    let seed = b"\xFF\xD8\xFF\xE0 a seed of some length".to_vec();
    let changed = (0..100)
        .filter(|_| mutate(&mut rng, &seed, b"other") != seed)
        .count();
    assert!(changed > 90, "{changed} of 100 mutations changed the seed");
}

// ---- protocol round trip -------------------------------------------------------------------

fn text() -> impl Strategy<Value = String> {
    // Any Unicode, short: the encoder must not care what the characters are.
    prop::collection::vec(any::<char>(), 0..12).prop_map(|c| c.into_iter().collect())
}

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..24)
}

prop_compose! {
    fn wire_tensor()(dtype in prop_oneof![Just("uint8".to_owned()), text()],
                     shape in prop::collection::vec(any::<usize>(), 0..4),
                     data in bytes()) -> WireTensor {
        WireTensor { dtype, shape, data }
    }
}

prop_compose! {
    fn leaf_doc()(id in prop::option::of(text()),
                  text in prop::option::of(text()),
                  blob in prop::option::of(bytes()),
                  uri in prop::option::of(text()),
                  tensor in prop::option::of(wire_tensor()),
                  object in prop::option::of((text(), text())),
                  mime_type in prop::option::of(text())) -> WireDoc {
        WireDoc {
            id, text, blob, uri, tensor, mime_type,
            object: object.map(|(bucket, name)| ObjectRef { bucket, name }),
            matches: Vec::new(),
        }
    }
}

/// A request document: matches (of depth one, as the protocol reads them).
fn wire_doc() -> impl Strategy<Value = WireDoc> {
    (leaf_doc(), prop::collection::vec(leaf_doc(), 0..3)).prop_map(|(mut d, matches)| {
        d.matches = matches;
        d
    })
}

fn dtype() -> impl Strategy<Value = EmbeddingDtype> {
    prop_oneof![Just(EmbeddingDtype::F32), Just(EmbeddingDtype::F16)]
}

prop_compose! {
    fn params()(normalize in prop::option::of(any::<bool>()),
                embedding_dtype in prop::option::of(dtype()),
                model in prop::option::of(text())) -> Params {
        Params { normalize, embedding_dtype, model }
    }
}

prop_compose! {
    fn request()(id in prop::option::of(text()),
                 docs in prop::collection::vec(wire_doc(), 0..4),
                 params in prop::option::of(params())) -> Request {
        Request { id, docs, params }
    }
}

fn wire_error() -> impl Strategy<Value = WireError> {
    (
        prop::sample::select(clip_worker::error::ALL_CODES.to_vec()),
        text(),
    )
        .prop_map(|(code, message)| WireError { code, message })
}

/// Any f64 but NaN (which is never equal to itself).
fn score() -> impl Strategy<Value = f64> {
    any::<f64>().prop_filter("NaN", |v| !v.is_nan())
}

prop_compose! {
    fn leaf_result()(id in text(),
                     modality in prop::option::of(prop_oneof![Just(Modality::Text), Just(Modality::Image)]),
                     embedding in prop::option::of((dtype(), prop::collection::vec(any::<usize>(), 0..2), bytes())),
                     scores in prop::option::of((score(), score())),
                     error in prop::option::of(wire_error())) -> ResultDoc {
        ResultDoc {
            id,
            modality,
            embedding: embedding.map(|(dtype, shape, data)| EmbeddingPayload { dtype, shape, data }),
            scores: scores.map(|(clip_score, clip_score_cosine)| Scores { clip_score, clip_score_cosine }),
            matches: None,
            error,
        }
    }
}

fn result_doc() -> impl Strategy<Value = ResultDoc> {
    (
        leaf_result(),
        prop::option::of(prop::collection::vec(leaf_result(), 0..3)),
    )
        .prop_map(|(mut d, matches)| {
            d.matches = matches;
            d
        })
}

prop_compose! {
    fn response()(id in prop::option::of(text()),
                  model in text(),
                  docs in prop::collection::vec(result_doc(), 0..4),
                  error in prop::option::of(wire_error())) -> Response {
        Response { id, model, docs, error }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn any_request_survives_encode_and_decode(req in request()) {
        let got = protocol::decode_request(&protocol::encode(&req).unwrap()).unwrap();
        prop_assert_eq!(&got.id, &req.id);
        prop_assert_eq!(&got.params, &req.params.clone().unwrap_or_default());
        prop_assert_eq!(got.docs.len(), req.docs.len());
        for (incoming, sent) in got.docs.into_iter().zip(&req.docs) {
            prop_assert_eq!(&incoming.id, &sent.id);
            let matches = incoming.matches.unwrap();
            prop_assert_eq!(matches.len(), sent.matches.len());
            for (m, sent_m) in matches.into_iter().zip(&sent.matches) {
                prop_assert_eq!(&m.id, &sent_m.id);
                prop_assert_eq!(&m.doc.unwrap(), sent_m);
            }
            let doc = incoming.doc.unwrap();
            prop_assert!(doc.matches.is_empty());
            let without_matches = WireDoc { matches: Vec::new(), ..sent.clone() };
            prop_assert_eq!(doc, without_matches);
        }
    }

    #[test]
    fn any_response_survives_encode_and_decode(resp in response()) {
        let got = protocol::decode_response(&protocol::encode(&resp).unwrap()).unwrap();
        prop_assert_eq!(got, resp);
    }
}
