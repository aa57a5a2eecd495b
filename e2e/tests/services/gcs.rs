//! Google Cloud Storage (fake-gcs-server) through object_store with a service-account key, as
//! the operator will use it: bucket creation, uploads through V4 signed URLs (a worker's
//! outputs), list, get, head, delete, and signed GETs (a worker's inputs).
//!
//! Upstream fake-gcs-server implements only part of the XML API that object_store speaks
//! (fsouza/fake-gcs-server#331; object_store's own CI runs a patched fork). The gaps are asserted
//! below, so these tests fail, and e2e/README.md must be updated, the day a new version closes
//! them: object_store's `put` and `copy` (XML `PUT /<bucket>/<object>`) are refused unless the
//! URL carries a V4 signature, `list_with_offset` (`start-after`) is ignored, and signatures are
//! never verified, so the signed-URL checks prove the URLs' shape and routing, not the signature.

use std::time::Duration;

use futures::TryStreamExt as _;
use http::Method;
use object_store::path::Path;
use object_store::signer::Signer as _;
use object_store::{ObjectStore as _, ObjectStoreExt as _, PutPayload};
use zeroflow_e2e::gcs::FakeGcs;
use zeroflow_e2e::http;

use super::unique;

/// The message fake-gcs-server answers an unsigned XML-API upload with.
const NO_XML_UPLOAD: &str = "invalid uploadType";

#[tokio::test]
async fn fake_gcs_serves_signed_uploads_list_get_and_signed_downloads() -> anyhow::Result<()> {
    let gcs = FakeGcs::from_env()?;
    let bucket = unique("zf-gcs");
    gcs.create_bucket(&bucket).await?;
    let store = gcs.store(&bucket)?;

    // Uploads through V4 signed PUT URLs, as a worker writes its outputs.
    for (key, body) in
        [("incoming/a b.csv", b"id\n1\n".as_slice()), ("incoming/c.csv", b"id\n2\n"), ("other/d.csv", b"id\n3\n")]
    {
        let url = store.signed_url(Method::PUT, &Path::from(key), Duration::from_secs(300)).await?;
        assert!(url.query().is_some_and(|q| q.contains("X-Goog-Algorithm=GOOG4-RSA-SHA256")), "{url}");
        let (status, response) = http("PUT", url.as_str(), &[], body).await?;
        assert_eq!(status, 200, "{key}: {}", String::from_utf8_lossy(&response));
    }

    let listed: Vec<String> =
        store.list(Some(&Path::from("incoming"))).map_ok(|m| m.location.to_string()).try_collect().await?;
    assert_eq!(listed, ["incoming/a b.csv", "incoming/c.csv"]);
    let tree = store.list_with_delimiter(None).await?;
    assert_eq!(tree.common_prefixes, [Path::from("incoming"), Path::from("other")]);
    assert_eq!(store.get(&Path::from("incoming/a b.csv")).await?.bytes().await?.as_ref(), b"id\n1\n");
    assert_eq!(store.head(&Path::from("incoming/c.csv")).await?.size, 5);
    store.delete(&Path::from("other/d.csv")).await?;
    assert!(store.head(&Path::from("other/d.csv")).await.is_err(), "deleted object still there");

    // A signed GET, as a worker reads its input.
    let input = store.signed_url(Method::GET, &Path::from("incoming/a b.csv"), Duration::from_secs(300)).await?;
    let (status, body) = http("GET", input.as_str(), &[], b"").await?;
    assert_eq!((status, body.as_slice()), (200, b"id\n1\n".as_slice()), "{input}");
    Ok(())
}

#[tokio::test]
async fn fake_gcs_lacks_xml_uploads_copies_start_after_and_signature_checks() -> anyhow::Result<()> {
    let gcs = FakeGcs::from_env()?;
    let bucket = unique("zf-gcs-gaps");
    gcs.create_bucket(&bucket).await?;
    let store = gcs.store(&bucket)?;
    for key in ["d/1", "d/2", "d/3"] {
        let url = store.signed_url(Method::PUT, &Path::from(key), Duration::from_secs(300)).await?;
        assert_eq!(http("PUT", url.as_str(), &[], b"x").await?.0, 200);
    }

    let put = store.put(&Path::from("d/4"), PutPayload::from_static(b"x")).await;
    let put = put.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        put.contains(NO_XML_UPLOAD),
        "object_store's put now works on fake-gcs-server ({put:?}): update e2e/README.md"
    );
    let copy = store.copy(&Path::from("d/1"), &Path::from("d/5")).await;
    let copy = copy.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        copy.contains(NO_XML_UPLOAD),
        "object_store's copy now works on fake-gcs-server ({copy:?}): update e2e/README.md"
    );

    let after: Vec<String> = store
        .list_with_offset(Some(&Path::from("d")), &Path::from("d/2"))
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await?;
    assert_eq!(after, ["d/1", "d/2", "d/3"], "fake-gcs-server now honours start-after: update e2e/README.md");

    let input = store.signed_url(Method::GET, &Path::from("d/1"), Duration::from_secs(300)).await?;
    let tampered = input.as_str().replace("X-Goog-Signature=", "X-Goog-Signature=00");
    assert_eq!(
        http("GET", &tampered, &[], b"").await?.0,
        200,
        "fake-gcs-server now verifies signatures: update e2e/README.md"
    );
    Ok(())
}
