//! `clip-worker models`: list, download, verify and locate cached models.

use super::args::ModelStoreArgs;
use super::CliError;
use crate::model::cache::CacheState;
use crate::model::store::FileCheck;
use crate::model::{ModelEntry, ModelStore, RegistryError, TokenizerKind};
use clap::{Args, Subcommand};
use serde_json::json;
use std::io::Write;

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ModelsArgs {
    #[command(subcommand)]
    pub command: Option<ModelsCommand>,
    /// `clip-worker models` alone lists the models.
    #[command(flatten)]
    pub list: ListArgs,
}

#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// Every model name with its dimension, image size, tokenizer, and whether and where it is cached.
    List(ListArgs),
    /// Fetch models into the cache (verified with md5; safe to run from several processes).
    Download(DownloadArgs),
    /// Recompute the md5 of cached files; exits non-zero if one does not match.
    Verify(VerifyArgs),
    /// Print a model's cache folder.
    Path(PathArgs),
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// One JSON array instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub store: ModelStoreArgs,
}

#[derive(Debug, Args)]
pub struct DownloadArgs {
    /// Model names.
    #[arg(required_unless_present = "all")]
    pub names: Vec<String>,
    /// Every known model (tens of gigabytes).
    #[arg(long, conflicts_with = "names")]
    pub all: bool,
    #[command(flatten)]
    pub store: ModelStoreArgs,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Model names [default: every model with a cache folder].
    pub names: Vec<String>,
    #[command(flatten)]
    pub store: ModelStoreArgs,
}

#[derive(Debug, Args)]
pub struct PathArgs {
    /// Model name.
    pub name: String,
    #[command(flatten)]
    pub store: ModelStoreArgs,
}

pub(crate) fn run(args: ModelsArgs) -> Result<(), CliError> {
    match args.command {
        None => list(args.list),
        Some(ModelsCommand::List(a)) => list(a),
        Some(ModelsCommand::Download(a)) => download(a),
        Some(ModelsCommand::Verify(a)) => verify(a),
        Some(ModelsCommand::Path(a)) => {
            let store = open(&a.store)?;
            let entry = resolve(&store, &a.name)?;
            println!("{}", store.cache.folder(entry).display());
            Ok(())
        }
    }
}

fn open(args: &ModelStoreArgs) -> Result<ModelStore, CliError> {
    args.open().map_err(|e| CliError::Models(e.into()))
}

fn resolve<'a>(store: &'a ModelStore, name: &str) -> Result<&'a ModelEntry, CliError> {
    store
        .registry
        .resolve(name)
        .map_err(|e| CliError::Models(RegistryError::from(e).into()))
}

fn tokenizer_name(kind: TokenizerKind) -> &'static str {
    match kind {
        TokenizerKind::ClipBpe => "clip-bpe",
        TokenizerKind::HuggingFace => "hugging-face",
    }
}

fn list(args: ListArgs) -> Result<(), CliError> {
    let store = open(&args.store)?;
    let mut out = std::io::stdout().lock();
    let rows = store.registry.entries().iter().map(|e| {
        let state = store.cache.state(e);
        (e, state, store.cache.folder(e))
    });
    if args.json {
        let items: Vec<_> = rows
            .map(|(e, state, folder)| {
                json!({
                    "name": e.name,
                    "dim": e.spec.documented_dim,
                    "image_size": e.spec.image_size,
                    "tokenizer": tokenizer_name(e.spec.tokenizer),
                    "cached": state == CacheState::Complete,
                    "state": state.as_str(),
                    "path": folder,
                })
            })
            .collect();
        writeln!(out, "{}", serde_json::Value::Array(items))?;
        return Ok(());
    }
    writeln!(out, "NAME\tDIM\tIMAGE\tTOKENIZER\tCACHED\tPATH")?;
    for (e, state, folder) in rows {
        writeln!(
            out,
            "{}\t{}\t{}\t{}\t{}\t{}",
            e.name,
            e.spec.documented_dim,
            e.spec.image_size,
            tokenizer_name(e.spec.tokenizer),
            state.as_str(),
            folder.display()
        )?;
    }
    Ok(())
}

fn download(args: DownloadArgs) -> Result<(), CliError> {
    let store = open(&args.store)?;
    let entries: Vec<&ModelEntry> = if args.all {
        store.registry.entries().iter().collect()
    } else {
        args.names
            .iter()
            .map(|n| resolve(&store, n))
            .collect::<Result<_, _>>()?
    };
    for entry in entries {
        let folder = store.ensure(entry, false).map_err(CliError::Models)?;
        println!("{}\t{}", entry.name, folder.display());
    }
    Ok(())
}

fn verify(args: VerifyArgs) -> Result<(), CliError> {
    let store = open(&args.store)?;
    let entries: Vec<&ModelEntry> = if args.names.is_empty() {
        store
            .registry
            .entries()
            .iter()
            .filter(|e| store.cache.state(e) != CacheState::Missing)
            .collect()
    } else {
        args.names
            .iter()
            .map(|n| resolve(&store, n))
            .collect::<Result<_, _>>()?
    };
    let mut failed = Vec::new();
    let mut out = std::io::stdout().lock();
    for entry in entries {
        let report = store.verify(entry).map_err(CliError::Models)?;
        for (file, check) in report {
            let status = match &check {
                FileCheck::Ok => "ok".to_string(),
                FileCheck::Unchecked => "present (no published md5)".to_string(),
                FileCheck::Missing => "missing".to_string(),
                FileCheck::Mismatch { expected, actual } => {
                    format!("md5 mismatch: expected {expected}, got {actual}")
                }
            };
            writeln!(out, "{}\t{file}\t{status}", entry.name)?;
            if !matches!(check, FileCheck::Ok | FileCheck::Unchecked) {
                failed.push(format!("{} {file}", entry.name));
            }
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(CliError::Usage(format!(
            "verification failed for {}; `clip-worker models download` fetches them again",
            failed.join(", ")
        )))
    }
}
