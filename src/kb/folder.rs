//! A watched folder of documents: the index follows the folder.
//!
//! The folder is polled, not watched with inotify: a listing of a few hundred
//! files every [`POLL`] costs microseconds, works the same on every file
//! system (network mounts, bind mounts, editors that replace files by rename)
//! and needs no extra dependency. A change is acted on once the listing has
//! been stable for [`SETTLE`], so a file still being written is not indexed
//! half-way; together that keeps a change under 2 s from disk to search.
//!
//! Names are paths relative to the folder with `/` separators. Hidden files
//! and folders (editor swap files, `.git`) are ignored; other unsupported
//! files are reported once as skipped, with the reason.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use super::{Change, KbError, KnowledgeBase, doc};

/// How often the folder is listed.
pub const POLL: Duration = Duration::from_millis(250);
/// How long a listing must stay the same before it is acted on.
pub const SETTLE: Duration = Duration::from_millis(300);
/// Deepest folder nesting followed (guards against symlink loops).
const MAX_DEPTH: usize = 16;

/// A file's size and modification time: a change to either means re-read.
pub type Stamp = (u64, Option<SystemTime>);
/// Supported documents by name.
pub type Listing = BTreeMap<String, Stamp>;
/// (name, reason) of files that are not indexed.
pub type Skipped = Vec<(String, String)>;

/// A watched folder as the shared bucket sees it: where it is, and the names
/// of documents whose file changed since (sent by [`watch`]'s `changed`).
pub struct Feed {
    pub dir: std::path::PathBuf,
    pub changes: tokio::sync::mpsc::UnboundedReceiver<String>,
}

/// What a sync did, for logs and `voxloop kb index`.
#[derive(Debug, Default)]
pub struct Report {
    pub added: usize,
    pub updated: usize,
    pub unchanged: usize,
    pub removed: usize,
    /// (name, reason) of files that are not indexed.
    pub skipped: Vec<(String, String)>,
    /// (name, error) of files whose indexing failed.
    pub failed: Vec<(String, String)>,
}

/// Lists the supported documents under `dir`, and the unsupported ones.
pub fn scan(dir: &Path) -> std::io::Result<(Listing, Skipped)> {
    let mut files = BTreeMap::new();
    let mut skipped = Vec::new();
    walk(dir, "", 0, &mut files, &mut skipped)?;
    Ok((files, skipped))
}

fn walk(
    dir: &Path,
    prefix: &str,
    depth: usize,
    files: &mut BTreeMap<String, Stamp>,
    skipped: &mut Vec<(String, String)>,
) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let Some(base) = entry.file_name().to_str().map(str::to_string) else {
            skipped.push((
                entry.file_name().to_string_lossy().into(),
                "the file name is not UTF-8".into(),
            ));
            continue;
        };
        if base.starts_with('.') {
            continue;
        }
        let name = format!("{prefix}{base}");
        // Follows symlinks: a folder of links to documents is a normal setup.
        let Ok(meta) = std::fs::metadata(entry.path()) else {
            continue;
        };
        if meta.is_dir() {
            if depth < MAX_DEPTH {
                walk(
                    &entry.path(),
                    &format!("{name}/"),
                    depth + 1,
                    files,
                    skipped,
                )?;
            }
        } else if meta.is_file() {
            match doc::check_name(&name) {
                Ok(_) => {
                    files.insert(name, (meta.len(), meta.modified().ok()));
                }
                Err(e) => skipped.push((name, e.to_string())),
            }
        }
    }
    Ok(())
}

/// Brings the index in line with the folder: indexes what changed (by
/// content hash), removes documents whose file is gone.
pub fn sync(kb: &KnowledgeBase, dir: &Path) -> std::io::Result<Report> {
    let (files, skipped) = scan(dir)?;
    let mut report = Report {
        skipped,
        ..Report::default()
    };
    for name in files.keys() {
        put_file(kb, dir, name, &mut report);
    }
    for d in kb.docs() {
        if !files.contains_key(&d.name) {
            remove(kb, &d.name, &mut report);
        }
    }
    Ok(report)
}

fn put_file(kb: &KnowledgeBase, dir: &Path, name: &str, report: &mut Report) {
    let result = std::fs::read(dir.join(name))
        .map_err(|e| e.to_string())
        .and_then(|bytes| kb.put(name, &bytes).map_err(|e| e.to_string()));
    match result {
        Ok((info, change)) => {
            match change {
                Change::Added => report.added += 1,
                Change::Updated => report.updated += 1,
                Change::Unchanged => report.unchanged += 1,
            }
            if change != Change::Unchanged {
                tracing::info!(doc = %name, chunks = info.chunks, ?change, "kb: indexed");
            }
        }
        Err(e) => {
            tracing::warn!(doc = %name, error = %e, "kb: document not indexed");
            report.failed.push((name.to_string(), e));
        }
    }
}

fn remove(kb: &KnowledgeBase, name: &str, report: &mut Report) {
    match kb.remove(name) {
        Ok(()) | Err(KbError::NotFound(_)) => {
            report.removed += 1;
            tracing::info!(doc = %name, "kb: removed");
        }
        Err(e) => {
            tracing::warn!(doc = %name, error = %e, "kb: could not remove");
            report.failed.push((name.to_string(), e.to_string()));
        }
    }
}

/// Polls `dir` until `stop` is set, applying each settled change and then
/// telling `changed` the name of each document whose file was added,
/// changed or removed (the shared bucket follows through it). Meant for a
/// dedicated thread: every step blocks.
pub fn watch(
    kb: Arc<KnowledgeBase>,
    dir: &Path,
    stop: Arc<AtomicBool>,
    mut changed: impl FnMut(&str),
) {
    let mut known: BTreeMap<String, Stamp> = BTreeMap::new();
    let mut first = true;
    while !stop.load(Ordering::Relaxed) {
        let (files, skipped) = match scan(dir) {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "kb: cannot list the folder");
                std::thread::sleep(POLL * 4);
                continue;
            }
        };
        if first {
            // Everything at start: sync also removes documents deleted while
            // the server was down.
            for (name, why) in &skipped {
                tracing::info!(doc = %name, reason = %why, "kb: skipped");
            }
            match sync(&kb, dir) {
                Ok(r) => tracing::info!(
                    added = r.added,
                    updated = r.updated,
                    unchanged = r.unchanged,
                    removed = r.removed,
                    failed = r.failed.len(),
                    skipped = r.skipped.len(),
                    "kb: folder indexed"
                ),
                Err(e) => tracing::warn!(error = %e, "kb: folder sync failed"),
            }
            known = files;
            first = false;
            continue;
        }
        if files != known {
            std::thread::sleep(SETTLE);
            match scan(dir) {
                Ok((again, _)) if again == files => {}
                _ => continue, // still changing: look again next round
            }
            let mut report = Report::default();
            for (name, stamp) in &files {
                if known.get(name) != Some(stamp) {
                    put_file(&kb, dir, name, &mut report);
                    changed(name);
                }
            }
            for name in known.keys().filter(|n| !files.contains_key(*n)) {
                remove(&kb, name, &mut report);
                changed(name);
            }
            known = files;
        }
        std::thread::sleep(POLL);
    }
}

/// Writes `bytes` as `dir/name`, by a hidden temporary file renamed into
/// place: the folder watcher never sees half a document. `name` must have
/// passed [`doc::check_name`] (it stays inside `dir`).
pub fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let path = dir.join(name);
    let parent = path.parent().unwrap_or(dir);
    std::fs::create_dir_all(parent)?;
    let base = path
        .file_name()
        .map(|b| b.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = parent.join(format!(".{base}.upload"));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, &path)
}
