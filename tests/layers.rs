//! The layering `docs/architecture.md` describes: a module never imports one further out.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

/// From the inside out.
const LAYERS: [&str; 14] = [
    "error",
    "defaults",
    "telemetry",
    "model",
    "preprocess",
    "engine",
    "batch",
    "protocol",
    "fuzzing",
    "docio",
    "transport",
    "client",
    "bench",
    "cli",
];

fn rank(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| *l == module)
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The modules named after `crate::` in `code`, including inside `crate::{a, b::c}`.
fn crate_imports(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = &group[..group.find('}').unwrap_or(group.len())];
            for item in group.split(',') {
                let name: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                out.push(name);
            }
        } else {
            out.push(
                rest.chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect(),
            );
        }
    }
    out
}

#[test]
fn no_module_imports_an_outer_layer() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut wrong = Vec::new();
    let mut seen = 0;
    for path in files {
        let rel = path.strip_prefix(&src).unwrap();
        let top = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let Some(own) = rank(top.trim_end_matches(".rs")) else {
            continue; // lib.rs, main.rs
        };
        let code = std::fs::read_to_string(&path).unwrap();
        // Unit tests may reach outwards to drive the code under test.
        let code = code.split("#[cfg(test)]").next().unwrap_or("");
        for import in crate_imports(code) {
            seen += 1;
            if rank(&import).is_some_and(|r| r > own) {
                wrong.push(format!("{} imports crate::{import}", rel.display()));
            }
        }
    }
    assert!(seen > 50, "only {seen} imports found: is the scan broken?");
    assert!(wrong.is_empty(), "imports from an outer layer: {wrong:#?}");
}

#[test]
fn the_scan_sees_grouped_imports() {
    assert_eq!(
        crate_imports("use crate::{engine::X, cli};\nlet a = crate::client::f();"),
        ["engine", "cli", "client"]
    );
}
