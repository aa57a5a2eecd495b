//! Azure Blob Storage (Azurite) through object_store, configured as for a real account
//! (endpoint, account, key): create a container, put, list, get, and service-SAS URLs that a
//! worker can GET and PUT with no credentials of its own. Azurite verifies SAS signatures.

use std::time::Duration;

use futures::TryStreamExt as _;
use http::Method;
use object_store::path::Path;
use object_store::signer::Signer as _;
use object_store::{ObjectStore as _, ObjectStoreExt as _, PutPayload};
use zeroflow_e2e::azure::Azurite;
use zeroflow_e2e::http;

use super::unique;

#[tokio::test]
async fn azurite_serves_put_list_get_and_sas_urls() -> anyhow::Result<()> {
    let azurite = Azurite::from_env()?;
    let container = unique("zf-azure");
    azurite.create_container(&container).await?;
    let store = azurite.store(&container)?;

    store.put(&Path::from("incoming/a b.csv"), PutPayload::from_static(b"id\n1\n")).await?;
    store.put(&Path::from("incoming/c.csv"), PutPayload::from_static(b"id\n2\n")).await?;
    store.put(&Path::from("other/d.csv"), PutPayload::from_static(b"id\n3\n")).await?;
    let listed: Vec<String> =
        store.list(Some(&Path::from("incoming"))).map_ok(|m| m.location.to_string()).try_collect().await?;
    assert_eq!(listed, ["incoming/a b.csv", "incoming/c.csv"]);
    assert_eq!(store.get(&Path::from("incoming/a b.csv")).await?.bytes().await?.as_ref(), b"id\n1\n");

    // A signed GET: the worker's download.
    let input = store.signed_url(Method::GET, &Path::from("incoming/c.csv"), Duration::from_secs(300)).await?;
    let (status, body) = http("GET", input.as_str(), &[], b"").await?;
    assert_eq!((status, body.as_slice()), (200, b"id\n2\n".as_slice()), "{input}");

    // A signed PUT: the worker's upload. Azure's Put Blob needs the blob type named.
    let output = store.signed_url(Method::PUT, &Path::from("out/c.json"), Duration::from_secs(300)).await?;
    let (status, body) = http("PUT", output.as_str(), &[("x-ms-blob-type", "BlockBlob")], b"{\"n\":1}").await?;
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    assert_eq!(store.get(&Path::from("out/c.json")).await?.bytes().await?.as_ref(), b"{\"n\":1}");
    // Without that header Azure (and Azurite) refuse the upload: a worker that PUTs a presigned
    // URL as it does for S3 must add it for Azure.
    let (status, _) = http("PUT", output.as_str(), &[], b"x").await?;
    assert_eq!(status, 400, "a PUT without x-ms-blob-type was accepted");

    // The signature is checked: a URL whose signature was changed is refused...
    let tampered = tamper_signature(input.as_str(), "sig")?;
    assert_eq!(http("GET", &tampered, &[], b"").await?.0, 403, "a SAS URL with a wrong signature was served");
    // ...and so is the permission: a read SAS does not allow writing.
    let (status, _) = http("PUT", input.as_str(), &[("x-ms-blob-type", "BlockBlob")], b"x").await?;
    assert_eq!(status, 403, "a read SAS allowed a PUT");
    Ok(())
}

#[tokio::test]
async fn object_stores_sas_fails_for_names_that_need_escaping() -> anyhow::Result<()> {
    // object_store 0.14 signs the percent-encoded URL path (`a%20b.csv`) as the SAS's
    // canonicalized resource; Azure's SDKs sign the blob name itself (`a b.csv`), and that is
    // what Azurite checks. Until object_store changes, the operator must sign such names itself
    // (or refuse them) on Azure.
    let azurite = Azurite::from_env()?;
    let container = unique("zf-azure-escape");
    azurite.create_container(&container).await?;
    let store = azurite.store(&container)?;
    store.put(&Path::from("incoming/a b.csv"), PutPayload::from_static(b"x")).await?;
    let url = store.signed_url(Method::GET, &Path::from("incoming/a b.csv"), Duration::from_secs(300)).await?;
    let (status, body) = http("GET", url.as_str(), &[], b"").await?;
    assert_eq!(
        status,
        403,
        "object_store's SAS for a name with a space now works ({}): update this test and e2e/README.md",
        String::from_utf8_lossy(&body)
    );
    assert!(String::from_utf8_lossy(&body).contains("AuthorizationFailure"), "{}", String::from_utf8_lossy(&body));
    Ok(())
}

#[tokio::test]
async fn listing_after_an_offset_needs_object_stores_emulator_mode_on_azurite() -> anyhow::Result<()> {
    // The operator's resync and ledger page through a store with list_with_offset (Azure's
    // `startFrom`). Azurite ignores that parameter; object_store filters client-side only in its
    // emulator mode (`with_use_emulator`, endpoint from AZURITE_BLOB_STORAGE_URL).
    let azurite = Azurite::from_env()?;
    let container = unique("zf-azure-offset");
    azurite.create_container(&container).await?;
    let store = azurite.store(&container)?;
    for key in ["d/1", "d/2", "d/3", "d/4"] {
        store.put(&Path::from(key), PutPayload::from_static(b"x")).await?;
    }
    let after = |store: object_store::azure::MicrosoftAzure| async move {
        store
            .list_with_offset(Some(&Path::from("d")), &Path::from("d/2"))
            .map_ok(|m| m.location.to_string())
            .try_collect::<Vec<_>>()
            .await
    };
    let emulator = object_store::azure::MicrosoftAzureBuilder::new()
        .with_use_emulator(true)
        .with_account(&azurite.account)
        .with_access_key(&azurite.key)
        .with_container_name(&container)
        .build()?;
    assert_eq!(after(emulator).await?, ["d/3", "d/4"], "emulator mode");
    // Shown, not asserted: what the generic configuration gets from this Azurite.
    println!("list_with_offset(d/2) with the generic endpoint configuration: {:?}", after(store).await?);
    Ok(())
}

/// `url` with the value of query parameter `name` changed (its first character flipped).
fn tamper_signature(url: &str, name: &str) -> anyhow::Result<String> {
    let (base, query) = url.split_once('?').ok_or_else(|| anyhow::anyhow!("no query in {url}"))?;
    let pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| {
            let v = if k == name {
                let mut chars: Vec<char> = v.chars().collect();
                chars[0] = if chars[0] == 'A' { 'B' } else { 'A' };
                chars.into_iter().collect()
            } else {
                v.into_owned()
            };
            (k.into_owned(), v)
        })
        .collect();
    let query = form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish();
    Ok(format!("{base}?{query}"))
}
