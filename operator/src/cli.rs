//! Command-line flags. Every flag can also be set by environment variable, which is how the
//! Helm chart configures the operator.

use std::net::SocketAddr;
use std::path::PathBuf;

use std::sync::Arc;

use clap::Parser;
use object_store::StaticCredentialProvider;
use object_store::aws::{AwsCredential, AwsCredentialProvider};

use crate::gateway::GatewayArgs;
use crate::gateway::auth::BearerToken;
use crate::sources::SqsSettings;
use crate::sources::kafka::KafkaSettings;
use crate::sources::kafka::settings::{KafkaSasl, KafkaTls, SaslMechanism};
use crate::store::{DefaultStore, Identities, S3Config, S3Credentials, StoreConfig};
use crate::telemetry::LogFormat;

/// zeroflow operator: runs DataPipelines, scaling their workers from zero on storage events.
#[derive(Parser, Debug, Clone)]
#[command(name = "zeroflow-operator", version, about, long_about = None)]
pub struct Cli {
    /// Namespaces whose DataPipelines this operator runs, comma-separated; empty means all.
    #[arg(long, env = "ZEROFLOW_NAMESPACES", value_delimiter = ',', default_value = "")]
    pub namespaces: Vec<String>,

    /// Address of `/metrics`, `/livez` and `/readyz`.
    #[arg(long, env = "ZEROFLOW_METRICS_ADDR", default_value = "0.0.0.0:9090")]
    pub metrics_addr: SocketAddr,

    /// Address of the storage-event gateway (MinIO/S3 notifications, CloudEvents).
    #[arg(long, env = "ZEROFLOW_GATEWAY_ADDR", default_value = "0.0.0.0:8080")]
    pub gateway_addr: SocketAddr,

    /// File holding the bearer token storage-event senders must present (the chart mounts it
    /// from a Secret). Without it the gateway accepts unauthenticated events and says so at start.
    #[arg(long, env = "ZEROFLOW_GATEWAY_TOKEN_FILE")]
    pub gateway_token_file: Option<std::path::PathBuf>,

    /// Largest event request body the gateway accepts, in bytes; larger ones get 413.
    #[arg(long, env = "ZEROFLOW_GATEWAY_BODY_LIMIT", default_value_t = 1024 * 1024)]
    pub gateway_body_limit: usize,

    #[command(flatten)]
    pub gateway: GatewayArgs,

    /// Address of the work API that worker pods call (leases, heartbeats, outputs, results).
    #[arg(long, env = "ZEROFLOW_WORK_API_ADDR", default_value = "0.0.0.0:8081")]
    pub work_api_addr: SocketAddr,

    /// URL at which worker pods reach the work API (usually the operator's Service).
    #[arg(long, env = "ZEROFLOW_WORK_API_URL", default_value = "http://zeroflow.zeroflow-system.svc:8081")]
    pub work_api_url: String,

    /// Image with `zeroflow-runner` at `/zeroflow-runner`, mounted into worker pods as an image
    /// volume or copied by an init container (--runner-delivery).
    #[arg(long, env = "ZEROFLOW_RUNNER_IMAGE", default_value = concat!("ghcr.io/zeroflow-dev/zeroflow-runner:", env!("CARGO_PKG_VERSION")))]
    pub runner_image: String,

    /// How worker pods get the runner when their pipeline leaves it to the operator
    /// (`spec.transform.runner.delivery: Auto`): `auto` mounts the runner image as an image
    /// volume when the apiserver keeps them (the ImageVolume feature gate; a server-side dry run
    /// tells) and falls back to an init container otherwise, or for a pipeline whose workers
    /// could not start with one; `image-volume` and `init-container` always use that.
    #[arg(long, env = "ZEROFLOW_RUNNER_DELIVERY", value_enum, default_value = "auto")]
    pub runner_delivery: crate::controller::runner::OperatorDelivery,

    /// S3 endpoint used by DataPipelines that set no `spec.source.store`; credentials come from
    /// ZEROFLOW_DEFAULT_STORE_ACCESS_KEY_ID and ZEROFLOW_DEFAULT_STORE_SECRET_ACCESS_KEY, or,
    /// without them, from the operator's own AWS identity (IRSA, EKS Pod Identity, ...).
    #[arg(long, env = "ZEROFLOW_DEFAULT_STORE_ENDPOINT")]
    pub default_store_endpoint: Option<String>,

    /// Region of the default store.
    #[arg(long, env = "ZEROFLOW_DEFAULT_STORE_REGION", default_value = "us-east-1")]
    pub default_store_region: String,

    /// DataPipelines reconciled at the same time. Higher values converge a large fleet faster
    /// after a restart, at the cost of apiserver load and operator memory.
    #[arg(long, env = "ZEROFLOW_MAX_CONCURRENT_RECONCILES", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub max_concurrent_reconciles: u16,

    /// Most objects each pipeline holds pending or leased at once. Past it the gateway refuses
    /// events with 503 and Retry-After and the pipeline's bucket is listed again at once (a
    /// resync) to find what was refused. Bounds the operator's memory per pipeline.
    #[arg(long, env = "ZEROFLOW_BACKLOG_CAPACITY", default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub backlog_capacity: u64,

    /// Log format: `plain` for people, `json` for log pipelines. Filter with RUST_LOG.
    #[arg(long, env = "ZEROFLOW_LOG_FORMAT", value_enum, default_value = "plain")]
    pub log_format: LogFormat,

    /// Elect a leader among replicas with a Lease; only the leader reconciles and serves.
    #[arg(long, env = "ZEROFLOW_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_election: bool,

    /// Namespace of the leader Lease (defaults to the pod's namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub leader_election_namespace: String,

    /// Name of the leader Lease.
    #[arg(long, env = "ZEROFLOW_LEADER_ELECTION_ID", default_value = "zeroflow-operator-leader")]
    pub leader_election_id: String,

    /// Seconds the leader election Lease is valid without renewal (5 to 300); a follower takes
    /// over after it. The leader renews it at a third of its life and steps down (exits) when
    /// it cannot see a renewal a fifth of it (at most 2 s) before expiry, as client-go's renew
    /// deadline does. (Not the work lease of an object: that is each pipeline's
    /// `delivery.leaseDuration`.)
    #[arg(long, env = "ZEROFLOW_LEADER_ELECTION_LEASE_SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(5..=300))]
    pub leader_election_lease_seconds: u64,

    /// Identity of this replica in the Lease (defaults to the pod name, else the host name).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,

    /// SQS queues whose S3 notifications the leader consumes for every namespace (queue URLs,
    /// comma-separated or repeated); empty: none. Credentials come from
    /// ZEROFLOW_SQS_ACCESS_KEY_ID and ZEROFLOW_SQS_SECRET_ACCESS_KEY (and
    /// ZEROFLOW_SQS_SESSION_TOKEN for temporary keys), or, without them, from the operator's own
    /// AWS identity (IRSA, EKS Pod Identity, ...). Pipelines can also name their own queue
    /// (spec.source.events.sqs). See docs/sources/sqs.md.
    #[arg(long = "sqs-queue-url", env = "ZEROFLOW_SQS_QUEUE_URLS", value_delimiter = ',')]
    pub sqs_queue_urls: Vec<String>,

    /// Region SQS requests are signed for.
    #[arg(long, env = "ZEROFLOW_SQS_REGION", default_value = "us-east-1")]
    pub sqs_region: String,

    /// Seconds one SQS receive waits for a message (long polling, 1 to 20), for the
    /// operator's queues and the pipelines' own: a message is received as soon as it arrives
    /// either way; shorter waits only cost more requests.
    #[arg(long, env = "ZEROFLOW_SQS_WAIT_SECONDS", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub sqs_wait_seconds: u32,

    /// Kafka brokers (`host:port`, comma-separated) to consume storage notifications from, with
    /// --kafka-topic. See docs/sources/kafka.md.
    #[arg(long, env = "ZEROFLOW_KAFKA_BROKERS")]
    pub kafka_brokers: Option<String>,

    /// Kafka topics of storage notifications (MinIO's and Ceph's Kafka targets), comma-separated
    /// or repeated.
    #[arg(long = "kafka-topic", env = "ZEROFLOW_KAFKA_TOPICS", value_delimiter = ',')]
    pub kafka_topics: Vec<String>,

    /// Kafka consumer group whose committed offsets the leader resumes from.
    #[arg(long, env = "ZEROFLOW_KAFKA_GROUP_ID", default_value = "zeroflow-operator")]
    pub kafka_group_id: String,

    /// Reach the Kafka brokers over TLS (their certificates verified against --kafka-ca-file,
    /// else the system's CAs, and their names checked).
    #[arg(long, env = "ZEROFLOW_KAFKA_TLS")]
    pub kafka_tls: bool,

    /// PEM file of the CA certificates that sign the Kafka brokers' certificates (with --kafka-tls).
    #[arg(long, env = "ZEROFLOW_KAFKA_CA_FILE")]
    pub kafka_ca_file: Option<PathBuf>,

    /// PEM file of a client certificate for brokers that require one (with --kafka-tls and
    /// --kafka-client-key-file).
    #[arg(long, env = "ZEROFLOW_KAFKA_CLIENT_CERT_FILE")]
    pub kafka_client_cert_file: Option<PathBuf>,

    /// PEM file of the client certificate's private key (unencrypted).
    #[arg(long, env = "ZEROFLOW_KAFKA_CLIENT_KEY_FILE")]
    pub kafka_client_key_file: Option<PathBuf>,

    /// SASL mechanism to authenticate to the Kafka brokers with; the credentials come from
    /// ZEROFLOW_KAFKA_SASL_USERNAME and ZEROFLOW_KAFKA_SASL_PASSWORD (environment only, so they
    /// never appear on a command line). Unset: no SASL.
    #[arg(long, env = "ZEROFLOW_KAFKA_SASL_MECHANISM", value_enum)]
    pub kafka_sasl_mechanism: Option<SaslMechanism>,
}

/// The operator-level SQS consumers' credentials: both keys from the environment, or neither
/// and the operator's own AWS identity (IRSA, EKS Pod Identity, ...).
fn sqs_credentials(
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
    session_token: Option<String>,
    identity: Option<&AwsCredentialProvider>,
) -> Result<AwsCredentialProvider, String> {
    match (access_key_id, secret_access_key) {
        (Some(key_id), Some(secret_key)) => {
            Ok(Arc::new(StaticCredentialProvider::new(AwsCredential { key_id, secret_key, token: session_token })))
        }
        (None, None) => identity.cloned().ok_or_else(|| {
            "--sqs-queue-url without ZEROFLOW_SQS_ACCESS_KEY_ID and ZEROFLOW_SQS_SECRET_ACCESS_KEY needs an AWS \
             identity, and the operator has none"
                .to_owned()
        }),
        _ => Err("--sqs-queue-url needs both ZEROFLOW_SQS_ACCESS_KEY_ID and ZEROFLOW_SQS_SECRET_ACCESS_KEY, or \
                  neither (the operator's own AWS identity)"
            .into()),
    }
}

impl Cli {
    /// The default store, when one is configured, and the operator's own cloud identities.
    /// Credentials are read from the environment only, so they never appear on a command line.
    pub fn default_store(&self) -> Result<DefaultStore, String> {
        let identities = Identities::from_env();
        let Some(endpoint) = self.default_store_endpoint.clone().filter(|e| !e.is_empty()) else {
            return Ok(DefaultStore { store: None, identities });
        };
        let read = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let credentials =
            match (read("ZEROFLOW_DEFAULT_STORE_ACCESS_KEY_ID"), read("ZEROFLOW_DEFAULT_STORE_SECRET_ACCESS_KEY")) {
                (Some(access_key_id), Some(secret_access_key)) => {
                    S3Credentials::Keys { access_key_id, secret_access_key, session_token: None }
                }
                (None, None) => S3Credentials::Identity(identities.aws.clone().ok_or(
                    "--default-store-endpoint without ZEROFLOW_DEFAULT_STORE_ACCESS_KEY_ID and \
                 ZEROFLOW_DEFAULT_STORE_SECRET_ACCESS_KEY needs an AWS identity, and the operator has none",
                )?),
                _ => {
                    return Err("--default-store-endpoint needs both ZEROFLOW_DEFAULT_STORE_ACCESS_KEY_ID and \
                            ZEROFLOW_DEFAULT_STORE_SECRET_ACCESS_KEY, or neither"
                        .into());
                }
            };
        let store = S3Config {
            endpoint: Some(endpoint.trim_end_matches('/').to_owned()),
            region: self.default_store_region.clone(),
            path_style: true,
            credentials,
        };
        Ok(DefaultStore { store: Some(StoreConfig::S3(store)), identities })
    }

    /// The SQS consumers' settings, when queues are named. Credentials are read from the
    /// environment only, so they never appear on a command line; without them the operator's
    /// own AWS identity (`identity`) is used.
    pub fn sqs(&self, identity: Option<&AwsCredentialProvider>) -> Result<Option<SqsSettings>, String> {
        let queue_urls: Vec<String> =
            self.sqs_queue_urls.iter().map(|u| u.trim().to_owned()).filter(|u| !u.is_empty()).collect();
        if queue_urls.is_empty() {
            return Ok(None);
        }
        let read = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let credentials = sqs_credentials(
            read("ZEROFLOW_SQS_ACCESS_KEY_ID"),
            read("ZEROFLOW_SQS_SECRET_ACCESS_KEY"),
            read("ZEROFLOW_SQS_SESSION_TOKEN"),
            identity,
        )?;
        Ok(Some(SqsSettings {
            queue_urls,
            region: self.sqs_region.clone(),
            wait_seconds: self.sqs_wait_seconds,
            credentials,
        }))
    }

    /// The Kafka consumer's settings, when brokers are named. SASL credentials are read from the
    /// environment only, so they never appear on a command line; the files named must exist.
    pub fn kafka(&self) -> Result<Option<KafkaSettings>, String> {
        self.kafka_with(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
    }

    /// [`Cli::kafka`], with the environment read through `env`.
    fn kafka_with(&self, env: impl Fn(&str) -> Option<String>) -> Result<Option<KafkaSettings>, String> {
        let Some(brokers) = self.kafka_brokers.clone().filter(|b| !b.trim().is_empty()) else {
            return Ok(None);
        };
        let topics: Vec<String> =
            self.kafka_topics.iter().map(|t| t.trim().to_owned()).filter(|t| !t.is_empty()).collect();
        if topics.is_empty() {
            return Err("--kafka-brokers needs --kafka-topic".into());
        }
        if self.kafka_group_id.trim().is_empty() {
            return Err("--kafka-group-id is empty".into());
        }
        let readable = |flag: &str, path: &PathBuf| {
            std::fs::metadata(path).map(drop).map_err(|e| format!("{flag} {}: {e}", path.display()))
        };
        let tls = if self.kafka_tls {
            if let Some(ca) = &self.kafka_ca_file {
                readable("--kafka-ca-file", ca)?;
            }
            let client_cert = match (&self.kafka_client_cert_file, &self.kafka_client_key_file) {
                (Some(cert), Some(key)) => {
                    readable("--kafka-client-cert-file", cert)?;
                    readable("--kafka-client-key-file", key)?;
                    Some((cert.clone(), key.clone()))
                }
                (None, None) => None,
                _ => return Err("--kafka-client-cert-file and --kafka-client-key-file go together".into()),
            };
            Some(KafkaTls { ca_file: self.kafka_ca_file.clone(), client_cert })
        } else {
            if self.kafka_ca_file.is_some()
                || self.kafka_client_cert_file.is_some()
                || self.kafka_client_key_file.is_some()
            {
                return Err(
                    "--kafka-ca-file and --kafka-client-cert-file/--kafka-client-key-file need --kafka-tls".into()
                );
            }
            None
        };
        let (username, password) = (env("ZEROFLOW_KAFKA_SASL_USERNAME"), env("ZEROFLOW_KAFKA_SASL_PASSWORD"));
        let sasl = match (self.kafka_sasl_mechanism, username, password) {
            (Some(mechanism), Some(username), Some(password)) => Some(KafkaSasl { mechanism, username, password }),
            (Some(_), _, _) => {
                return Err(
                    "--kafka-sasl-mechanism needs ZEROFLOW_KAFKA_SASL_USERNAME and ZEROFLOW_KAFKA_SASL_PASSWORD".into(),
                );
            }
            (None, None, None) => None,
            (None, _, _) => {
                return Err("ZEROFLOW_KAFKA_SASL_USERNAME/ZEROFLOW_KAFKA_SASL_PASSWORD are set but --kafka-sasl-mechanism is not".into());
            }
        };
        Ok(Some(KafkaSettings { brokers, topics, group_id: self.kafka_group_id.clone(), tls, sasl }))
    }

    pub fn identity(&self) -> String {
        self.identity.clone().filter(|s| !s.is_empty()).unwrap_or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_owned())
                .unwrap_or_else(|_| format!("zeroflow-{}", std::process::id()))
        })
    }

    /// The gateway's expected token, read once at start.
    pub fn gateway_token(&self) -> Result<Option<BearerToken>, String> {
        let Some(path) = &self.gateway_token_file else { return Ok(None) };
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("--gateway-token-file {}: {e}", path.display()))?;
        BearerToken::new(text.trim()).map(Some).map_err(|_| format!("--gateway-token-file {} is empty", path.display()))
    }

    /// The namespaces to watch: `None` for all.
    pub fn watched_namespaces(&self) -> Vec<Option<String>> {
        let listed: Vec<_> = self.namespaces.iter().map(|n| n.trim()).filter(|n| !n.is_empty()).collect();
        if listed.is_empty() { vec![None] } else { listed.into_iter().map(|n| Some(n.to_owned())).collect() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_watch_all_namespaces_with_leader_election() {
        let cli = Cli::try_parse_from(["zeroflow-operator"]).expect("defaults parse");
        assert_eq!(cli.watched_namespaces(), vec![None]);
        assert!(cli.leader_election);
        assert_eq!(cli.log_format, LogFormat::Plain);
    }

    #[test]
    fn namespaces_are_comma_separated() {
        let cli = Cli::try_parse_from(["zeroflow-operator", "--namespaces", "a, b,,c", "--leader-election=false"])
            .expect("parses");
        assert_eq!(cli.watched_namespaces(), vec![Some("a".into()), Some("b".into()), Some("c".into())]);
        assert!(!cli.leader_election);
    }

    #[test]
    fn bad_values_are_refused_with_the_flag_name() {
        let err = Cli::try_parse_from(["zeroflow-operator", "--log-format", "xml"]).unwrap_err().to_string();
        assert!(err.contains("--log-format"), "{err}");
        let err = Cli::try_parse_from(["zeroflow-operator", "--metrics-addr", "nope"]).unwrap_err().to_string();
        assert!(err.contains("--metrics-addr"), "{err}");
    }

    #[test]
    fn queues_are_consumed_only_when_named() {
        let cli = Cli::try_parse_from(["zeroflow-operator"]).expect("defaults parse");
        assert!(cli.kafka().expect("no kafka").is_none());
        let cli = Cli::try_parse_from(["zeroflow-operator", "--kafka-brokers", "127.0.0.1:9092"]).expect("parse");
        assert_eq!(cli.kafka().unwrap_err(), "--kafka-brokers needs --kafka-topic");
        let args = ["zeroflow-operator", "--kafka-brokers", "k:9092", "--kafka-topic", "a,b", "--kafka-topic", "c"];
        let kafka = Cli::try_parse_from(args).expect("parse").kafka().expect("valid").expect("configured");
        assert_eq!(
            (kafka.topics, kafka.group_id.as_str()),
            (vec!["a".into(), "b".into(), "c".into()], "zeroflow-operator")
        );
        let err = Cli::try_parse_from(["zeroflow-operator", "--sqs-wait-seconds", "21"]).unwrap_err().to_string();
        assert!(err.contains("--sqs-wait-seconds"), "{err}");
    }

    #[tokio::test]
    async fn sqs_credentials_are_both_keys_or_the_operator_identity() {
        let keys = sqs_credentials(Some("AK".into()), Some("SK".into()), Some("T".into()), None).expect("keys");
        let credential = keys.get_credential().await.expect("static");
        assert_eq!((credential.key_id.as_str(), credential.token.as_deref()), ("AK", Some("T")));
        assert!(sqs_credentials(Some("AK".into()), None, None, None).unwrap_err().contains("both"));
        assert!(sqs_credentials(None, None, None, None).unwrap_err().contains("has none"));
        let identity = Identities::for_tests_with_aws().aws.expect("identity");
        let chosen = sqs_credentials(None, None, None, Some(&identity)).expect("identity");
        assert!(Arc::ptr_eq(&chosen, &identity), "the operator's own provider, shared");
    }

    fn kafka_cli(extra: &[&str]) -> Cli {
        let mut args = vec!["zeroflow-operator", "--kafka-brokers", "k:9093", "--kafka-topic", "t"];
        args.extend_from_slice(extra);
        Cli::try_parse_from(args).expect("parse")
    }

    #[test]
    fn kafka_tls_takes_a_ca_and_an_optional_client_certificate_that_must_exist() {
        let no_env = |_: &str| None;
        let dir = std::env::temp_dir().join(format!("zf-cli-kafka-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let ca = dir.join("ca.crt");
        std::fs::write(&ca, "pem").expect("write");
        let ca = ca.to_str().expect("utf-8");
        let kafka = kafka_cli(&["--kafka-tls", "--kafka-ca-file", ca]).kafka_with(no_env).expect("valid").expect("on");
        assert_eq!(kafka.tls, Some(KafkaTls { ca_file: Some(ca.into()), client_cert: None }));
        assert_eq!(kafka.security_protocol(), "ssl");
        let err = kafka_cli(&["--kafka-ca-file", ca]).kafka_with(no_env).unwrap_err();
        assert!(err.contains("need --kafka-tls"), "{err}");
        let err = kafka_cli(&["--kafka-tls", "--kafka-client-cert-file", ca]).kafka_with(no_env).unwrap_err();
        assert!(err.contains("go together"), "{err}");
        let missing = dir.join("missing.crt");
        let err = kafka_cli(&["--kafka-tls", "--kafka-ca-file", missing.to_str().expect("utf-8")])
            .kafka_with(no_env)
            .unwrap_err();
        assert!(err.starts_with("--kafka-ca-file") && err.contains("missing.crt"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn kafka_sasl_credentials_come_from_the_environment_with_a_mechanism() {
        let both = |name: &str| match name {
            "ZEROFLOW_KAFKA_SASL_USERNAME" => Some("zf".to_owned()),
            "ZEROFLOW_KAFKA_SASL_PASSWORD" => Some("pw".to_owned()),
            _ => None,
        };
        let kafka = kafka_cli(&["--kafka-sasl-mechanism", "SCRAM-SHA-512"]).kafka_with(both).expect("valid");
        let sasl = kafka.and_then(|k| k.sasl).expect("sasl");
        assert_eq!(
            (sasl.mechanism, sasl.username.as_str(), sasl.password.as_str()),
            (SaslMechanism::ScramSha512, "zf", "pw")
        );
        let err = kafka_cli(&["--kafka-sasl-mechanism", "PLAIN"]).kafka_with(|_| None).unwrap_err();
        assert!(err.contains("needs ZEROFLOW_KAFKA_SASL_USERNAME"), "{err}");
        let err = kafka_cli(&[]).kafka_with(both).unwrap_err();
        assert!(err.contains("--kafka-sasl-mechanism is not"), "{err}");
        let err =
            Cli::try_parse_from(["zeroflow-operator", "--kafka-sasl-mechanism", "GSSAPI"]).unwrap_err().to_string();
        assert!(err.contains("--kafka-sasl-mechanism"), "{err}");
    }
}
