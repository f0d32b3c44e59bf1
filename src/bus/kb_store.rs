//! The shared knowledge base: documents as objects in a JetStream object
//! store bucket (`<prefix>_kb`, `voxloop_kb` by default).
//!
//! The bucket is what several servers on one NATS share: every server puts
//! its folder changes and HTTP uploads there and follows the bucket into its
//! own local index, and any other system can publish a document by putting
//! an object (`nats object put voxloop_kb hours.md`). This module only moves
//! bytes and object facts; what is indexed, and when, is the caller's
//! (`server::kb_sync`).
//!
//! An object's content hash is the object store's own SHA-256 digest, given
//! here in hex like the local index's, so "already indexed" is one string
//! comparison and an unchanged document is never fetched.

use std::collections::HashMap;
use std::time::Duration;

use async_nats::jetstream::{self, object_store};
use base64::Engine as _;
use futures::{Stream, StreamExt};
use tokio::io::AsyncReadExt;
use tokio::sync::Mutex;

/// Longest wait for one bucket operation's answer (a put of a 1 MiB
/// document is eight 128 KiB chunks, each acked in well under a
/// millisecond on a healthy server); an upload waits at most this long to
/// be refused while NATS is down.
const OP_TIMEOUT: Duration = Duration::from_secs(5);
/// Cap on the bucket's size: documents are text, capped per document by
/// `kb.max_doc_bytes`; this only stops a runaway publisher filling the disk.
const BUCKET_MAX_BYTES: i64 = 1 << 30;
/// Object metadata key naming where a document came from
/// ([`Origin`]); objects put by other systems have none.
const ORIGIN_KEY: &str = "voxloop-origin";

#[derive(Debug, thiserror::Error)]
pub enum KbStoreError {
    #[error("no NATS configured")]
    Disabled,
    #[error("knowledge-base bucket {bucket}: {message}")]
    Nats { bucket: String, message: String },
    #[error("knowledge-base bucket {bucket}: no answer within {OP_TIMEOUT:?}")]
    Timeout { bucket: String },
    #[error(
        "{name:?} is {size} bytes in the bucket, over the {limit}-byte limit (kb.max_doc_bytes)"
    )]
    TooLarge {
        name: String,
        size: usize,
        limit: usize,
    },
    #[error("{0:?} is not in the bucket")]
    NotFound(String),
}

/// One document in the bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub name: String,
    /// SHA-256 of the content, lower-case hex (as `kb::DocInfo::hash`).
    pub hash: String,
    pub size: usize,
    /// When it was put, milliseconds since the Unix epoch.
    pub modified_ms: Option<u64>,
    /// Who put it, if voxloop did (see [`ORIGIN_KEY`]).
    pub origin: Option<String>,
}

/// A change seen in the bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BucketChange {
    Put(Stored),
    Deleted(String),
}

/// The bucket, opened (and created) on first use and again after a failure:
/// NATS may come up after the server.
pub struct KbStore {
    js: jetstream::Context,
    bucket: String,
    store: Mutex<Option<object_store::ObjectStore>>,
}

/// Hex of an object store digest (`SHA-256=<base64url>`), `None` if it is
/// not one.
pub fn digest_hex(digest: &str) -> Option<String> {
    let b64 = digest.strip_prefix("SHA-256=")?;
    let bytes = base64::engine::general_purpose::URL_SAFE
        .decode(b64)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(b64))
        .ok()?;
    (bytes.len() == 32).then(|| bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn stored(info: &object_store::ObjectInfo) -> Option<Stored> {
    Some(Stored {
        name: info.name.clone(),
        hash: digest_hex(info.digest.as_deref()?)?,
        size: info.size,
        modified_ms: info
            .modified
            .map(|t| (t.unix_timestamp_nanos() / 1_000_000).max(0) as u64),
        origin: info.metadata.get(ORIGIN_KEY).cloned(),
    })
}

impl KbStore {
    pub fn new(js: jetstream::Context, bucket: String) -> Self {
        Self {
            js,
            bucket,
            store: Mutex::new(None),
        }
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    fn err(&self, e: impl std::fmt::Display) -> KbStoreError {
        KbStoreError::Nats {
            bucket: self.bucket.clone(),
            message: e.to_string(),
        }
    }

    async fn timed<T, E: std::fmt::Display>(
        &self,
        f: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<T, KbStoreError> {
        match tokio::time::timeout(OP_TIMEOUT, f).await {
            Ok(r) => r.map_err(|e| self.err(e)),
            Err(_) => Err(KbStoreError::Timeout {
                bucket: self.bucket.clone(),
            }),
        }
    }

    async fn store(&self) -> Result<object_store::ObjectStore, KbStoreError> {
        let mut slot = self.store.lock().await;
        if let Some(s) = slot.as_ref() {
            return Ok(s.clone());
        }
        let store = match self.timed(self.js.get_object_store(&self.bucket)).await {
            Ok(s) => s,
            Err(_) => {
                let config = object_store::Config {
                    bucket: self.bucket.clone(),
                    description: Some("voxloop: knowledge-base documents".into()),
                    max_bytes: BUCKET_MAX_BYTES,
                    ..Default::default()
                };
                self.timed(self.js.create_object_store(config)).await?
            }
        };
        *slot = Some(store.clone());
        Ok(store)
    }

    /// Forget the opened bucket after a failure, so the next call opens it
    /// again (it may have been deleted, or NATS restarted without its store).
    pub async fn reset(&self) {
        *self.store.lock().await = None;
    }

    /// Every document in the bucket.
    pub async fn list(&self) -> Result<Vec<Stored>, KbStoreError> {
        let store = self.store().await?;
        let mut list = self.timed(store.list()).await?;
        let mut out = Vec::new();
        loop {
            match tokio::time::timeout(OP_TIMEOUT, list.next()).await {
                Ok(Some(Ok(info))) => out.extend(stored(&info)),
                Ok(Some(Err(e))) => return Err(self.err(e)),
                Ok(None) => return Ok(out),
                Err(_) => {
                    return Err(KbStoreError::Timeout {
                        bucket: self.bucket.clone(),
                    });
                }
            }
        }
    }

    /// The document `name`'s facts, `None` when it is not there.
    pub async fn info(&self, name: &str) -> Result<Option<Stored>, KbStoreError> {
        let store = self.store().await?;
        match tokio::time::timeout(OP_TIMEOUT, store.info(name)).await {
            Ok(Ok(info)) if !info.deleted => Ok(stored(&info)),
            Ok(Ok(_)) => Ok(None),
            Ok(Err(e)) if e.kind() == object_store::InfoErrorKind::NotFound => Ok(None),
            Ok(Err(e)) => Err(self.err(e)),
            Err(_) => Err(KbStoreError::Timeout {
                bucket: self.bucket.clone(),
            }),
        }
    }

    /// The content of `name`, refused unread when the bucket says it is
    /// over `limit` bytes (and cut off there if it lies).
    pub async fn fetch(&self, name: &str, limit: usize) -> Result<Vec<u8>, KbStoreError> {
        let store = self.store().await?;
        let object = match tokio::time::timeout(OP_TIMEOUT, store.get(name)).await {
            Ok(Ok(o)) => o,
            Ok(Err(e)) if e.kind() == object_store::GetErrorKind::NotFound => {
                return Err(KbStoreError::NotFound(name.to_string()));
            }
            Ok(Err(e)) => return Err(self.err(e)),
            Err(_) => {
                return Err(KbStoreError::Timeout {
                    bucket: self.bucket.clone(),
                });
            }
        };
        let too_large = |size| KbStoreError::TooLarge {
            name: name.to_string(),
            size,
            limit,
        };
        if object.info.size > limit {
            return Err(too_large(object.info.size));
        }
        let mut bytes = Vec::with_capacity(object.info.size);
        // One byte over the limit is enough to know it is too large.
        let mut reader = object.take(limit as u64 + 1);
        self.timed(reader.read_to_end(&mut bytes)).await?;
        if bytes.len() > limit {
            return Err(too_large(bytes.len()));
        }
        Ok(bytes)
    }

    /// Puts `bytes` as `name`, unless the bucket already holds exactly that
    /// content. Returns whether it wrote.
    pub async fn put(&self, name: &str, bytes: &[u8], origin: &str) -> Result<bool, KbStoreError> {
        let hash = crate::kb::content_hash(bytes);
        if self.info(name).await?.is_some_and(|s| s.hash == hash) {
            return Ok(false);
        }
        let store = self.store().await?;
        let meta = object_store::ObjectMetadata {
            name: name.to_string(),
            metadata: HashMap::from([(ORIGIN_KEY.to_string(), origin.to_string())]),
            ..Default::default()
        };
        let mut reader = bytes;
        self.timed(store.put(meta, &mut reader)).await?;
        Ok(true)
    }

    /// Deletes `name`; returns whether it was there (deleting what is not
    /// there is not an error).
    pub async fn delete(&self, name: &str) -> Result<bool, KbStoreError> {
        if self.info(name).await?.is_none() {
            return Ok(false);
        }
        let store = self.store().await?;
        self.timed(store.delete(name)).await?;
        Ok(true)
    }

    /// Changes from now on. Start it before a [`KbStore::list`] that it
    /// should follow, so nothing falls between the two.
    pub async fn watch(
        &self,
    ) -> Result<impl Stream<Item = Result<BucketChange, KbStoreError>> + use<>, KbStoreError> {
        let store = self.store().await?;
        let watch = self.timed(store.watch()).await?;
        let bucket = self.bucket.clone();
        Ok(watch.filter_map(move |item| {
            let bucket = bucket.clone();
            async move {
                match item {
                    Ok(info) if info.deleted => Some(Ok(BucketChange::Deleted(info.name))),
                    // A meta without a digest is not a document (a link);
                    // skipped.
                    Ok(info) => stored(&info).map(|s| Ok(BucketChange::Put(s))),
                    Err(e) => Some(Err(KbStoreError::Nats {
                        bucket,
                        message: e.to_string(),
                    })),
                }
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_read_as_hex() {
        // sha256("") in the object store's spelling.
        let d = "SHA-256=47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU=";
        assert_eq!(
            digest_hex(d).as_deref(),
            Some("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        );
        assert_eq!(digest_hex("MD5=abc"), None);
        assert_eq!(digest_hex("SHA-256=not base64!"), None);
        assert_eq!(digest_hex("SHA-256=AAAA"), None); // not 32 bytes
    }
}
