//! `[kb]`: the knowledge base (documents the assistant answers from).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KbConfig {
    /// Folder of Markdown and text documents to index and watch
    /// (`VOXLOOP_KB_DIR`, `--kb-dir`). Unset: no knowledge base unless
    /// documents arrive over HTTP or NATS.
    pub dir: Option<PathBuf>,
    /// Where the index lives (`VOXLOOP_KB_INDEX_DIR`, `--kb-index-dir`).
    /// It is a cache of the documents: deleting it re-indexes them. Unset:
    /// beside the other state of this folder (see [`KbConfig::index_path`]),
    /// or in memory when there is no folder.
    pub index_dir: Option<PathBuf>,
    /// Largest document accepted, in bytes (`VOXLOOP_KB_MAX_DOC_BYTES`).
    pub max_doc_bytes: usize,
    /// Chunks given to the LLM with each question (`VOXLOOP_KB_TOP_K`).
    pub top_k: usize,
    /// A chunk whose cosine similarity to the question is below this is not
    /// given to the LLM; a question with no chunk above it goes without
    /// notes, so it gets no false context and no longer prompt. Measured
    /// with MiniLM: the bakery questions' right chunks score 0.36 and up
    /// (garbled transcripts included); see `pipeline::retrieve` for why not
    /// higher.
    pub min_similarity: f32,
    /// Check each sentence of a reply given notes before it is spoken: one
    /// that states a number or name the notes (question, history) lack
    /// ends the reply, or makes it "Sorry, I don't know that."
    /// (`VOXLOOP_KB_CHECK_REPLIES`; see `kb::support`).
    pub check_replies: bool,
}

impl Default for KbConfig {
    fn default() -> Self {
        Self {
            dir: None,
            index_dir: None,
            max_doc_bytes: 1 << 20,
            top_k: 3,
            min_similarity: 0.25,
            check_replies: true,
        }
    }
}

impl KbConfig {
    /// Where the index is kept: `index_dir` if set; else, for a folder,
    /// `$XDG_STATE_HOME/voxloop/kb-<hash of the folder's path>` (default
    /// `~/.local/state`), so each folder has its own index and a restart
    /// re-embeds only what changed; else nowhere (in memory).
    pub fn index_path(&self) -> Option<PathBuf> {
        if let Some(d) = &self.index_dir {
            return Some(d.clone());
        }
        let dir = self.dir.as_ref()?;
        let canonical = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.clone());
        let state = std::env::var_os("XDG_STATE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
            .unwrap_or_else(std::env::temp_dir);
        // FNV-1a: stable across runs and builds (std's hasher is not).
        let hash = canonical
            .to_string_lossy()
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
            });
        Some(state.join("voxloop").join(format!("kb-{hash:016x}")))
    }
}
