//! The knowledge base: documents in, chunks indexed twice (MiniLM vectors and
//! tantivy BM25), fused search out.
//!
//! Everything here is blocking (embedding is ~1 ms per token of CPU): async
//! callers go through a dedicated thread ([`crate::pipeline::pool`]), never
//! the runtime. One [`KnowledgeBase`] is shared by every session; searches
//! take a read lock, a document change takes the write lock only for its
//! commit, after its chunks were embedded without any lock.

pub mod chunk;
pub mod doc;
pub mod embed;
pub mod folder;
pub mod index;
pub mod support;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

pub use doc::DocError;
pub use embed::{EmbedError, Embedder};
pub use index::{DocInfo, Hit, IndexError};

#[derive(Debug, thiserror::Error)]
pub enum KbError {
    #[error(transparent)]
    Doc(#[from] DocError),
    #[error(transparent)]
    Embed(#[from] EmbedError),
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error("{0:?} is not in the knowledge base")]
    NotFound(String),
}

impl KbError {
    /// True when the caller sent something wrong (HTTP 4xx), false when the
    /// server failed (5xx).
    pub fn is_client_error(&self) -> bool {
        matches!(self, KbError::Doc(_) | KbError::NotFound(_))
    }
}

/// What a [`KnowledgeBase::put`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    Added,
    Updated,
    /// Same content hash as indexed: nothing was re-embedded.
    Unchanged,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Stats {
    pub docs: usize,
    pub chunks: usize,
}

/// Embeds a document's chunks somewhere else: on an inference worker
/// (`serve --inference nats`), so a large upload does not take the media
/// server's CPU. Called on the indexing threads, never the runtime.
pub trait BulkEmbed: Send + Sync {
    /// One unit-length vector of [`embed::DIM`] per text, in order.
    fn embed_all(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, String>;
}

pub struct KnowledgeBase {
    embedder: Embedder,
    /// Where documents are embedded when set; questions are always embedded
    /// here (a few milliseconds, on the reply's critical path).
    bulk: OnceLock<Arc<dyn BulkEmbed>>,
    index: RwLock<index::Index>,
    max_doc_bytes: usize,
    /// Chunks indexed, readable without the lock (the async side asks it
    /// before every turn).
    chunks: AtomicUsize,
}

impl KnowledgeBase {
    /// Loads the embedding model from `models_dir` and opens (or creates) the
    /// index in `index_dir` (in memory when `None`).
    pub fn open(
        index_dir: Option<&Path>,
        models_dir: &Path,
        max_doc_bytes: usize,
    ) -> Result<Self, KbError> {
        let embedder = Embedder::load(models_dir)?;
        let index = index::Index::open(index_dir)?;
        let chunks = AtomicUsize::new(index.chunk_count());
        Ok(KnowledgeBase {
            embedder,
            bulk: OnceLock::new(),
            index: RwLock::new(index),
            max_doc_bytes,
            chunks,
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, index::Index> {
        // A panic while holding the lock leaves the index as committed on
        // disk and in memory (the memory side is updated only after a
        // commit), so the poisoned value is still consistent.
        self.index.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, index::Index> {
        self.index.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Indexes a document (or re-indexes it if its content changed).
    pub fn put(&self, name: &str, bytes: &[u8]) -> Result<(DocInfo, Change), KbError> {
        let kind = doc::check_name(name)?;
        let text = doc::check_content(name, bytes, self.max_doc_bytes)?;
        let hash = content_hash(bytes);
        let old = self.read().doc(name).cloned();
        if let Some(old) = old.as_ref().filter(|d| d.hash == hash) {
            return Ok((old.clone(), Change::Unchanged));
        }
        let chunks = chunk::chunk(text, kind == doc::Kind::Markdown);
        if chunks.is_empty() {
            return Err(DocError::Empty(name.to_string()).into());
        }
        let texts: Vec<String> = chunks.iter().map(|c| c.text()).collect();
        let vectors = self.embed_chunks(name, &texts)?;
        let new: Vec<index::NewChunk> = texts
            .into_iter()
            .zip(vectors)
            .map(|(text, vector)| index::NewChunk { text, vector })
            .collect();
        let info = DocInfo {
            name: name.to_string(),
            size: bytes.len() as u64,
            chunks: new.len(),
            hash,
            indexed_at_ms: now_ms(),
        };
        {
            let mut ix = self.write();
            ix.replace(info.clone(), new)?;
            self.chunks.store(ix.chunk_count(), Ordering::Relaxed);
        }
        Ok((
            info,
            if old.is_some() {
                Change::Updated
            } else {
                Change::Added
            },
        ))
    }

    /// Embed documents with `bulk` from now on (once; later calls are ignored).
    pub fn embed_documents_with(&self, bulk: Arc<dyn BulkEmbed>) {
        let _ = self.bulk.set(bulk);
    }

    /// The chunks' vectors: from the bulk embedder if there is one and it
    /// answers with usable vectors, else from this process's own model, so
    /// a document is never refused for want of a worker.
    fn embed_chunks(&self, name: &str, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        if let Some(bulk) = self.bulk.get() {
            match bulk.embed_all(texts) {
                Ok(v) if fits(&v, texts.len()) => return Ok(v),
                Ok(v) => tracing::warn!(
                    doc = name,
                    got = v.len(),
                    want = texts.len(),
                    "kb: the embed worker's vectors do not fit; embedding here"
                ),
                Err(e) => tracing::warn!(doc = name, error = %e,
                    "kb: no embed worker did it; embedding here"),
            }
        }
        texts.iter().map(|t| self.embedder.embed(t)).collect()
    }

    /// Removes a document and all its chunks.
    pub fn remove(&self, name: &str) -> Result<(), KbError> {
        let mut ix = self.write();
        let removed = ix.remove(name)?;
        self.chunks.store(ix.chunk_count(), Ordering::Relaxed);
        if removed {
            Ok(())
        } else {
            Err(KbError::NotFound(name.to_string()))
        }
    }

    /// What is indexed of `name`, if anything.
    pub fn doc(&self, name: &str) -> Option<DocInfo> {
        self.read().doc(name).cloned()
    }

    pub fn docs(&self) -> Vec<DocInfo> {
        self.read().docs().cloned().collect()
    }

    /// Whether nothing is indexed; never waits for a lock.
    pub fn is_empty(&self) -> bool {
        self.chunks.load(Ordering::Relaxed) == 0
    }

    pub fn stats(&self) -> Stats {
        let ix = self.read();
        Stats {
            docs: ix.docs().count(),
            chunks: ix.chunk_count(),
        }
    }

    /// The `k` chunks that best answer `question`.
    pub fn search(&self, question: &str, k: usize) -> Result<Vec<Hit>, KbError> {
        let v = self.embedder.embed(question)?;
        Ok(self.read().search(question, &v, k)?)
    }

    /// Search with a question already embedded (benchmarks time the two apart).
    pub fn search_vector(
        &self,
        question: &str,
        vector: &[f32],
        k: usize,
    ) -> Result<Vec<Hit>, KbError> {
        Ok(self.read().search(question, vector, k)?)
    }

    pub fn embedder(&self) -> &Embedder {
        &self.embedder
    }
}

/// `n` finite vectors of the model's width.
fn fits(vectors: &[Vec<f32>], n: usize) -> bool {
    vectors.len() == n
        && vectors
            .iter()
            .all(|v| v.len() == embed::DIM && v.iter().all(|x| x.is_finite()))
}

/// A document's content hash as the index keeps it: SHA-256, lower-case hex.
pub fn content_hash(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}
