//! One knowledge base for every server on a NATS: this server's index
//! follows the shared bucket (`bus::kb_store`), and its watched folder feeds
//! the bucket.
//!
//! Each round, after (re)connecting:
//! 1. start watching the bucket (so nothing that changes during steps 2–3
//!    is missed);
//! 2. push the folder: a file the bucket lacks, or one modified after the
//!    bucket's copy with other content, is put; an object this folder put
//!    whose file is gone is deleted (a deletion while the server was down);
//! 3. follow the bucket: each object whose hash differs from the local
//!    index is fetched and indexed; a local document the bucket lacks is
//!    removed;
//! 4. apply the bucket's changes and the folder's as they come.
//!
//! The folder mirrors the bucket: a document that arrives from the bucket is
//! written there too, and one deleted from the bucket is deleted there, so
//! a restart never pushes back a copy the others replaced or deleted.
//!
//! Any NATS failure ends the round; the next starts after a pause, and the
//! server keeps answering from its local index meanwhile (the folder is
//! still indexed directly). A bad document (too large, binary) is logged and
//! skipped, never the end of a round. Our own puts come back through the
//! watch and cost one hash comparison.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::bus::backoff::Backoff;
use crate::bus::kb_store::{BucketChange, KbStore, KbStoreError, Stored};
use crate::kb::{KbError, KnowledgeBase, doc, folder};
use crate::pipeline::retrieve::{KbJobError, Retriever};

/// The origin an HTTP upload is stored with.
pub const HTTP_ORIGIN: &str = "http";

/// The origin this folder's documents are stored with: its path, so a
/// restart can tell its own objects from other servers' and uploads.
fn folder_origin(dir: &Path) -> String {
    let canonical = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    format!("folder:{}", canonical.display())
}

struct Follower<'a> {
    store: &'a KbStore,
    kb: &'a Retriever,
    limit: usize,
    /// The watched folder, kept a mirror of the bucket.
    dir: Option<PathBuf>,
}

/// Follows the bucket until `cancel`, feeding it from `feed` when there is a
/// watched folder.
pub async fn run(
    store: &KbStore,
    kb: Arc<Retriever>,
    mut feed: Option<folder::Feed>,
    limit: usize,
    cancel: CancellationToken,
) {
    let f = Follower {
        store,
        kb: &kb,
        limit,
        dir: feed.as_ref().map(|f| f.dir.clone()),
    };
    // Between rounds: 0.5 s, doubling up to 5 s.
    let mut backoff = Backoff::default();
    let mut failing = false;
    loop {
        let result = tokio::select! {
            r = f.round(feed.as_mut(), &mut failing) => r,
            _ = cancel.cancelled() => return,
        };
        if let Err(e) = result {
            if !failing {
                // It was following: a new outage starts with short pauses.
                tracing::warn!(bucket = store.bucket(), error = %e,
                    "kb: cannot follow the shared bucket; answering from the local index until it is back");
                failing = true;
                backoff = Backoff::default();
            }
            store.reset().await;
        }
        // Folder changes meanwhile are indexed locally already; the next
        // round pushes the whole folder, so the names can go.
        let wait = tokio::time::sleep(backoff.next_pause());
        tokio::pin!(wait);
        loop {
            tokio::select! {
                _ = &mut wait => break,
                _ = cancel.cancelled() => return,
                Some(_) = recv(feed.as_mut()) => {}
            }
        }
    }
}

async fn recv(feed: Option<&mut folder::Feed>) -> Option<String> {
    match feed {
        Some(f) => f.changes.recv().await,
        None => std::future::pending().await,
    }
}

impl Follower<'_> {
    async fn round(
        &self,
        mut feed: Option<&mut folder::Feed>,
        failing: &mut bool,
    ) -> Result<(), KbStoreError> {
        let mut watch = Box::pin(self.store.watch().await?);
        if let Some(feed) = feed.as_deref_mut() {
            while feed.changes.try_recv().is_ok() {}
            self.push_folder(&feed.dir).await?;
        }
        // The index is read before the bucket is listed: a document put over
        // HTTP meanwhile is stored in the bucket before it is indexed, so it
        // is listed whenever it is in this snapshot, never removed as gone.
        let local = self.local_docs().await;
        let objects = self.store.list().await?;
        let (indexed, removed) = self.follow(local, &objects).await?;
        tracing::info!(
            bucket = self.store.bucket(),
            objects = objects.len(),
            indexed,
            removed,
            "kb: following the shared bucket"
        );
        *failing = false;
        loop {
            tokio::select! {
                change = watch.next() => match change {
                    Some(Ok(c)) => self.apply(c).await?,
                    Some(Err(e)) => return Err(e),
                    None => return Err(KbStoreError::Nats {
                        bucket: self.store.bucket().to_string(),
                        message: "the watch ended".into(),
                    }),
                },
                Some(name) = recv(feed.as_deref_mut()) => {
                    if let Some(f) = feed.as_deref() {
                        self.push_file(&f.dir, &name, None).await?;
                    }
                }
            }
        }
    }

    /// Step 2: the folder into the bucket.
    async fn push_folder(&self, dir: &Path) -> Result<(), KbStoreError> {
        let origin = folder_origin(dir);
        let stored: HashMap<String, Stored> = self
            .store
            .list()
            .await?
            .into_iter()
            .map(|s| (s.name.clone(), s))
            .collect();
        let (files, _) = match folder::scan(dir) {
            Ok(x) => x,
            Err(e) => {
                // Nothing to push; never a reason to delete anything.
                tracing::warn!(dir = %dir.display(), error = %e, "kb: cannot list the folder");
                return Ok(());
            }
        };
        for (name, (_, modified)) in &files {
            let newer = match stored.get(name) {
                None => true,
                Some(s) => match (modified.and_then(ms), s.modified_ms) {
                    (Some(file), Some(object)) => file > object,
                    _ => false,
                },
            };
            if newer {
                self.push_file(dir, name, Some(&origin)).await?;
            }
        }
        for s in stored.values() {
            if s.origin.as_deref() == Some(origin.as_str()) && !files.contains_key(&s.name) {
                tracing::info!(doc = %s.name, "kb: its file is gone: deleted from the shared bucket");
                self.store.delete(&s.name).await?;
            }
        }
        Ok(())
    }

    /// Puts the file `name` in the bucket, or deletes the object when the
    /// file is gone. A file that is not a valid document is logged, not put.
    async fn push_file(
        &self,
        dir: &Path,
        name: &str,
        origin: Option<&str>,
    ) -> Result<(), KbStoreError> {
        let origin = origin
            .map(str::to_string)
            .unwrap_or_else(|| folder_origin(dir));
        let bytes = match tokio::fs::read(dir.join(name)).await {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return self.store.delete(name).await.map(drop);
            }
            Err(e) => {
                tracing::warn!(doc = %name, error = %e, "kb: cannot read the file; not shared");
                return Ok(());
            }
        };
        if let Err(e) =
            doc::check_name(name).and_then(|_| doc::check_content(name, &bytes, self.limit))
        {
            tracing::warn!(doc = %name, error = %e, "kb: not shared");
            return Ok(());
        }
        if self.store.put(name, &bytes, &origin).await? {
            tracing::info!(doc = %name, bucket = self.store.bucket(), "kb: put in the shared bucket");
        }
        Ok(())
    }

    /// The indexed documents' names and hashes.
    async fn local_docs(&self) -> HashMap<String, String> {
        self.on_index(|kb| Ok(kb.docs()))
            .await
            .map(|docs| docs.into_iter().map(|d| (d.name, d.hash)).collect())
            .unwrap_or_default()
    }

    /// Step 3: the local index (`local`, read before the bucket was
    /// listed) onto the bucket's documents. Returns how many
    /// were indexed and removed.
    async fn follow(
        &self,
        local: HashMap<String, String>,
        objects: &[Stored],
    ) -> Result<(usize, usize), KbStoreError> {
        let mut indexed = 0;
        for s in objects {
            if local.get(&s.name) != Some(&s.hash) && self.index(s).await? {
                indexed += 1;
            }
        }
        let names: HashSet<&str> = objects.iter().map(|s| s.name.as_str()).collect();
        let mut removed = 0;
        for name in local.keys().filter(|n| !names.contains(n.as_str())) {
            // Not the file: it was pushed in step 2 if it could be.
            self.remove(name, false).await;
            removed += 1;
        }
        Ok((indexed, removed))
    }

    async fn apply(&self, change: BucketChange) -> Result<(), KbStoreError> {
        match change {
            BucketChange::Put(s) => {
                let name = s.name.clone();
                let same = self
                    .on_index(move |kb| Ok(kb.doc(&name).map(|d| d.hash)))
                    .await
                    .is_ok_and(|h| h.as_ref() == Some(&s.hash));
                if !same {
                    self.index(&s).await?;
                }
            }
            BucketChange::Deleted(name) => self.remove(&name, true).await,
        }
        Ok(())
    }

    /// Fetches and indexes one object; false when it is not a document we
    /// can index (logged). NATS failures are the caller's.
    async fn index(&self, s: &Stored) -> Result<bool, KbStoreError> {
        let bytes = match self.store.fetch(&s.name, self.limit).await {
            Ok(b) => b,
            Err(e @ (KbStoreError::TooLarge { .. } | KbStoreError::NotFound(_))) => {
                tracing::warn!(doc = %s.name, error = %e, "kb: bucket object not indexed");
                return Ok(false);
            }
            Err(e) => return Err(e),
        };
        let name = s.name.clone();
        let dir = self.dir.clone();
        let put = move |kb: &KnowledgeBase| {
            let r = kb.put(&name, &bytes)?;
            // Checked by `put`, so the name stays inside the folder.
            if let Some(dir) = &dir
                && std::fs::read(dir.join(&name)).ok().as_deref() != Some(&bytes[..])
                && let Err(e) = folder::write(dir, &name, &bytes)
            {
                tracing::warn!(doc = %name, error = %e, "kb: indexed, but not written to the folder");
            }
            Ok(r)
        };
        match self.on_index(put).await {
            Ok((info, change)) => {
                tracing::info!(doc = %info.name, chunks = info.chunks, ?change, "kb: indexed from the shared bucket");
                Ok(true)
            }
            Err(e) => {
                tracing::warn!(doc = %s.name, error = %e, "kb: bucket object not indexed");
                Ok(false)
            }
        }
    }

    /// `Retriever::on_index`, waiting out a full queue (HTTP uploads may fill
    /// it): a change from the bucket is never dropped for being busy.
    async fn on_index<R: Send + 'static>(
        &self,
        f: impl FnOnce(&KnowledgeBase) -> Result<R, KbError> + Send + Clone + 'static,
    ) -> Result<R, KbJobError> {
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(1));
        loop {
            match self.kb.on_index(f.clone()).await {
                Err(KbJobError::Busy(_)) => backoff.wait().await,
                r => return r,
            }
        }
    }

    /// Removes `name` from the index, and with `file` from the folder.
    async fn remove(&self, name: &str, file: bool) {
        let n = name.to_string();
        let dir = self.dir.clone().filter(|_| file);
        let remove = move |kb: &KnowledgeBase| {
            if let Some(dir) = &dir
                && doc::check_name(&n).is_ok()
            {
                match std::fs::remove_file(dir.join(&n)) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => tracing::warn!(doc = %n, error = %e, "kb: cannot remove the file"),
                }
            }
            kb.remove(&n)
        };
        match self.on_index(remove).await {
            Ok(()) => tracing::info!(doc = %name, "kb: removed (gone from the shared bucket)"),
            Err(KbJobError::Kb(KbError::NotFound(_))) => {}
            Err(e) => tracing::warn!(doc = %name, error = %e, "kb: could not remove"),
        }
    }
}

fn ms(t: SystemTime) -> Option<u64> {
    t.duration_since(UNIX_EPOCH)
        .ok()
        .map(|d| d.as_millis() as u64)
}
