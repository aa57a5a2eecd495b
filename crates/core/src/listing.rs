//! Listings that start after a key, correct on every store.
//!
//! Resync and the ledger page through sorted listings with `list_with_offset` (S3's and GCS's
//! `start-after`, Azure's `startFrom`). Real S3, GCS and Azure honour it, but some stores and
//! emulators do not: fake-gcs-server ignores `start-after` and Azurite ignores `startFrom`, so
//! they list from the start. Every entry at or before the offset is therefore dropped here as
//! well; on a store that honours the offset this removes nothing, on one that does not the
//! listing is still correct, only longer.

use futures::StreamExt as _;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore};

/// The objects under `prefix` whose location sorts strictly after `offset`, in the store's
/// (UTF-8 byte) order.
pub fn list_after(
    store: &dyn ObjectStore,
    prefix: Option<&Path>,
    offset: &Path,
) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
    let after = offset.as_ref().to_owned();
    store
        .list_with_offset(prefix, offset)
        .filter(move |entry| {
            let keep = match entry {
                Ok(meta) => meta.location.as_ref() > after.as_str(),
                Err(_) => true,
            };
            std::future::ready(keep)
        })
        .boxed()
}

#[cfg(test)]
mod tests {
    use futures::TryStreamExt as _;
    use object_store::memory::InMemory;
    use object_store::{ObjectStoreExt as _, PutPayload};

    use super::*;

    #[tokio::test]
    async fn keeps_only_keys_after_the_offset() {
        let store = InMemory::new();
        for key in ["d/1", "d/2", "d/3", "e/1"] {
            store.put(&Path::from(key), PutPayload::from_static(b"x")).await.expect("put");
        }
        let listed: Vec<String> = list_after(&store, Some(&Path::from("d")), &Path::from("d/2"))
            .map_ok(|m| m.location.to_string())
            .try_collect()
            .await
            .expect("list");
        assert_eq!(listed, ["d/3"]);
    }
}
