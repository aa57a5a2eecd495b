//! The store side of the work API: presigned URLs and HEAD, per bucket, behind [`BucketAccess`]
//! so the HTTP tests can stand in for a store.

use std::time::Duration;

use futures::future::BoxFuture;
use object_store::ObjectStoreExt as _;
use object_store::aws::AmazonS3;
use object_store::path::Path;
use object_store::signer::{Method, Signer, Url};
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
}

/// The store client's path for an S3 key, refusing keys it would silently change (it strips
/// leading and trailing `/`), since signing a different key would hand out the wrong object.
pub fn key_path(key: &str) -> Result<Path, ObjectError> {
    match Path::parse(key) {
        Ok(path) if path.as_ref() == key && !key.is_empty() => Ok(path),
        _ => Err(ObjectError::UnsupportedKey(key.to_owned())),
    }
}

/// A bucket of an S3-compatible store ([`crate::store::bucket_client`] builds the client).
pub struct S3Bucket {
    name: String,
    client: AmazonS3,
}

impl S3Bucket {
    pub fn new(name: impl Into<String>, client: AmazonS3) -> Self {
        Self { name: name.into(), client }
    }
}

impl BucketAccess for S3Bucket {
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
            // Signing is local computation with static credentials; no request is made.
            self.client.signed_url(method, &path, expires).await.map_err(|e| ObjectError::Store(e.to_string()))
        })
    }

    fn head<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<ObjectInfo>, ObjectError>> {
        Box::pin(async move {
            let path = key_path(key)?;
            match self.client.head(&path).await {
                Ok(meta) => Ok(Some(ObjectInfo { etag: meta.e_tag, size: meta.size })),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(ObjectError::Store(e.to_string())),
            }
        })
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
