//! The namespaces' own sender tokens: every namespace that has pipelines may hold a Secret
//! `zeroflow-sender-token` (key `token`); this task reads them into the map the gateway
//! authenticates senders with. A sender presenting one reaches only that namespace's pipelines
//! (see `gateway::auth::SenderScope`).
//!
//! Read at start and every [`REFRESH_PERIOD`], so a new, rotated or deleted token takes effect
//! within that time. A namespace that does not grant the operator Secrets
//! (`rbac.restrictSecretAccess`) simply has none. A task of its own, not a reconcile step: the
//! token belongs to the namespace, not to any one pipeline.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::Api;
use tracing::{debug, warn};

use crate::gateway::auth::{BearerToken, NamespaceTokens, SENDER_TOKEN_KEY, SENDER_TOKEN_SECRET};
use crate::runtime::Pipelines;

/// How often each namespace's sender token is read again.
pub const REFRESH_PERIOD: Duration = Duration::from_secs(15);

/// The token in a sender-token Secret's data: `None` when the key is absent, empty or not UTF-8.
pub fn token_from_data(data: &BTreeMap<String, ByteString>) -> Option<BearerToken> {
    let bytes = data.get(SENDER_TOKEN_KEY)?;
    let text = std::str::from_utf8(&bytes.0).ok()?;
    BearerToken::new(text).ok()
}

/// Reads the sender token of every namespace that has pipelines, now and every
/// [`REFRESH_PERIOD`]; forgets namespaces that have none left. Runs until the process ends.
pub async fn run(client: Client, pipelines: Arc<Pipelines>, tokens: NamespaceTokens) {
    let mut tick = tokio::time::interval(REFRESH_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let namespaces: BTreeSet<String> = pipelines.all().iter().map(|p| p.key.namespace.clone()).collect();
        for namespace in &namespaces {
            refresh(&client, &tokens, namespace).await;
        }
        tokens.keep_only(&namespaces);
    }
}

/// Reads `namespace`'s sender token into `tokens`. An unreadable Secret (the apiserver
/// unreachable) keeps what was known; a missing or forbidden one removes it.
async fn refresh(client: &Client, tokens: &NamespaceTokens, namespace: &str) {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    match secrets.get_opt(SENDER_TOKEN_SECRET).await {
        Ok(Some(secret)) => {
            let token = token_from_data(&secret.data.unwrap_or_default());
            if token.is_none() {
                warn!(namespace, "Secret {SENDER_TOKEN_SECRET} has no usable key {SENDER_TOKEN_KEY:?}: ignored");
            }
            tokens.set(namespace, token);
        }
        Ok(None) => tokens.set(namespace, None),
        Err(kube::Error::Api(status)) if status.code == 403 => {
            debug!(namespace, "no access to Secrets here: no namespace sender token");
            tokens.set(namespace, None);
        }
        Err(e) => warn!(namespace, error = %e, "cannot read the namespace's sender token; keeping the last one"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_non_empty_utf8_token_counts() {
        let data = |v: &[u8]| [(SENDER_TOKEN_KEY.to_owned(), ByteString(v.to_vec()))].into();
        assert!(token_from_data(&data(b"s3cret")).is_some_and(|t| t.check_presented(b"s3cret").is_ok()));
        assert!(token_from_data(&data(b"  s3cret\n")).is_some_and(|t| t.check_presented(b"s3cret").is_ok()));
        assert!(token_from_data(&data(b"  ")).is_none());
        assert!(token_from_data(&data(&[0xff, 0xfe])).is_none());
        assert!(token_from_data(&BTreeMap::new()).is_none());
    }
}
