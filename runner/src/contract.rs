//! What a transform sees: its environment and where its input and outputs live. Pure.

use std::path::Path;

use zeroflow_contract::env;
pub use zeroflow_contract::worker::Contract;

use crate::object::Object;

/// The variables the user command gets on top of the runner's own environment.
pub fn contract_env(object: &Object, input: &Path, output_dir: &Path) -> Vec<(&'static str, String)> {
    vec![
        (env::INPUT, input.display().to_string()),
        (env::OUTPUT_DIR, output_dir.display().to_string()),
        (env::BUCKET, object.bucket.clone()),
        (env::KEY, object.key.clone()),
        (env::ETAG, object.etag.clone().unwrap_or_default()),
        (env::SIZE, object.size.map(|s| s.to_string()).unwrap_or_default()),
        (env::ATTEMPT, object.attempt.to_string()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Lease;

    #[test]
    fn env_names_the_object_and_its_paths() {
        let lease = Lease {
            lease_id: "1-2".into(),
            bucket: "in".into(),
            key: "a/b.csv".into(),
            etag: Some("\"abc\"".into()),
            version_id: None,
            size: Some(42),
            attempt: 2,
            deadline_unix_ms: 0,
            lease_seconds: 15,
            heartbeat_interval_seconds: 5,
            input_url: "http://x".into(),
        };
        let env = contract_env(&Object::from(&lease), Path::new("/w/1/in/b.csv"), Path::new("/w/1/out"));
        let get = |k: &str| env.iter().find(|(name, _)| *name == k).map(|(_, v)| v.as_str());
        assert_eq!(get("ZEROFLOW_INPUT"), Some("/w/1/in/b.csv"));
        assert_eq!(get("ZEROFLOW_OUTPUT_DIR"), Some("/w/1/out"));
        assert_eq!(get("ZEROFLOW_BUCKET"), Some("in"));
        assert_eq!(get("ZEROFLOW_KEY"), Some("a/b.csv"));
        assert_eq!(get("ZEROFLOW_ETAG"), Some("\"abc\""));
        assert_eq!(get("ZEROFLOW_SIZE"), Some("42"));
        assert_eq!(get("ZEROFLOW_ATTEMPT"), Some("2"));
        let unknown = Lease { etag: None, size: None, ..lease };
        let env = contract_env(&Object::from(&unknown), Path::new("i"), Path::new("o"));
        assert!(env.iter().any(|(k, v)| *k == "ZEROFLOW_SIZE" && v.is_empty()));
    }
}
