//! The `DataPipeline` custom resource (`zeroflow.dev/v1alpha1`).
//!
//! These types are the single source of truth for the API: `crds/` is generated from them by
//! `crdgen`, and every `///` comment on a field becomes the description `kubectl explain` shows.
//! Developer notes therefore use `//`.

pub mod conditions;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, EnvVar, LocalObjectReference, ResourceRequirements, Toleration, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use serde::{Deserialize, Serialize};

pub use zeroflow_contract::duration::{self, format_duration, parse_duration};
pub use zeroflow_contract::worker::Contract;
pub use zeroflow_core::scaling::usage::Usage;

/// The API group of every zeroflow resource.
pub const GROUP: &str = "zeroflow.dev";

/// Annotation that re-drives failed objects: set it to any new value, for example
/// `kubectl annotate dp NAME zeroflow.dev/redrive="$(date +%s)" --overwrite`. Each value is
/// acted on once (`status.lastRedrive` records it).
pub const REDRIVE_ANNOTATION: &str = "zeroflow.dev/redrive";

/// Annotation that narrows the next re-drive to failed objects whose key starts with its value
/// (a whole key re-drives that object and any whose key extends it). Without it a re-drive
/// covers every failed object.
pub const REDRIVE_PREFIX_ANNOTATION: &str = "zeroflow.dev/redrive-prefix";

/// Annotation that pauses a pipeline: `"true"` or `"false"`. While paused, storage events are
/// still admitted and recorded, nothing is leased (leases already held run to their end), and
/// the workers go to zero, or to `zeroflow.dev/paused-replicas`. The same names and meaning as
/// KEDA's `autoscaling.keda.sh/paused` and `paused-replicas`.
pub const PAUSED_ANNOTATION: &str = "zeroflow.dev/paused";

/// Annotation with the worker count to hold while paused (`0` to `spec.scaling.maxReplicas`);
/// setting it pauses the pipeline even without `zeroflow.dev/paused`, as in KEDA.
pub const PAUSED_REPLICAS_ANNOTATION: &str = "zeroflow.dev/paused-replicas";

/// A DataPipeline runs a transform on every object that lands in a bucket: storage events scale
/// its workers up from zero at once, each object is processed by exactly one worker, every result
/// is recorded in the object store, and the workers scale back to zero when idle.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "zeroflow.dev",
    version = "v1alpha1",
    kind = "DataPipeline",
    plural = "datapipelines",
    shortname = "dp",
    category = "zeroflow",
    namespaced,
    status = "DataPipelineStatus",
    derive = "PartialEq",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Active","type":"string","jsonPath":".status.conditions[?(@.type==\"Active\")].status"}"#,
    printcolumn = r#"{"name":"Paused","type":"string","jsonPath":".status.conditions[?(@.type==\"Paused\")].status"}"#,
    printcolumn = r#"{"name":"Replicas","type":"integer","jsonPath":".status.replicas"}"#,
    printcolumn = r#"{"name":"Pending","type":"integer","jsonPath":".status.pending"}"#,
    printcolumn = r#"{"name":"Succeeded","type":"integer","jsonPath":".status.succeeded"}"#,
    printcolumn = r#"{"name":"Failed","type":"integer","jsonPath":".status.failed"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Bucket","type":"string","priority":1,"jsonPath":".spec.source.bucket"}"#,
    printcolumn = r#"{"name":"Image","type":"string","priority":1,"jsonPath":".spec.transform.image"}"#,
    validation = Rule::new("size(self.metadata.name) <= 52").message("metadata.name must be at most 52 characters: it names the worker Deployment, its pods and labels"),
)]
#[x_kube(
    validation = Rule::new("!has(self.sink) || (has(self.sink.bucket) && self.sink.bucket != self.source.bucket) || size(self.sink.prefix) > 0")
        .message("sink.prefix must not be empty when the sink is the source bucket, or outputs would be processed again"),
)]
#[serde(rename_all = "camelCase")]
pub struct DataPipelineSpec {
    /// Where the input objects come from.
    pub source: SourceSpec,
    /// Where outputs are written. Defaults to the source bucket under `zeroflow-output/`.
    #[serde(default)]
    pub sink: SinkSpec,
    /// The container that processes one object at a time.
    pub transform: TransformSpec,
    /// How many workers run, and when they scale to zero.
    #[serde(default)]
    pub scaling: ScalingSpec,
    /// Retries and leases.
    #[serde(default)]
    pub delivery: DeliverySpec,
}

/// The bucket to watch and which of its objects to process. Never processed, whatever the
/// filter: keys under `.zeroflow/` (zeroflow's ledgers, of any pipeline), folder placeholders
/// (keys ending in `/`), the pipeline's own outputs, and notifications that change only an
/// object's metadata (tags, retention, legal hold). A pipeline whose outputs would come back to
/// its own source through other pipelines (a cycle) is stopped and reported.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(
    validation = Rule::new("!self.bucket.contains('_') || (has(self.store) && has(self.store.gcs))")
        .message("bucket names may contain underscores only on GCS (store.gcs)"),
    validation = Rule::new("!has(self.store) || !has(self.store.azure) || self.bucket.matches('^[a-z0-9]+(-[a-z0-9]+)*$')")
        .message("an Azure container name has 3-63 lowercase letters, digits and single hyphens, and starts and ends with a letter or digit"),
)]
#[serde(rename_all = "camelCase")]
pub struct SourceSpec {
    /// Name of the bucket to process objects from (the container, on Azure Blob Storage).
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]$')").message("bucket must be a valid bucket name: 3-63 lowercase letters, digits, dots and hyphens (underscores on GCS)"))]
    pub bucket: String,
    /// Only objects whose key starts with this prefix are processed (for example `incoming/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Only objects whose key ends with this suffix are processed (for example `.csv`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suffix: Option<String>,
    /// How to reach the object store. Defaults to the store configured when zeroflow was installed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<StoreSpec>,
    /// How often the bucket is listed and compared with the ledger, to find objects whose
    /// notifications were lost. `0s` disables the periodic resync (it still runs at start-up).
    #[serde(default = "default_resync_interval")]
    #[schemars(length(max = 32))]
    #[x_kube(
        validation = Rule::new(duration::DURATION_CEL).message(duration::DURATION_MESSAGE),
        validation = Rule::new(duration::MAX_DURATION_CEL).message(duration::MAX_DURATION_MESSAGE),
    )]
    pub resync_interval: String,
    /// Process objects that were already in the bucket when the pipeline was created.
    /// When false, only objects newer than the pipeline are processed.
    #[serde(default = "default_true")]
    pub backfill: bool,
    /// Where the bucket's notifications come from, when zeroflow fetches them itself (an SQS
    /// queue). Without it, notifications are pushed to the gateway, or come from the queues the
    /// operator itself is configured with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<EventsSpec>,
}

/// Notifications zeroflow fetches for this pipeline.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct EventsSpec {
    /// An SQS queue the bucket's S3 event notifications are delivered to (directly, or through an
    /// SNS topic). The operator's leader long-polls it and deletes each message once its records
    /// are admitted. Its records are admitted only into pipelines of this namespace (routed by
    /// bucket, prefix and suffix like any notification), and one queue can be named by several
    /// pipelines of one namespace; a queue already consumed for another namespace is refused.
    /// `status.queue` shows whether it is being consumed, or why not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sqs: Option<SqsSourceSpec>,
}

/// One SQS queue, named as the AWS SDKs and KEDA's `aws-sqs-queue` scaler name it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SqsSourceSpec {
    /// The queue's URL, as `aws sqs get-queue-url` prints it:
    /// `https://sqs.<region>.amazonaws.com/<account>/<name>`.
    #[schemars(length(max = 1024))]
    #[x_kube(validation = Rule::new("self.matches('^https?://[^\\\\s/]+/[^\\\\s]+$')").message("queueUrl must be an http:// or https:// queue URL such as https://sqs.eu-west-1.amazonaws.com/123456789012/my-queue"))]
    pub queue_url: String,
    /// Region to sign requests for. Defaults to the region in an AWS queue URL
    /// (`sqs.<region>.amazonaws.com`), else `us-east-1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9-]+$')").message("region must be an AWS region name such as eu-west-1"))]
    pub region: Option<String>,
    /// URL requests are sent to instead of the queue URL's own host: a VPC endpoint, a FIPS
    /// endpoint or an SQS-compatible service. The queue is still named by `queueUrl`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^https?://[^\\\\s/]+/?$')").message("endpoint must be an http:// or https:// URL without a path"))]
    pub endpoint: Option<String>,
    /// Secret in the pipeline's namespace with the keys `accessKeyId` and `secretAccessKey`
    /// (and `sessionToken` for temporary keys), of an identity allowed `sqs:ReceiveMessage` and
    /// `sqs:DeleteMessage` on the queue. Without it the operator uses its own AWS identity
    /// through the standard chain, as for stores (IRSA, EKS Pod Identity, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<LocalObjectReference>,
}

/// The object store that holds a bucket: exactly one of `s3`, `azure` or `gcs`. Credentials
/// are only ever referenced (a Secret in the pipeline's namespace, read by the operator alone),
/// or not given at all, in which case the operator uses its own cloud identity. Workers never
/// get credentials: each object is handed to them as a signed URL.
///
/// The fields `endpoint`, `region`, `credentialsSecretRef` and `pathStyle` directly under
/// `store` are the older spelling of `s3` and still accepted; they need `endpoint`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(
    validation = Rule::new("[has(self.s3), has(self.azure), has(self.gcs), has(self.endpoint)].filter(x, x).size() == 1")
        .message("store must set exactly one of s3, azure or gcs"),
    validation = Rule::new("has(self.endpoint) || !(has(self.region) || has(self.credentialsSecretRef) || has(self.pathStyle))")
        .message("region, credentialsSecretRef and pathStyle directly under store belong to its older S3 form, which needs endpoint; set them inside s3 instead"),
)]
#[serde(rename_all = "camelCase")]
pub struct StoreSpec {
    /// An S3-compatible store: AWS S3, MinIO, Ceph RGW, GCS's S3 interoperability, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3StoreSpec>,
    /// Azure Blob Storage (the bucket is the container).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure: Option<AzureStoreSpec>,
    /// Google Cloud Storage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gcs: Option<GcsStoreSpec>,
    /// Deprecated: use `s3.endpoint`. URL of an S3 API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^https?://[^\\\\s/]+(/.*)?$')").message("endpoint must be an http:// or https:// URL"))]
    pub endpoint: Option<String>,
    /// Deprecated: use `s3.region`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Deprecated: use `s3.credentialsSecretRef`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<LocalObjectReference>,
    /// Deprecated: use `s3.pathStyle`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_style: Option<bool>,
}

/// Which store a [`StoreSpec`] names, with the older S3 spelling folded into `S3`.
#[derive(Clone, Debug, PartialEq)]
pub enum StoreKind<'a> {
    S3(std::borrow::Cow<'a, S3StoreSpec>),
    Azure(&'a AzureStoreSpec),
    Gcs(&'a GcsStoreSpec),
}

impl StoreSpec {
    /// The one store this spec names; `Err` says what is wrong (the CRD's CEL rules refuse the
    /// same specs, this guards against an older CRD).
    pub fn kind(&self) -> Result<StoreKind<'_>, String> {
        let legacy = self.endpoint.as_ref().map(|endpoint| S3StoreSpec {
            endpoint: Some(endpoint.clone()),
            region: self.region.clone().unwrap_or_else(default_region),
            credentials_secret_ref: self.credentials_secret_ref.clone(),
            path_style: self.path_style,
        });
        match (&self.s3, &self.azure, &self.gcs, legacy) {
            (Some(s3), None, None, None) => Ok(StoreKind::S3(std::borrow::Cow::Borrowed(s3))),
            (None, Some(azure), None, None) => Ok(StoreKind::Azure(azure)),
            (None, None, Some(gcs), None) => Ok(StoreKind::Gcs(gcs)),
            (None, None, None, Some(s3)) => Ok(StoreKind::S3(std::borrow::Cow::Owned(s3))),
            _ => Err("store must set exactly one of s3, azure or gcs".into()),
        }
    }
}

/// An S3-compatible store.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct S3StoreSpec {
    /// URL of the S3 API, for example `http://minio.storage:9000` or
    /// `https://s3.eu-west-1.amazonaws.com`. Defaults to AWS S3 in `region`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^https?://[^\\\\s/]+(/.*)?$')").message("endpoint must be an http:// or https:// URL"))]
    pub endpoint: Option<String>,
    /// Region to sign requests for.
    #[serde(default = "default_region")]
    pub region: String,
    /// Secret in the pipeline's namespace with the keys `accessKeyId` and `secretAccessKey`
    /// (and `sessionToken` for temporary keys). Without it the operator uses its own AWS identity
    /// through the standard chain: `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY` in its
    /// environment, a web identity token (IRSA, or any OIDC issuer the store trusts), EKS Pod
    /// Identity or ECS container credentials, then the EC2 instance metadata service. Signed
    /// URLs made with temporary credentials carry their session token and expire with them at
    /// the latest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<LocalObjectReference>,
    /// Address buckets as `<endpoint>/<bucket>` (path style, what MinIO and Ceph expect) rather
    /// than `<bucket>.<endpoint>` (virtual-hosted style). Defaults to path style when `endpoint`
    /// is set, virtual-hosted style on AWS S3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_style: Option<bool>,
}

/// An Azure Blob Storage account.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AzureStoreSpec {
    /// Name of the storage account.
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]{3,24}$')").message("accountName must be 3-24 lowercase letters and digits"))]
    pub account_name: String,
    /// URL of the account's Blob service. Defaults to
    /// `https://<accountName>.blob.core.windows.net`; set it for other clouds, private endpoints
    /// or Azurite (`http://azurite:10000/<accountName>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^https?://[^\\\\s/]+(/.*)?$')").message("endpoint must be an http:// or https:// URL"))]
    pub endpoint: Option<String>,
    /// Secret in the pipeline's namespace with one of the keys `accountKey` (the account's
    /// access key; workers get a service SAS per object) or `sasToken` (a SAS for the container
    /// with read, write, list and delete permissions; workers get URLs that carry this SAS, so
    /// it grants them what it grants zeroflow until it expires). Without it the operator uses
    /// its Azure workload identity (`AZURE_CLIENT_ID`, `AZURE_TENANT_ID`,
    /// `AZURE_FEDERATED_TOKEN_FILE`, as the workload identity webhook sets them), which needs
    /// the roles Storage Blob Data Contributor and Storage Blob Delegator; workers get a user
    /// delegation SAS per object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<LocalObjectReference>,
}

/// Google Cloud Storage.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct GcsStoreSpec {
    /// Secret in the pipeline's namespace with the key `serviceAccountKey`: a service
    /// account's JSON key file. Workers get V4 signed URLs signed with its private key. Without
    /// it the operator uses its own identity (GKE Workload Identity, or application default
    /// credentials), and URLs are signed by the IAM Credentials API, which needs the role
    /// Service Account Token Creator on that service account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<LocalObjectReference>,
    /// URL of the GCS API. Defaults to `https://storage.googleapis.com`; set it for emulators
    /// or private endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^https?://[^\\\\s/]+(/.*)?$')").message("endpoint must be an http:// or https:// URL"))]
    pub endpoint: Option<String>,
}

/// Where the outputs of the transform go.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SinkSpec {
    /// Bucket that receives outputs. Defaults to the source bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
    /// Prefix put before every output key; the output of `in/a.csv` named `a.json` is written to
    /// `<prefix>in/a.csv/a.json`.
    #[serde(default = "default_sink_prefix")]
    pub prefix: String,
    /// How to reach the sink's store. Defaults to the source's store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<StoreSpec>,
}

impl Default for SinkSpec {
    fn default() -> Self {
        Self { bucket: None, prefix: default_sink_prefix(), store: None }
    }
}

/// The container that processes objects. Any image works: zeroflow adds its runner next to it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TransformSpec {
    /// Container image of the transform.
    #[x_kube(validation = Rule::new("size(self) > 0").message("image must not be empty"))]
    pub image: String,
    /// Command run once per object. The image's entrypoint is not used; when empty, the
    /// executable `transform` on the image's PATH is run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Arguments appended to the command.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// How the object is handed to the command: `exec` (a file in, files out) or `stdio`
    /// (stdin in, stdout out).
    #[serde(default)]
    pub contract: Contract,
    /// Longest time one object may take; the command is killed when it runs longer, and the
    /// attempt counts as failed.
    #[serde(default = "default_timeout")]
    #[schemars(length(max = 32))]
    #[x_kube(
        validation = Rule::new(duration::DURATION_CEL).message(duration::DURATION_MESSAGE),
        validation = Rule::new(duration::POSITIVE_CEL).message(duration::POSITIVE_MESSAGE),
        validation = Rule::new(duration::MAX_DURATION_CEL).message(duration::MAX_DURATION_MESSAGE),
    )]
    pub timeout: String,
    /// Extra environment variables for the command.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    /// CPU and memory for each worker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Image pull policy of the transform container (`Always`, `IfNotPresent` or `Never`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self in ['Always', 'IfNotPresent', 'Never']").message("imagePullPolicy must be Always, IfNotPresent or Never"))]
    pub image_pull_policy: Option<String>,
    /// Optional settings merged into the worker pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_template: Option<PodTemplateOverlay>,
    /// How `zeroflow-runner`, which wraps the command, gets into the worker pods. Default:
    /// chosen by the operator (`delivery: Auto`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner: Option<RunnerSpec>,
}

/// How `zeroflow-runner` reaches the transform container. `status.runnerDelivery` says which
/// way the workers use, and the `RunnerFallback` condition why, when it is not an image volume.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!has(self.path) || self.delivery == 'InImage'").message("runner.path is only used with delivery: InImage"),
)]
pub struct RunnerSpec {
    /// `Auto` (default): the operator's setting (`--runner-delivery`, chart value
    /// `runnerDelivery`), which by default is an image volume where the cluster supports them,
    /// else an init container. `ImageVolume`: the runner image is mounted read-only at
    /// `/zeroflow/bin` (a Kubernetes image volume: the `ImageVolume` feature gate, beta and off
    /// by default in 1.33 and 1.34, and a runtime that supports it, such as containerd 2.1 or
    /// CRI-O 1.31); nothing runs before the transform container. `InitContainer`: an init
    /// container copies the runner into an emptyDir first (any cluster; the kubelet starts the
    /// transform container only after noticing the copy ended, about 1 s later). `InImage`:
    /// the transform image already holds the runner at `path`; nothing is added to the pod.
    #[serde(default)]
    pub delivery: RunnerDelivery,
    /// With `delivery: InImage`: the runner's absolute path in the transform image (default
    /// `/usr/local/bin/zeroflow-runner`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    #[x_kube(validation = Rule::new("self.startsWith('/')").message("runner.path must be absolute"))]
    pub path: Option<String>,
}

/// The ways `zeroflow-runner` can reach the transform container ([`RunnerSpec::delivery`]).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema)]
pub enum RunnerDelivery {
    #[default]
    Auto,
    ImageVolume,
    InitContainer,
    InImage,
}

/// Where `delivery: InImage` looks for the runner when `runner.path` is not set.
pub const DEFAULT_IN_IMAGE_RUNNER_PATH: &str = "/usr/local/bin/zeroflow-runner";

/// Pod settings merged into every worker pod. Lists are appended to what zeroflow sets; maps
/// are merged, with zeroflow's own labels winning.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PodTemplateOverlay {
    /// Extra labels for worker pods.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Extra annotations for worker pods.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Nodes the workers may run on.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Taints the workers tolerate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Scheduling affinity of the workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// Priority class of the worker pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
    /// Secrets used to pull the transform image.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_pull_secrets: Vec<LocalObjectReference>,
    /// Extra volumes for the worker pods. hostPath volumes are refused: workers never see the
    /// node's filesystem. Names starting with `zeroflow-` are reserved.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    #[x_kube(
        validation = Rule::new("self.all(v, !has(v.hostPath))").message("hostPath volumes are not allowed in worker pods"),
        validation = Rule::new("self.all(v, !v.name.startsWith('zeroflow-'))").message("volume names starting with zeroflow- are reserved"),
    )]
    pub volumes: Vec<Volume>,
    /// Where the extra volumes are mounted in the transform container (not under `/zeroflow`,
    /// which is reserved).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new("self.all(m, !m.mountPath.startsWith('/zeroflow'))").message("mount paths under /zeroflow are reserved"))]
    pub volume_mounts: Vec<VolumeMount>,
    /// Seconds a worker gets to finish its objects after it is asked to stop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 0").message("terminationGracePeriodSeconds must not be negative"))]
    pub termination_grace_period_seconds: Option<i64>,
}

/// How many workers run. Workers scale up from zero the moment an object arrives.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("self.minReplicas <= self.maxReplicas").message("minReplicas must be less than or equal to maxReplicas"))]
#[x_kube(validation = Rule::new("!has(self.schedules) || self.schedules.all(w, w.minReplicas <= self.maxReplicas)").message("minReplicas of a schedule must not exceed maxReplicas"))]
#[serde(rename_all = "camelCase")]
pub struct ScalingSpec {
    /// Workers kept running even when idle. 0 lets the pipeline scale to zero.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self >= 0").message("minReplicas must not be negative"))]
    pub min_replicas: i32,
    /// Most workers run at once.
    #[serde(default = "default_max_replicas")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 1000").message("maxReplicas must be between 1 and 1000"))]
    pub max_replicas: i32,
    /// Pending plus in-flight objects per worker before another worker is added.
    #[serde(default = "default_target_per_replica")]
    #[x_kube(validation = Rule::new("self >= 1").message("targetPerReplica must be at least 1"))]
    pub target_per_replica: i32,
    /// Objects one worker processes at the same time.
    #[serde(default = "default_one")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 64").message("concurrencyPerReplica must be between 1 and 64"))]
    pub concurrency_per_replica: i32,
    /// Time with nothing pending or in flight before the workers scale to minReplicas.
    #[serde(default = "default_idle_timeout")]
    #[schemars(length(max = 32))]
    #[x_kube(
        validation = Rule::new(duration::DURATION_CEL).message(duration::DURATION_MESSAGE),
        validation = Rule::new(duration::MAX_DURATION_CEL).message(duration::MAX_DURATION_MESSAGE),
    )]
    pub idle_timeout: String,
    /// Scale-down uses the highest replica count wanted during this window, so a short lull does
    /// not remove workers that are needed again a moment later.
    #[serde(default = "default_stabilization")]
    #[schemars(length(max = 32))]
    #[x_kube(
        validation = Rule::new(duration::DURATION_CEL).message(duration::DURATION_MESSAGE),
        validation = Rule::new(duration::MAX_DURATION_CEL).message(duration::MAX_DURATION_MESSAGE),
    )]
    pub scale_down_stabilization: String,
    /// Warm windows ("provisioned concurrency"): while one is open, at least its `minReplicas`
    /// workers run even with nothing to do, so objects arriving then find a warm worker. When
    /// several are open the highest minimum applies; `minReplicas` above still applies always.
    /// At most 20. Shown in `status.activeSchedule`, with an Event when a window opens or closes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub schedules: Vec<WarmWindowSpec>,
}

/// One warm window: from each start of `schedule`, read in `timeZone`, for `duration`, keep at
/// least `minReplicas` workers running. A schedule and a duration rather than KEDA's cron
/// scaler's start and end schedules: one expression cannot disagree with itself.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WarmWindowSpec {
    /// When the window opens: a cron expression of five fields, minute hour day-of-month month
    /// day-of-week, as in CronJobs (`0 8 * * 1-5`: 08:00 Monday to Friday), or one of `@hourly`,
    /// `@daily`, `@weekly`, `@monthly`, `@yearly`.
    #[schemars(length(max = 100))]
    #[x_kube(validation = Rule::new(SCHEDULE_CEL).message(SCHEDULE_MESSAGE))]
    pub schedule: String,
    /// The IANA time zone the schedule is read in, e.g. `Europe/Paris`; `UTC` by default. Starts
    /// follow the zone's wall clock across daylight-saving changes.
    #[serde(default = "default_time_zone")]
    #[schemars(length(max = 64))]
    #[x_kube(validation = Rule::new(TIME_ZONE_CEL).message(TIME_ZONE_MESSAGE))]
    pub time_zone: String,
    /// How long the window stays open after each start (elapsed time, so an 8h window across a
    /// daylight-saving change still lasts 8 hours), more than 0s and at most 168h.
    #[schemars(length(max = 32))]
    #[x_kube(
        validation = Rule::new(duration::DURATION_CEL).message(duration::DURATION_MESSAGE),
        validation = Rule::new(duration::MAX_DURATION_CEL).message(duration::MAX_DURATION_MESSAGE),
        validation = Rule::new(duration::POSITIVE_CEL).message("duration must be longer than 0s"),
    )]
    pub duration: String,
    /// Workers kept running while the window is open (at most `maxReplicas`).
    #[x_kube(validation = Rule::new("self >= 0").message("minReplicas must not be negative"))]
    pub min_replicas: i32,
}

/// Five fields of cron characters separated by single spaces, or a nickname. What each field
/// may hold (a minute of 61) is checked by the operator's parser and reported in `Ready`.
const SCHEDULE_CEL: &str =
    "self.matches('^(@(yearly|annually|monthly|weekly|daily|hourly)|[0-9A-Za-z*,/?#-]+( [0-9A-Za-z*,/?#-]+){4})$')";
const SCHEDULE_MESSAGE: &str = "schedule must be a cron expression of five fields (minute hour day-of-month month day-of-week) such as \"0 8 * * 1-5\", or @hourly, @daily, @weekly, @monthly or @yearly";
/// The shape of an IANA name; whether the zone exists is checked by the operator (against the
/// tz database it bundles) and reported in `Ready`.
const TIME_ZONE_CEL: &str = "self.matches('^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*$')";
const TIME_ZONE_MESSAGE: &str = "timeZone must be an IANA time zone name such as Europe/Paris or UTC";

impl Default for ScalingSpec {
    fn default() -> Self {
        Self {
            min_replicas: 0,
            max_replicas: default_max_replicas(),
            target_per_replica: default_target_per_replica(),
            concurrency_per_replica: default_one(),
            idle_timeout: default_idle_timeout(),
            scale_down_stabilization: default_stabilization(),
            schedules: Vec::new(),
        }
    }
}

/// How objects are handed to workers and retried.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DeliverySpec {
    /// Attempts per object before it is recorded as failed. A failed object is retried only when
    /// a user asks for it.
    #[serde(default = "default_max_attempts")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 100").message("maxAttempts must be between 1 and 100"))]
    pub max_attempts: i32,
    /// A worker must renew its lease on an object within this time, or the object goes back to
    /// the queue for another worker.
    #[serde(default = "default_lease_duration")]
    #[schemars(length(max = 32))]
    #[x_kube(
        validation = Rule::new(duration::DURATION_CEL).message(duration::DURATION_MESSAGE),
        validation = Rule::new(duration::MIN_LEASE_DURATION_CEL).message(duration::MIN_LEASE_DURATION_MESSAGE),
        validation = Rule::new(duration::MAX_DURATION_CEL).message(duration::MAX_DURATION_MESSAGE),
    )]
    pub lease_duration: String,
    /// Wait before the first retry of a failed attempt; doubled for each further attempt.
    #[serde(default = "default_retry_backoff")]
    #[schemars(length(max = 32))]
    #[x_kube(
        validation = Rule::new(duration::DURATION_CEL).message(duration::DURATION_MESSAGE),
        validation = Rule::new(duration::MAX_DURATION_CEL).message(duration::MAX_DURATION_MESSAGE),
    )]
    pub retry_backoff: String,
    /// Where the ledger (one marker per finished object) is kept in the sink bucket.
    /// Defaults to `.zeroflow/ledger/<namespace>/<name>/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ledger_prefix: Option<String>,
}

impl Default for DeliverySpec {
    fn default() -> Self {
        Self {
            max_attempts: default_max_attempts(),
            lease_duration: default_lease_duration(),
            retry_backoff: default_retry_backoff(),
            ledger_prefix: None,
        }
    }
}

/// A warm window that is open: which entry of `spec.scaling.schedules`, and until when.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActiveSchedule {
    /// Its position in `spec.scaling.schedules`.
    pub index: u32,
    pub schedule: String,
    pub time_zone: String,
    /// Workers it keeps running.
    pub min_replicas: i32,
    /// The start that opened it.
    pub since: Time,
    /// When it closes, unless another start comes first.
    pub until: Time,
}

/// Observed state of a DataPipeline, written by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DataPipelineStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`: the workers' Deployment matches the spec. `SourceReachable`: the source bucket
    /// can be listed. `Active`: workers are running (false when scaled to zero). `Paused`: the
    /// `zeroflow.dev/paused` annotation holds the pipeline. `Degraded`: something needs attention.
    /// `RunnerFallback`: the runner is copied by an init container although the pipeline would
    /// otherwise get it in an image volume (the reason says why).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions::conditions_schema")]
    pub conditions: Vec<Condition>,
    /// Name of the worker Deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_deployment: Option<String>,
    /// Worker pods that exist.
    #[serde(default)]
    pub replicas: i32,
    /// Worker pods that are ready.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Worker pods zeroflow wants right now.
    #[serde(default)]
    pub desired_replicas: i32,
    /// Objects waiting for a worker.
    #[serde(default)]
    pub pending: i64,
    /// Objects being processed.
    #[serde(default)]
    pub in_flight: i64,
    /// Objects processed successfully.
    #[serde(default)]
    pub succeeded: i64,
    /// Objects that failed every attempt.
    #[serde(default)]
    pub failed: i64,
    /// When the last storage notification for this pipeline's source reached the gateway
    /// (whether it brought new work, a duplicate, or nothing to do).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_event_time: Option<Time>,
    /// When the worker count last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_time: Option<Time>,
    /// Why the worker count last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_reason: Option<String>,
    /// How the workers get `zeroflow-runner`: `ImageVolume`, `InitContainer` or `InImage`
    /// (`spec.transform.runner`; the `RunnerFallback` condition says why when the operator
    /// chose the init container).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner_delivery: Option<String>,
    /// The warm window open now (`spec.scaling.schedules`); absent when none is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_schedule: Option<ActiveSchedule>,
    /// Seconds from the first object arriving at zero workers to a worker taking it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_cold_start_seconds: Option<f64>,
    /// Resources given to the workers, for cost attribution: accrued by the operator while it
    /// runs (time with no operator running is not counted), written here at least every 60
    /// replica-seconds and when the workers return to zero. Also exported as
    /// `zeroflow_replica_seconds_total` and `zeroflow_cpu_core_seconds_total`.
    #[serde(default)]
    pub usage: Usage,
    /// The value of the `zeroflow.dev/redrive` annotation last acted on: changing the annotation
    /// puts every failed object (or those under `zeroflow.dev/redrive-prefix`) back to work once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_redrive: Option<String>,
    /// The latest objects that failed every attempt, newest first: at most 20, one entry per
    /// key. A re-drive removes the entries it covers. Every failure, old or new, is also in the
    /// ledger.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub recent_failures: Vec<RecentFailure>,
    /// The SQS queue of `spec.source.events.sqs`: whether the leader is consuming it, or why
    /// not. Absent when the spec names no queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<QueueStatus>,
}

/// Whether a pipeline's own queue is being consumed.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueueStatus {
    /// The queue's URL.
    pub queue_url: String,
    /// True while the leader's long polls of the queue succeed.
    pub consuming: bool,
    /// One CamelCase word: `Consuming`, `Starting` (no answer from SQS yet), `QueueNotFound`,
    /// `AccessDenied`, `Unreachable`, `QueueError` (another error from SQS), `QueueClaimed` (the
    /// queue is consumed for another namespace), `SecretNotFound`, `SecretForbidden`,
    /// `SecretMissingKey`, `NoCredentials` (no Secret and no operator identity),
    /// `IdentityFailed` (the operator's identity gave no credentials), or `InvalidQueue`.
    pub reason: String,
    /// Details for a person.
    pub message: String,
}

/// An object that failed every attempt.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecentFailure {
    /// The source object's key.
    pub key: String,
    /// The revision that failed (its ETag, unquoted), when the store gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// The revision that failed, on a versioned bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_id: Option<String>,
    /// Attempts made, the last included.
    pub attempts: u32,
    /// The transform's exit code on the last attempt; absent when it did not exit (timed out,
    /// killed, its lease expired, or the operator refused the object).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// The end of the transform's stderr on the last attempt (at most 512 bytes), or why the
    /// operator gave up, such as `lease expired`.
    pub message: String,
    /// When the last attempt ended.
    pub failed_at: Time,
}

fn default_true() -> bool {
    true
}
fn default_one() -> i32 {
    1
}
fn default_region() -> String {
    "us-east-1".into()
}
fn default_resync_interval() -> String {
    "5m".into()
}
fn default_sink_prefix() -> String {
    "zeroflow-output/".into()
}
fn default_timeout() -> String {
    "10m".into()
}
fn default_time_zone() -> String {
    "UTC".into()
}
fn default_max_replicas() -> i32 {
    10
}
fn default_target_per_replica() -> i32 {
    4
}
fn default_idle_timeout() -> String {
    "60s".into()
}
fn default_stabilization() -> String {
    "30s".into()
}
fn default_max_attempts() -> i32 {
    3
}
fn default_lease_duration() -> String {
    "2m".into()
}
fn default_retry_backoff() -> String {
    "10s".into()
}

/// The CRD as YAML, exactly what `crds/datapipelines.zeroflow.dev.yaml` holds.
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    let yaml = serde_yaml::to_string(&DataPipeline::crd())?;
    Ok(format!("# Generated by `cargo run --bin crdgen`; do not edit.\n{yaml}"))
}
