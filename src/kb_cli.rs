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
    /// Benchmark: index generated filler documents up to N chunks (in a
    /// temporary index), then time searches; prints labelled lines.
    Bench {
        /// Chunks to index.
        #[arg(long, default_value_t = 1000)]
        chunks: usize,
        /// Searches to time.
        #[arg(long, default_value_t = 200)]
        queries: usize,
        #[command(flatten)]
        kb: KbArgs,
    },
}

#[derive(Args)]
pub struct KbArgs {
    #[command(flatten)]
    pub dirs: super::KbDirArgs,
    /// Models directory (VOXLOOP_MODELS_DIR).
    #[arg(long)]
    pub models_dir: Option<PathBuf>,
}

impl KbArgs {
    pub fn apply(&self, config: &mut Config) {
        self.dirs.apply(config);
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
        KbAction::Search { kb, .. } | KbAction::Bench { kb, .. } => kb,
    };
    if let KbAction::Bench {
        chunks, queries, ..
    } = action
    {
        return bench(&config, chunks, queries);
    }
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
        KbAction::Bench { .. } => unreachable!("handled above"),
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

/// Words for filler sentences: enough variety that BM25 and the vectors
/// have real work, no fact any test asks about.
const WORDS: &[&str] = &[
    "invoice",
    "warehouse",
    "delivery",
    "customer",
    "refund",
    "schedule",
    "bicycle",
    "harbor",
    "garden",
    "ticket",
    "weekend",
    "morning",
    "policy",
    "account",
    "kitchen",
    "festival",
    "library",
    "museum",
    "winter",
    "summer",
    "station",
    "printer",
    "parking",
    "voucher",
    "recipe",
    "bakery",
    "orchard",
    "meeting",
    "contract",
    "battery",
    "pottery",
    "lantern",
    "journey",
    "passport",
    "harvest",
    "canvas",
];

/// Filler document `d`: 20 sentences of 8 to 14 words under two headings.
fn filler(d: usize) -> String {
    let mut s = format!("# Topic {d}\n\n");
    let mut x = d as u64 * 2_654_435_761 + 1;
    for i in 0..20 {
        if i == 10 {
            s.push_str(&format!("\n## Details {d}\n\n"));
        }
        let n = 8 + (i % 7);
        let mut words = Vec::with_capacity(n);
        for _ in 0..n {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            words.push(WORDS[(x >> 33) as usize % WORDS.len()]);
        }
        s.push_str(&format!(
            "The {} number {}.\n\n",
            words.join(" "),
            d * 100 + i
        ));
    }
    s
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// `voxloop kb bench`: indexing throughput, search latency, RSS growth.
fn bench(config: &Config, chunks: usize, queries: usize) -> anyhow::Result<i32> {
    let dir = std::env::temp_dir().join(format!("voxloop-kb-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let rss0 = voxloop::metrics::process_rss_bytes("self").unwrap_or(0);
    let kb = KnowledgeBase::open(Some(&dir), &config.models.dir, config.kb.max_doc_bytes)?;
    let rss_loaded = voxloop::metrics::process_rss_bytes("self").unwrap_or(0);
    let t0 = std::time::Instant::now();
    let mut d = 0;
    while kb.stats().chunks < chunks {
        kb.put(&format!("filler/{d:05}.md"), filler(d).as_bytes())?;
        d += 1;
    }
    let secs = t0.elapsed().as_secs_f64();
    let n = kb.stats().chunks;
    let rss_indexed = voxloop::metrics::process_rss_bytes("self").unwrap_or(0);
    println!(
        "kb-bench indexed: {n} chunks in {d} documents, {secs:.1} s, {:.1} chunks/s",
        n as f64 / secs
    );
    let (mut total, mut index_only) = (Vec::new(), Vec::new());
    for i in 0..queries {
        let q = format!(
            "{} {} {} for number {}",
            WORDS[i % WORDS.len()],
            WORDS[(i * 7) % WORDS.len()],
            WORDS[(i * 13) % WORDS.len()],
            i * 37 % (d * 100).max(1)
        );
        let t = std::time::Instant::now();
        let v = kb.embedder().embed(&q)?;
        let t_embed = t.elapsed();
        let t2 = std::time::Instant::now();
        let _ = kb.search_vector(&q, &v, config.kb.top_k)?;
        index_only.push(t2.elapsed().as_secs_f64() * 1e3);
        total.push((t_embed + t2.elapsed()).as_secs_f64() * 1e3);
    }
    total.sort_by(f64::total_cmp);
    index_only.sort_by(f64::total_cmp);
    println!(
        "kb-bench search: {queries} queries at {n} chunks: total p50 {:.1} ms p95 {:.1} ms; index only (cosine + BM25 + fusion) p50 {:.2} ms p95 {:.2} ms",
        pct(&total, 0.5),
        pct(&total, 0.95),
        pct(&index_only, 0.5),
        pct(&index_only, 0.95)
    );
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    println!(
        "kb-bench rss: {:.0} MiB at start, {:.0} MiB with the model, {:.0} MiB with {n} chunks ({:.1} MiB per 10,000 chunks)",
        mib(rss0),
        mib(rss_loaded),
        mib(rss_indexed),
        mib(rss_indexed.saturating_sub(rss_loaded)) * 10_000.0 / n.max(1) as f64
    );
    drop(kb);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(0)
}

/// The knowledge base of `serve` and `converse`.
#[derive(Args)]
pub struct KbDirArgs {
    /// Folder of Markdown/text documents to answer from, watched for
    /// changes (VOXLOOP_KB_DIR).
    #[arg(long)]
    pub kb_dir: Option<PathBuf>,
    /// Where its index is kept (VOXLOOP_KB_INDEX_DIR).
    #[arg(long)]
    pub kb_index_dir: Option<PathBuf>,
}

impl KbDirArgs {
    pub fn apply(&self, config: &mut Config) {
        if let Some(d) = &self.kb_dir {
            config.kb.dir = Some(d.clone());
        }
        if let Some(d) = &self.kb_index_dir {
            config.kb.index_dir = Some(d.clone());
        }
    }
}
