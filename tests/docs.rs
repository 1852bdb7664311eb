//! The operations guide documents every setting the commands accept, with the defaults the
//! commands really use.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::process::Command;

const COMMANDS: [&[&str]; 10] = [
    &["encode"],
    &["rank"],
    &["serve"],
    &["submit", "encode"],
    &["submit", "rank"],
    &["models", "list"],
    &["models", "download"],
    &["models", "verify"],
    &["models", "path"],
    &["bench"],
];

fn help(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_clip-worker"))
        .args(args)
        .arg("--help")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn operations_guide() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/operations.md")).unwrap()
}

#[test]
fn every_environment_variable_is_documented() {
    let doc = operations_guide();
    let mut missing = Vec::new();
    for args in COMMANDS {
        let help = help(args);
        for word in help.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if word.starts_with("CLIP_WORKER_") && !doc.contains(&format!("`{word}`")) {
                missing.push(format!("{word} ({})", args.join(" ")));
            }
        }
    }
    assert!(missing.is_empty(), "not in docs/operations.md: {missing:?}");
}

/// `--flag` → the default column of its row in the table (without backticks).
fn documented_defaults(doc: &str) -> HashMap<String, String> {
    doc.lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let flag = cells.get(1)?.strip_prefix("`--")?.strip_suffix('`')?;
            let default = cells.get(3)?.trim_matches('`');
            Some((format!("--{flag}"), default.to_string()))
        })
        .collect()
}

/// `--flag` → `[default: X]` from a command's `--help`.
fn help_defaults(help: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut flag = None;
    for line in help.lines() {
        let trimmed = line.trim_start();
        // Flags are indented by at most 6 columns; their descriptions by 10.
        if trimmed.starts_with('-') && line.len() - trimmed.len() < 8 {
            flag = trimmed
                .split([' ', ',', '<', '='])
                .find(|w| w.starts_with("--"))
                .map(str::to_string);
        }
        if let (Some(f), Some(start)) = (&flag, line.find("[default: ")) {
            let rest = &line[start + "[default: ".len()..];
            if let Some(end) = rest.find(']') {
                out.push((f.clone(), rest[..end].to_string()));
            }
        }
    }
    out
}

#[test]
fn documented_defaults_are_the_real_ones() {
    let documented = documented_defaults(&operations_guide());
    let mut wrong = Vec::new();
    let mut checked = 0;
    for args in COMMANDS {
        for (flag, default) in help_defaults(&help(args)) {
            checked += 1;
            let doc = documented.get(&flag).map(String::as_str);
            // Switches that are off by default are documented with an empty default.
            let ok = doc == Some(default.as_str()) || (default == "false" && doc == Some(""));
            if !ok {
                wrong.push(format!(
                    "{flag} ({}): --help says `{default}`, docs say {doc:?}",
                    args.join(" ")
                ));
            }
        }
    }
    assert!(checked > 30, "only {checked} defaults found in --help");
    assert!(wrong.is_empty(), "docs/operations.md: {wrong:#?}");
}

/// The Grafana dashboard only queries series the worker exports (all listed in the guide).
#[test]
fn dashboard_queries_documented_series() {
    let doc = operations_guide();
    let dashboard = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/grafana/clip-worker.json"
    ))
    .unwrap();
    let mut unknown = Vec::new();
    for (i, _) in dashboard.match_indices("clip_worker_") {
        let name: String = dashboard[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let series = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(&name);
        if !doc.contains(&format!("`{series}`")) {
            unknown.push(name);
        }
    }
    assert!(
        unknown.is_empty(),
        "not exported by the worker: {unknown:?}"
    );
}
