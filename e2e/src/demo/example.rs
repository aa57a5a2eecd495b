//! The example `e2e/demo` runs (`examples/csv-to-jsonl` unless told otherwise): its
//! `pipeline.yaml`, patched only where the testbed forces it, and the objects to upload with the
//! outputs its transform must write for them.
//!
//! Pure functions: the caller reads the files and talks to the cluster and the store.

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

/// What the testbed forces on the example's objects.
#[derive(Clone, Debug)]
pub struct Testbed {
    /// Namespace the objects are created in (the example's objects name none).
    pub namespace: String,
    /// S3 endpoint as the operator reaches MinIO (`spec.source.store.endpoint`, and the sink's
    /// store if it names one).
    pub endpoint: String,
    /// MinIO's credentials, put into every Secret of the example.
    pub access_key: String,
    pub secret_key: String,
    /// The transform image actually available on the node (no registry here); `None` leaves
    /// the example's image (the host runners never pull it).
    pub image: Option<String>,
    /// Label and taint key of the testbed's real node: worker pods must select the label and
    /// tolerate the taint to run there. `None`: no real node.
    pub node_label: Option<String>,
}

/// The example's objects after patching, and one line per change made, for the demo to print.
#[derive(Clone, Debug, PartialEq)]
pub struct Patched {
    pub objects: Vec<Value>,
    pub changes: Vec<String>,
}

/// Parses the multi-document `pipeline.yaml` and patches it for the testbed.
///
/// Errors when the YAML does not parse or holds no DataPipeline.
pub fn patch(yaml: &str, testbed: &Testbed) -> anyhow::Result<Patched> {
    let mut objects = parse(yaml)?;
    let mut changes = Vec::new();
    let mut pipelines = 0;
    for object in &mut objects {
        object["metadata"]["namespace"] = json!(testbed.namespace);
        let name = object["metadata"]["name"].as_str().unwrap_or_default().to_owned();
        match object["kind"].as_str() {
            Some("Secret") => {
                object["stringData"] =
                    json!({"accessKeyId": testbed.access_key, "secretAccessKey": testbed.secret_key});
                if let Some(map) = object.as_object_mut() {
                    map.remove("data");
                }
                changes.push(format!("Secret {name}: the testbed MinIO's credentials"));
            }
            Some("DataPipeline") => {
                pipelines += 1;
                patch_pipeline(object, testbed, &mut changes);
            }
            _ => {}
        }
    }
    if pipelines != 1 {
        bail!("pipeline.yaml holds {pipelines} DataPipelines; the demo runs exactly one");
    }
    Ok(Patched { objects, changes })
}

/// The objects of a multi-document YAML file.
fn parse(yaml: &str) -> anyhow::Result<Vec<Value>> {
    let mut objects = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(yaml) {
        let value: Value = serde::Deserialize::deserialize(doc).context("pipeline.yaml is not valid YAML")?;
        if !value.is_null() {
            objects.push(value);
        }
    }
    Ok(objects)
}

/// The name of the DataPipeline in `pipeline.yaml`.
pub fn pipeline_name(yaml: &str) -> anyhow::Result<String> {
    let objects = parse(yaml)?;
    let name = pipeline(&objects)?["metadata"]["name"].as_str().context("the DataPipeline has no name")?;
    Ok(name.to_owned())
}

fn patch_pipeline(pipeline: &mut Value, testbed: &Testbed, changes: &mut Vec<String>) {
    let spec = &mut pipeline["spec"];
    for side in ["source", "sink"] {
        // pointer_mut, not indexing: indexing a missing key would add it (as null).
        let Some(endpoint) = spec.pointer_mut(&format!("/{side}/store/endpoint")) else { continue };
        if let Some(old) = endpoint.as_str().map(str::to_owned) {
            *endpoint = json!(testbed.endpoint);
            changes.push(format!(
                "spec.{side}.store.endpoint: {old} -> {} (the testbed's MinIO as the operator reaches it)",
                testbed.endpoint
            ));
        }
    }
    if let Some(image) = &testbed.image {
        let old = spec["transform"]["image"].as_str().unwrap_or_default().to_owned();
        spec["transform"]["image"] = json!(image);
        changes.push(format!(
            "spec.transform.image: {old} -> {image} (the same transform.py on Debian's python3, imported into the node: \
             there is no registry here)"
        ));
    }
    if let Some(label) = &testbed.node_label {
        let template = &mut spec["transform"]["podTemplate"];
        template["nodeSelector"][label] = json!("true");
        let toleration = json!({"key": label, "operator": "Exists", "effect": "NoSchedule"});
        match template["tolerations"].as_array_mut() {
            Some(list) => list.push(toleration),
            None => template["tolerations"] = json!([toleration]),
        }
        changes.push(format!(
            "spec.transform.podTemplate: nodeSelector and toleration {label} (the real node is tainted so that \
             other tests' pods stay on the fake one)"
        ));
    }
}

/// The single DataPipeline among the patched objects.
pub fn pipeline(objects: &[Value]) -> anyhow::Result<&Value> {
    objects.iter().find(|o| o["kind"] == "DataPipeline").context("no DataPipeline in pipeline.yaml")
}

/// One object to upload and what the transform must write for it.
#[derive(Clone, Debug, PartialEq)]
pub struct Input {
    /// Key in the source bucket (under the pipeline's prefix, with its suffix).
    pub key: String,
    pub body: Vec<u8>,
    /// Output file name and content; each lands at `<sink prefix><key>/<file name>`.
    pub outputs: Vec<(String, Vec<u8>)>,
}

impl Input {
    /// The sink keys and contents of this input's outputs.
    pub fn output_keys(&self, sink_prefix: &str) -> Vec<(String, Vec<u8>)> {
        self.outputs.iter().map(|(file, body)| (format!("{sink_prefix}{}/{file}", self.key), body.clone())).collect()
    }
}

/// Invoice number `i` as a small CSV (header and two rows), under `prefix`, and the JSON Lines
/// `transform.py` writes for it: one object per row, keyed by the header, in Python's
/// `json.dumps` layout (", " and ": " separators).
pub fn generated_invoice(prefix: &str, i: usize) -> Input {
    let header = ["invoice", "customer", "amount"];
    let rows = [
        [format!("INV-{i:03}"), format!("Customer {i}"), format!("{}.50", i * 100)],
        [format!("INV-{i:03}-B"), format!("Customer {i}"), format!("{}.00", i * 7)],
    ];
    let mut csv = header.join(",") + "\n";
    let mut jsonl = String::new();
    for row in &rows {
        csv.push_str(&row.join(","));
        csv.push('\n');
        jsonl.push_str(&python_json_line(&header, row));
        jsonl.push('\n');
    }
    let name = format!("invoice-{i:02}");
    Input {
        key: format!("{prefix}{name}.csv"),
        body: csv.into_bytes(),
        outputs: vec![(format!("{name}.jsonl"), jsonl.into_bytes())],
    }
}

/// `json.dumps(dict(zip(keys, values)), ensure_ascii=False)` for string values.
fn python_json_line(keys: &[&str], values: &[String]) -> String {
    let pairs: Vec<String> =
        keys.iter().zip(values).map(|(k, v)| format!("{}: {}", Value::from(*k), Value::from(v.as_str()))).collect();
    format!("{{{}}}", pairs.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../../examples/csv-to-jsonl/pipeline.yaml");

    fn testbed(image: Option<&str>, node: Option<&str>) -> Testbed {
        Testbed {
            namespace: "demo".into(),
            endpoint: "http://172.30.9.1:20001".into(),
            access_key: "zeroflow".into(),
            secret_key: "s3cr3t".into(),
            image: image.map(Into::into),
            node_label: node.map(Into::into),
        }
    }

    #[test]
    fn the_real_example_is_patched_only_where_the_testbed_forces_it() {
        let original = parse(EXAMPLE).unwrap();
        assert_eq!(pipeline_name(EXAMPLE).unwrap(), "invoices-to-jsonl");
        let patched = patch(EXAMPLE, &testbed(Some("zeroflow.local/csv-to-jsonl:testbed"), Some("zf/real"))).unwrap();
        assert_eq!(patched.objects.len(), 2);
        let secret = &patched.objects[0];
        assert_eq!(secret["stringData"], json!({"accessKeyId": "zeroflow", "secretAccessKey": "s3cr3t"}));
        let dp = pipeline(&patched.objects).unwrap();
        assert_eq!(dp["metadata"], json!({"name": "invoices-to-jsonl", "namespace": "demo"}));
        assert_eq!(dp["spec"]["source"]["store"]["endpoint"], "http://172.30.9.1:20001");
        assert_eq!(dp["spec"]["transform"]["image"], "zeroflow.local/csv-to-jsonl:testbed");
        assert_eq!(dp["spec"]["transform"]["podTemplate"]["nodeSelector"], json!({"zf/real": "true"}));
        assert_eq!(
            dp["spec"]["transform"]["podTemplate"]["tolerations"],
            json!([{"key": "zf/real", "operator": "Exists", "effect": "NoSchedule"}])
        );
        // Everything else is the example's own.
        let mut expected = original[1].clone();
        expected["metadata"]["namespace"] = json!("demo");
        expected["spec"]["source"]["store"]["endpoint"] = json!("http://172.30.9.1:20001");
        expected["spec"]["transform"]["image"] = json!("zeroflow.local/csv-to-jsonl:testbed");
        expected["spec"]["transform"]["podTemplate"] = dp["spec"]["transform"]["podTemplate"].clone();
        assert_eq!(dp, &expected);
        assert_eq!(patched.changes.len(), 4, "{:?}", patched.changes);
        assert!(patched.changes[1].contains("http://minio.storage:9000 -> http://172.30.9.1:20001"));
    }

    #[test]
    fn without_a_real_node_the_image_and_pod_template_stay() {
        let patched = patch(EXAMPLE, &testbed(None, None)).unwrap();
        let dp = pipeline(&patched.objects).unwrap();
        assert_eq!(dp["spec"]["transform"]["image"], "ghcr.io/acme/csv-to-jsonl:1.0");
        assert!(dp["spec"]["transform"].get("podTemplate").is_none());
        assert_eq!(patched.changes.len(), 2);
    }

    #[test]
    fn a_file_without_exactly_one_pipeline_is_refused() {
        let err = patch("apiVersion: v1\nkind: Secret\nmetadata: {name: a}\n", &testbed(None, None)).unwrap_err();
        assert!(err.to_string().contains("0 DataPipelines"), "{err}");
        assert!(patch("a: [", &testbed(None, None)).is_err());
    }

    #[test]
    fn generated_invoices_expect_what_transform_py_writes() {
        let input = generated_invoice("incoming/", 7);
        assert_eq!(input.key, "incoming/invoice-07.csv");
        assert_eq!(
            String::from_utf8(input.body.clone()).unwrap(),
            "invoice,customer,amount\nINV-007,Customer 7,700.50\nINV-007-B,Customer 7,49.00\n"
        );
        assert_eq!(
            input.output_keys("jsonl/"),
            vec![(
                "jsonl/incoming/invoice-07.csv/invoice-07.jsonl".to_owned(),
                b"{\"invoice\": \"INV-007\", \"customer\": \"Customer 7\", \"amount\": \"700.50\"}\n\
                  {\"invoice\": \"INV-007-B\", \"customer\": \"Customer 7\", \"amount\": \"49.00\"}\n"
                    .to_vec()
            )]
        );
    }

    #[test]
    fn python_json_lines_escape_like_json_dumps_without_ascii_escapes() {
        let line = python_json_line(&["note", "who"], &["say \"hi\"\nbye".into(), "Müller".into()]);
        assert_eq!(line, r#"{"note": "say \"hi\"\nbye", "who": "Müller"}"#);
    }
}
