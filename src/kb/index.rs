//! The on-disk index: tantivy holds every chunk (its text for BM25, and its
//! vector, document name and document facts as stored fields); memory holds
//! the vectors again for a brute-force cosine scan.
//!
//! Why brute force: 10,000 chunks × 384 floats is 15 MB and one scan is a
//! few million multiply-adds (~2 ms); an approximate index would add build
//! time, memory and recall loss for nothing at this scale.
//!
//! Crash safety comes from tantivy: a document's chunks are deleted and added
//! in one commit, and a commit becomes visible by an atomic rename of its
//! `meta.json`. A process killed while indexing leaves the last commit, which
//! [`Index::open`] reads back (the memory side is rebuilt from it).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use tantivy::collector::{DocSetCollector, TopDocs};
use tantivy::query::{AllQuery, BooleanQuery};
use tantivy::schema::{
    Field, IndexRecordOption, NumericOptions, STORED, STRING, Schema, TextFieldIndexing,
    TextOptions, Value,
};
use tantivy::{IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term};

use super::embed::DIM;

/// How far down each ranking is read before fusing.
const FUSE_DEPTH: usize = 20;
/// Reciprocal-rank-fusion constant (Cormack et al. 2009): score = Σ 1/(k + rank).
const RRF_K: f32 = 60.0;
/// tantivy's writer arena; its minimum per thread is 15 MB.
const WRITER_BYTES: usize = 20_000_000;

#[derive(Debug, thiserror::Error)]
#[error("knowledge-base index: {0}")]
pub struct IndexError(String);

impl From<tantivy::TantivyError> for IndexError {
    fn from(e: tantivy::TantivyError) -> Self {
        IndexError(e.to_string())
    }
}

/// What the index knows of one document.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DocInfo {
    pub name: String,
    pub size: u64,
    pub chunks: usize,
    /// sha256 of the content, hex.
    pub hash: String,
    /// When it was indexed, Unix milliseconds.
    pub indexed_at_ms: u64,
}

/// A chunk ready to be written: its text and its vector.
pub struct NewChunk {
    pub text: String,
    pub vector: Vec<f32>,
}

/// One search result.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Hit {
    pub doc: String,
    pub chunk: usize,
    /// Fused rank score (reciprocal rank fusion of cosine and BM25 ranks).
    pub score: f32,
    /// Cosine similarity of the chunk to the query.
    pub similarity: f32,
    pub text: String,
}

struct Entry {
    doc: Arc<str>,
    chunk: usize,
    text: String,
    vector: Vec<f32>,
}

#[derive(Clone, Copy)]
struct Fields {
    doc: Field,
    chunk: Field,
    text: Field,
    vector: Field,
    hash: Field,
    size: Field,
    indexed_at: Field,
}

pub struct Index {
    index: tantivy::Index,
    writer: IndexWriter,
    reader: IndexReader,
    f: Fields,
    entries: Vec<Entry>,
    docs: BTreeMap<String, DocInfo>,
}

fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let text_opts = TextOptions::default()
        .set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer("en_stem")
                .set_index_option(IndexRecordOption::WithFreqsAndPositions),
        )
        .set_stored();
    let stored_u64 = NumericOptions::default().set_stored();
    let f = Fields {
        doc: b.add_text_field("doc", STRING | STORED),
        chunk: b.add_u64_field("chunk", stored_u64.clone()),
        text: b.add_text_field("text", text_opts),
        vector: b.add_bytes_field("vector", STORED),
        hash: b.add_text_field("hash", STORED),
        size: b.add_u64_field("size", stored_u64.clone()),
        indexed_at: b.add_u64_field("indexed_at", stored_u64),
    };
    (b.build(), f)
}

impl Index {
    /// Opens the index in `dir`, creating it if empty. An index written with
    /// another schema (an older voxloop) is an error naming the folder: it is
    /// a cache, so deleting the folder re-indexes.
    /// `None` keeps the index in memory.
    pub fn open(dir: Option<&Path>) -> Result<Index, IndexError> {
        let (schema, f) = schema();
        let index = match dir {
            None => tantivy::Index::create_in_ram(schema),
            Some(dir) => {
                std::fs::create_dir_all(dir)
                    .map_err(|e| IndexError(format!("cannot create {}: {e}", dir.display())))?;
                let mmap = tantivy::directory::MmapDirectory::open(dir)
                    .map_err(|e| IndexError(format!("{}: {e}", dir.display())))?;
                tantivy::Index::open_or_create(mmap, schema).map_err(|e| {
                    IndexError(format!(
                        "{}: {e} (the folder is a cache: delete it to re-index)",
                        dir.display()
                    ))
                })?
            }
        };
        let writer = index
            .writer_with_num_threads(1, WRITER_BYTES)
            .map_err(|e| match e {
                tantivy::TantivyError::LockFailure(..) => IndexError(format!(
                    "{} is in use by another process: give each server its own kb.index_dir",
                    dir.map(|d| d.display().to_string()).unwrap_or_default()
                )),
                e => e.into(),
            })?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        let mut ix = Index {
            index,
            writer,
            reader,
            f,
            entries: Vec::new(),
            docs: BTreeMap::new(),
        };
        ix.load()?;
        Ok(ix)
    }

    /// Rebuilds the memory side from the last commit.
    fn load(&mut self) -> Result<(), IndexError> {
        let searcher = self.reader.searcher();
        let addrs = searcher.search(&AllQuery, &DocSetCollector)?;
        let mut entries = Vec::with_capacity(addrs.len());
        let mut docs: BTreeMap<String, DocInfo> = BTreeMap::new();
        for addr in addrs {
            let d: TantivyDocument = searcher.doc(addr)?;
            let s = |f: Field| {
                d.get_first(f)
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_string()
            };
            let n = |f: Field| d.get_first(f).and_then(|v| v.as_u64()).unwrap_or_default();
            let vector = d
                .get_first(self.f.vector)
                .and_then(|v| v.as_bytes())
                .map(from_bytes)
                .unwrap_or_default();
            if vector.len() != DIM {
                continue; // not one of ours; never written by this code
            }
            let name = s(self.f.doc);
            let info = docs.entry(name.clone()).or_insert_with(|| DocInfo {
                name: name.clone(),
                size: n(self.f.size),
                chunks: 0,
                hash: s(self.f.hash),
                indexed_at_ms: n(self.f.indexed_at),
            });
            info.chunks += 1;
            entries.push(Entry {
                doc: name.into(),
                chunk: n(self.f.chunk) as usize,
                text: s(self.f.text),
                vector,
            });
        }
        self.entries = entries;
        self.sort_entries();
        self.docs = docs;
        Ok(())
    }

    pub fn doc(&self, name: &str) -> Option<&DocInfo> {
        self.docs.get(name)
    }

    pub fn docs(&self) -> impl Iterator<Item = &DocInfo> {
        self.docs.values()
    }

    pub fn chunk_count(&self) -> usize {
        self.entries.len()
    }

    /// Replaces every chunk of `info.name` by `chunks`, in one commit.
    pub fn replace(&mut self, info: DocInfo, chunks: Vec<NewChunk>) -> Result<(), IndexError> {
        let f = self.f;
        self.writer
            .delete_term(Term::from_field_text(f.doc, &info.name));
        for (i, c) in chunks.iter().enumerate() {
            let mut d = TantivyDocument::default();
            d.add_text(f.doc, &info.name);
            d.add_u64(f.chunk, i as u64);
            d.add_text(f.text, &c.text);
            d.add_bytes(f.vector, &to_bytes(&c.vector));
            d.add_text(f.hash, &info.hash);
            d.add_u64(f.size, info.size);
            d.add_u64(f.indexed_at, info.indexed_at_ms);
            self.writer.add_document(d)?;
        }
        self.commit()?;
        let name: Arc<str> = info.name.as_str().into();
        self.entries.retain(|e| *e.doc != *info.name);
        for (i, c) in chunks.into_iter().enumerate() {
            self.entries.push(Entry {
                doc: name.clone(),
                chunk: i,
                text: c.text,
                vector: c.vector,
            });
        }
        self.sort_entries();
        self.docs.insert(
            info.name.clone(),
            DocInfo {
                chunks: self.entries.iter().filter(|e| e.doc == name).count(),
                ..info
            },
        );
        Ok(())
    }

    /// Removes every chunk of `name`; false if it was not indexed.
    pub fn remove(&mut self, name: &str) -> Result<bool, IndexError> {
        if !self.docs.contains_key(name) {
            return Ok(false);
        }
        self.writer
            .delete_term(Term::from_field_text(self.f.doc, name));
        self.commit()?;
        self.entries.retain(|e| &*e.doc != name);
        self.docs.remove(name);
        Ok(true)
    }

    /// Entries stay sorted by (document, chunk): BM25 hits find theirs by
    /// binary search.
    fn sort_entries(&mut self) {
        self.entries
            .sort_by(|a, b| (&*a.doc, a.chunk).cmp(&(&*b.doc, b.chunk)));
    }

    fn commit(&mut self) -> Result<(), IndexError> {
        if let Err(e) = self.writer.commit() {
            // Drop what the failed commit staged, so the next one starts clean.
            let _ = self.writer.rollback();
            return Err(e.into());
        }
        self.reader.reload()?;
        Ok(())
    }

    /// The `k` best chunks for a question, fusing the cosine ranking of
    /// `query_vector` with the BM25 ranking of `query_text`.
    pub fn search(
        &self,
        query_text: &str,
        query_vector: &[f32],
        k: usize,
    ) -> Result<Vec<Hit>, IndexError> {
        if self.entries.is_empty() || k == 0 {
            return Ok(Vec::new());
        }
        let sims: Vec<f32> = self
            .entries
            .iter()
            .map(|e| super::embed::dot(&e.vector, query_vector))
            .collect();
        let mut by_sim: Vec<usize> = (0..self.entries.len()).collect();
        let depth = FUSE_DEPTH.min(by_sim.len());
        by_sim.select_nth_unstable_by(depth - 1, |&a, &b| sims[b].total_cmp(&sims[a]));
        by_sim.truncate(depth);
        by_sim.sort_by(|&a, &b| sims[b].total_cmp(&sims[a]));

        let mut fused: HashMap<usize, f32> = HashMap::new();
        for (rank, &i) in by_sim.iter().enumerate() {
            *fused.entry(i).or_default() += 1.0 / (RRF_K + rank as f32 + 1.0);
        }
        for (rank, i) in self.bm25(query_text)?.into_iter().enumerate() {
            *fused.entry(i).or_default() += 1.0 / (RRF_K + rank as f32 + 1.0);
        }
        let mut hits: Vec<(usize, f32)> = fused.into_iter().collect();
        hits.sort_by(|a, b| b.1.total_cmp(&a.1).then(sims[b.0].total_cmp(&sims[a.0])));
        hits.truncate(k);
        Ok(hits
            .into_iter()
            .map(|(i, score)| {
                let e = &self.entries[i];
                Hit {
                    doc: e.doc.to_string(),
                    chunk: e.chunk,
                    score,
                    similarity: sims[i],
                    text: e.text.clone(),
                }
            })
            .collect())
    }

    /// Entry positions of the BM25 top chunks. The question is split by the
    /// field's own analyzer into terms OR-ed together: user text is never
    /// parsed as query syntax.
    fn bm25(&self, query_text: &str) -> Result<Vec<usize>, IndexError> {
        let mut analyzer = self.index.tokenizer_for_field(self.f.text)?;
        let mut terms = Vec::new();
        let mut stream = analyzer.token_stream(query_text);
        while let Some(t) = stream.next() {
            terms.push(Term::from_field_text(self.f.text, &t.text));
        }
        if terms.is_empty() {
            return Ok(Vec::new());
        }
        let query = BooleanQuery::new_multiterms_query(terms);
        let searcher = self.reader.searcher();
        let top = searcher.search(&query, &TopDocs::with_limit(FUSE_DEPTH).order_by_score())?;
        let mut out = Vec::with_capacity(top.len());
        for (_score, addr) in top {
            let d: TantivyDocument = searcher.doc(addr)?;
            let doc = d
                .get_first(self.f.doc)
                .and_then(|v| v.as_str())
                .unwrap_or_default();
            let chunk = d
                .get_first(self.f.chunk)
                .and_then(|v| v.as_u64())
                .unwrap_or_default() as usize;
            if let Ok(i) = self
                .entries
                .binary_search_by(|e| (&*e.doc, e.chunk).cmp(&(doc, chunk)))
            {
                out.push(i);
            }
        }
        Ok(out)
    }
}

fn to_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|f| f.to_le_bytes()).collect()
}

fn from_bytes(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}
