//! The operations guide documents every setting the commands accept.

use std::process::Command;

#[test]
fn every_environment_variable_is_documented() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/operations.md"))
        .unwrap();
    let mut missing = Vec::new();
    for args in [
        &["encode"][..],
        &["rank"],
        &["serve"],
        &["submit", "encode"],
        &["submit", "rank"],
        &["models", "list"],
        &["models", "download"],
        &["models", "verify"],
        &["models", "path"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_clip-worker"))
            .args(args)
            .arg("--help")
            .output()
            .unwrap();
        let help = String::from_utf8_lossy(&out.stdout);
        for word in help.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if word.starts_with("CLIP_WORKER_") && !doc.contains(&format!("`{word}`")) {
                missing.push(format!("{word} ({})", args.join(" ")));
            }
        }
    }
    assert!(missing.is_empty(), "not in docs/operations.md: {missing:?}");
}
