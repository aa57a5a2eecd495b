//! The pipeline's own SQS queue (`spec.source.events.sqs`): its settings and credentials
//! resolved (the Secret read, or the operator's identity chosen), handed to the queue registry
//! ([`crate::sources::sqs::pipelines`]), which runs the consumer and reports `status.queue`.

use kube::ResourceExt;

use super::Context;
use super::source::read_secret;
use crate::api::{DataPipeline, SqsSourceSpec};
use crate::sources::sqs::pipelines::{QueueCredentials, QueueProblem, QueueWant, Wanted, region_of};
use crate::store::s3::{ACCESS_KEY_ID, SECRET_ACCESS_KEY, SESSION_TOKEN};
use crate::store::{SecretData, StoreError, required_secret_text, secret_text};

/// Tells the registry what `pipeline` wants: its queue, a problem with it, or none. True when
/// the Secret could not be read for a reason that may clear up by itself (created later,
/// access granted later): the pipeline is then looked at again soon.
pub async fn hand_over(ctx: &Context, pipeline: &DataPipeline) -> bool {
    let key = super::settings::pipeline_key(pipeline);
    let (wanted, recheck) = match pipeline.spec.source.events.as_ref().and_then(|e| e.sqs.as_ref()) {
        None => (None, false),
        Some(spec) => {
            let (wanted, recheck) = resolve(ctx, &pipeline.namespace().unwrap_or_default(), spec).await;
            (Some(wanted), recheck)
        }
    };
    ctx.queues.want(&key, wanted);
    recheck
}

async fn resolve(ctx: &Context, namespace: &str, spec: &SqsSourceSpec) -> (Wanted, bool) {
    let secret = match &spec.credentials_secret_ref {
        None => None,
        Some(reference) => match read_secret(ctx, namespace, &reference.name).await {
            Ok(data) => Some((reference.name.as_str(), data)),
            Err(e) => return (Err(problem(spec, &e)), e.may_clear_up()),
        },
    };
    let has_identity = ctx.default_store.identities.aws.is_some();
    (want(namespace, spec, secret.as_ref().map(|(name, data)| (*name, data)), has_identity), false)
}

/// The want for `spec` of a pipeline in `namespace`, with the keys of its Secret (`secret`:
/// its name and data) or the operator's identity (`has_identity`: whether it has one).
pub fn want(namespace: &str, spec: &SqsSourceSpec, secret: Option<(&str, &SecretData)>, has_identity: bool) -> Wanted {
    let credentials = match secret {
        Some((name, data)) => QueueCredentials::Keys {
            access_key_id: required_secret_text(name, data, ACCESS_KEY_ID).map_err(|e| problem(spec, &e))?,
            secret_access_key: required_secret_text(name, data, SECRET_ACCESS_KEY).map_err(|e| problem(spec, &e))?,
            session_token: secret_text(name, data, SESSION_TOKEN)
                .map_err(|e| problem(spec, &e))?
                .filter(|t| !t.is_empty()),
        },
        None if has_identity => QueueCredentials::Identity,
        None => return Err(problem(spec, &StoreError::NoIdentity("AWS identity"))),
    };
    Ok(QueueWant {
        namespace: namespace.to_owned(),
        queue_url: spec.queue_url.trim().to_owned(),
        endpoint: spec.endpoint.as_ref().map(|e| e.trim().to_owned()).filter(|e| !e.is_empty()),
        region: spec.region.clone().filter(|r| !r.is_empty()).unwrap_or_else(|| region_of(&spec.queue_url)),
        credentials,
    })
}

/// A Secret or identity problem, with the store's reasons (`SecretNotFound`, ...).
fn problem(spec: &SqsSourceSpec, error: &StoreError) -> QueueProblem {
    QueueProblem { queue_url: spec.queue_url.clone(), reason: error.reason(), message: error.to_string() }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::ByteString;
    use k8s_openapi::api::core::v1::LocalObjectReference;

    use super::*;

    fn spec() -> SqsSourceSpec {
        SqsSourceSpec {
            queue_url: "https://sqs.eu-west-1.amazonaws.com/123456789012/events".into(),
            region: None,
            endpoint: None,
            credentials_secret_ref: Some(LocalObjectReference { name: "sqs".into() }),
        }
    }

    #[test]
    fn a_secret_gives_keys_and_the_region_comes_from_the_url() {
        let data: SecretData = [
            (ACCESS_KEY_ID.to_owned(), ByteString(b"AK\n".to_vec())),
            (SECRET_ACCESS_KEY.to_owned(), ByteString(b"SK".to_vec())),
        ]
        .into();
        let want = want("team", &spec(), Some(("sqs", &data)), false).expect("want");
        assert_eq!(want.region, "eu-west-1");
        assert_eq!(
            want.credentials,
            QueueCredentials::Keys { access_key_id: "AK".into(), secret_access_key: "SK".into(), session_token: None }
        );
    }

    #[test]
    fn without_a_secret_the_operator_identity_is_used_or_its_absence_reported() {
        let mut spec = spec();
        spec.credentials_secret_ref = None;
        spec.region = Some("us-west-2".into());
        let want = want("team", &spec, None, true).expect("want");
        assert_eq!((want.credentials, want.region.as_str()), (QueueCredentials::Identity, "us-west-2"));
        let missing = super::want("team", &spec, None, false).expect_err("no identity");
        assert_eq!(missing.reason, "NoCredentials");
    }

    #[test]
    fn a_secret_without_its_keys_is_reported() {
        let data: SecretData = [(ACCESS_KEY_ID.to_owned(), ByteString(b"AK".to_vec()))].into();
        let problem = want("team", &spec(), Some(("sqs", &data)), true).expect_err("incomplete");
        assert_eq!(problem.reason, "SecretMissingKey");
        assert!(problem.message.contains("secretAccessKey"), "{}", problem.message);
    }
}
