//! Fixtures shared by the controller's unit tests.

use kube::api::ObjectMeta;

use crate::api::{DataPipeline, DataPipelineSpec, DeliverySpec, ScalingSpec, SinkSpec, SourceSpec, TransformSpec};

/// The smallest spec a user can write: a bucket and an image.
pub fn minimal_spec() -> DataPipelineSpec {
    serde_json::from_value(serde_json::json!({
        "source": {"bucket": "raw-invoices"},
        "transform": {"image": "ghcr.io/acme/csv2json:1.0"}
    }))
    .expect("minimal spec deserializes with defaults")
}

pub fn pipeline(spec: DataPipelineSpec) -> DataPipeline {
    let mut pipeline = DataPipeline::new("invoices", spec);
    pipeline.metadata = ObjectMeta {
        name: Some("invoices".into()),
        namespace: Some("finance".into()),
        uid: Some("3f1c0c2e-0000-4000-8000-000000000001".into()),
        generation: Some(1),
        ..ObjectMeta::default()
    };
    pipeline
}

#[test]
fn defaults_match_the_documentation() {
    let spec = minimal_spec();
    assert_eq!(spec.scaling, ScalingSpec::default());
    assert_eq!(spec.delivery, DeliverySpec::default());
    assert_eq!(spec.sink, SinkSpec::default());
    assert_eq!(spec.sink.prefix, "zeroflow-output/");
    assert_eq!(spec.scaling.min_replicas, 0);
    assert!(spec.source.backfill);
    let _: (&SourceSpec, &TransformSpec) = (&spec.source, &spec.transform);
}
