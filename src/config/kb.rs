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
    /// It is a cache of the documents: deleting it re-indexes them.
    pub index_dir: PathBuf,
    /// Largest document accepted, in bytes (`VOXLOOP_KB_MAX_DOC_BYTES`).
    pub max_doc_bytes: usize,
    /// Chunks given to the LLM with each question (`VOXLOOP_KB_TOP_K`).
    pub top_k: usize,
    /// A chunk whose cosine similarity to the question is below this is not
    /// given to the LLM, so an unrelated question gets no false context.
    pub min_similarity: f32,
}

impl Default for KbConfig {
    fn default() -> Self {
        Self {
            dir: None,
            index_dir: PathBuf::from(".voxloop/kb-index"),
            max_doc_bytes: 1 << 20,
            top_k: 3,
            min_similarity: 0.25,
        }
    }
}
