//! `crds/` is generated from the Rust types; this fails when someone forgets to regenerate it.

#[test]
fn committed_crd_matches_the_rust_types() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../crds/datapipelines.zeroflow.dev.yaml");
    let committed = std::fs::read_to_string(path).expect("crds/datapipelines.zeroflow.dev.yaml exists");
    let generated = zeroflow_operator::api::crd_yaml().expect("CRD serializes");
    assert!(
        committed == generated,
        "crds/datapipelines.zeroflow.dev.yaml is out of date: run `cargo run --bin crdgen > crds/datapipelines.zeroflow.dev.yaml`"
    );
}
