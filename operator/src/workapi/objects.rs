//! The store side of the work API: presigned URLs and HEAD, per bucket, behind [`BucketAccess`]
//! so the HTTP tests can stand in for a store.

use std::time::Duration;

use futures::future::BoxFuture;
use object_store::aws::AmazonS3;
use object_store::path::Path;
use object_store::signer::{Method, Signer, Url};
use object_store::{ObjectStore, ObjectStoreExt as _};
use thiserror::Error;

/// What a HEAD found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub etag: Option<String>,
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ObjectError {
    /// The key cannot be expressed to the store client (empty segment, `.`/`..` segment, leading
    /// or trailing `/`, control characters). Retrying cannot help.
    #[error("object key {0:?} cannot be presigned")]
    UnsupportedKey(String),
    #[error("store request failed: {0}")]
    Store(String),
}

/// One bucket.
pub trait BucketAccess: Send + Sync + 'static {
    fn name(&self) -> &str;
    fn presign<'a>(
        &'a self,
        method: Method,
        key: &'a str,
        expires: Duration,
    ) -> BoxFuture<'a, Result<Url, ObjectError>>;
    /// `Ok(None)` when there is no such object.
    fn head<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<ObjectInfo>, ObjectError>>;
    /// Headers an upload to a presigned PUT URL must carry, as `(name, value)` pairs; the work
    /// API passes them to the runner in its output target. None for S3 and GCS.
    fn upload_headers(&self) -> Vec<(String, String)> {
        Vec::new()
    }
}

/// The store client's path for an S3 key, refusing keys it would silently change (it strips
/// leading and trailing `/`), since signing a different key would hand out the wrong object.
pub fn key_path(key: &str) -> Result<Path, ObjectError> {
    match Path::parse(key) {
        Ok(path) if path.as_ref() == key && !key.is_empty() => Ok(path),
        _ => Err(ObjectError::UnsupportedKey(key.to_owned())),
    }
}

/// A bucket whose client signs URLs itself: S3-compatible stores (SigV4) and GCS (V4 signed
/// URLs). [`crate::store::open`] builds them.
pub struct SignedBucket<C> {
    name: String,
    client: C,
}

/// A bucket of an S3-compatible store ([`crate::store::bucket_client`] builds the client).
pub type S3Bucket = SignedBucket<AmazonS3>;

impl<C> SignedBucket<C> {
    pub fn new(name: impl Into<String>, client: C) -> Self {
        Self { name: name.into(), client }
    }
}

impl<C: ObjectStore + Signer> BucketAccess for SignedBucket<C> {
    fn name(&self) -> &str {
        &self.name
    }

    fn presign<'a>(
        &'a self,
        method: Method,
        key: &'a str,
        expires: Duration,
    ) -> BoxFuture<'a, Result<Url, ObjectError>> {
        Box::pin(async move {
            let path = key_path(key)?;
            // With static keys signing is local computation; the operator's own identity may
            // fetch (and then cache) temporary credentials first.
            self.client.signed_url(method, &path, expires).await.map_err(|e| ObjectError::Store(e.to_string()))
        })
    }

    fn head<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<ObjectInfo>, ObjectError>> {
        Box::pin(head(&self.client, key))
    }
}

/// HEAD of one object through a store client.
pub async fn head(client: &dyn ObjectStore, key: &str) -> Result<Option<ObjectInfo>, ObjectError> {
    let path = key_path(key)?;
    match client.head(&path).await {
        Ok(meta) => Ok(Some(ObjectInfo { etag: meta.e_tag, size: meta.size })),
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(ObjectError::Store(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_the_client_would_rewrite_are_refused() {
        assert!(key_path("incoming/a.csv").is_ok());
        assert!(key_path("a b/ü.csv").is_ok());
        for bad in ["", "/a", "a/", "a//b", "a/../b", "./a", "a\nb"] {
            assert_eq!(key_path(bad), Err(ObjectError::UnsupportedKey(bad.into())), "{bad:?}");
        }
    }
}
