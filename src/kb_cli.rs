//! `voxloop kb …`: index a folder, search it, show what is indexed. A module
//! of the binary (not the library): it prints, and its errors are `anyhow`.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use voxloop::config::Config;
use voxloop::kb::{KnowledgeBase, folder};

#[derive(Subcommand)]
pub enum KbAction {
    /// Index a folder: changed documents are re-indexed, removed ones dropped.
    Index(KbArgs),
    /// Search the index: prints score, document#chunk and the chunk's text.
    Search {
        /// The question.
        question: String,
        /// How many chunks to print.
        #[arg(short, default_value_t = 3)]
        k: usize,
        #[command(flatten)]
        kb: KbArgs,
    },
    /// Documents and chunks in the index.
    Stats(KbArgs),
}

#[derive(Args)]
pub struct KbArgs {
    /// Folder of documents (VOXLOOP_KB_DIR); index and search sync it first.
    #[arg(long)]
    pub kb_dir: Option<PathBuf>,
    /// Where the index lives (VOXLOOP_KB_INDEX_DIR).
    #[arg(long)]
    pub kb_index_dir: Option<PathBuf>,
    /// Models directory (VOXLOOP_MODELS_DIR).
    #[arg(long)]
    pub models_dir: Option<PathBuf>,
}

impl KbArgs {
    pub fn apply(&self, config: &mut Config) {
        if let Some(d) = &self.kb_dir {
            config.kb.dir = Some(d.clone());
        }
        if let Some(d) = &self.kb_index_dir {
            config.kb.index_dir = Some(d.clone());
        }
        if let Some(d) = &self.models_dir {
            config.models.dir = d.clone();
        }
    }
}

pub fn open(config: &Config) -> anyhow::Result<KnowledgeBase> {
    let path = config.kb.index_path();
    let Some(dir) = path.as_deref() else {
        anyhow::bail!("no index to use: pass --kb-dir DIR or --kb-index-dir DIR");
    };
    KnowledgeBase::open(Some(dir), &config.models.dir, config.kb.max_doc_bytes)
        .with_context(|| format!("opening the knowledge base in {}", dir.display()))
}

/// Syncs the configured folder into the index, printing one line per problem.
fn sync(kb: &KnowledgeBase, config: &Config) -> anyhow::Result<Option<folder::Report>> {
    let Some(dir) = &config.kb.dir else {
        return Ok(None);
    };
    let r = folder::sync(kb, dir).with_context(|| format!("reading {}", dir.display()))?;
    for (name, why) in &r.skipped {
        eprintln!("skipped {name}: {why}");
    }
    for (name, why) in &r.failed {
        eprintln!("failed {name}: {why}");
    }
    Ok(Some(r))
}

pub fn run(action: KbAction, mut config: Config) -> anyhow::Result<i32> {
    let args = match &action {
        KbAction::Index(a) | KbAction::Stats(a) => a,
        KbAction::Search { kb, .. } => kb,
    };
    args.apply(&mut config);
    let kb = open(&config)?;
    match action {
        KbAction::Index(_) => {
            let t0 = std::time::Instant::now();
            let Some(r) = sync(&kb, &config)? else {
                anyhow::bail!("no folder to index: pass --kb-dir DIR (or set VOXLOOP_KB_DIR)");
            };
            let s = kb.stats();
            println!(
                "indexed: {} added, {} updated, {} unchanged, {} removed, {} skipped, {} failed; {} documents, {} chunks in {:.2}s",
                r.added,
                r.updated,
                r.unchanged,
                r.removed,
                r.skipped.len(),
                r.failed.len(),
                s.docs,
                s.chunks,
                t0.elapsed().as_secs_f64()
            );
            Ok(i32::from(!r.failed.is_empty()))
        }
        KbAction::Search { question, k, .. } => {
            sync(&kb, &config)?;
            let t0 = std::time::Instant::now();
            let hits = kb.search(&question, k)?;
            let ms = t0.elapsed().as_secs_f64() * 1e3;
            for h in &hits {
                println!(
                    "{:.4}\t{:.3}\t{}#{}\t{}",
                    h.score,
                    h.similarity,
                    h.doc,
                    h.chunk,
                    h.text.replace('\n', " / ")
                );
            }
            eprintln!("{} hits in {ms:.1} ms", hits.len());
            Ok(0)
        }
        KbAction::Stats(_) => {
            sync(&kb, &config)?;
            let s = kb.stats();
            println!("documents: {}\nchunks: {}", s.docs, s.chunks);
            for d in kb.docs() {
                println!(
                    "{}\t{} bytes\t{} chunks\t{}",
                    d.name,
                    d.size,
                    d.chunks,
                    &d.hash[..12]
                );
            }
            Ok(0)
        }
    }
}
