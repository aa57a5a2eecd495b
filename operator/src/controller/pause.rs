//! Part of the validate step: the pause annotations (`zeroflow.dev/paused`,
//! `zeroflow.dev/paused-replicas`), read the way KEDA reads its own `paused` and
//! `paused-replicas`: either one pauses; `paused: "false"` with no replica count does not.
//! Pure.

use kube::ResourceExt;

use super::validate::InvalidSpec;
use crate::api::{DataPipeline, PAUSED_ANNOTATION, PAUSED_REPLICAS_ANNOTATION};
use crate::runtime::Paused;

/// The pause the annotations ask for, `None` when the pipeline runs.
///
/// Errors: `zeroflow.dev/paused` other than `true`/`false` (any case), or
/// `zeroflow.dev/paused-replicas` that is not an integer from 0 to `spec.scaling.maxReplicas`.
/// A pipeline with a bad value is not acted on until it is fixed, rather than guessed at.
pub fn paused(pipeline: &DataPipeline) -> Result<Option<Paused>, InvalidSpec> {
    let annotations = pipeline.annotations();
    let flag = match annotations.get(PAUSED_ANNOTATION).map(|v| v.trim().to_ascii_lowercase()) {
        None => None,
        Some(v) if v == "true" => Some(true),
        Some(v) if v == "false" => Some(false),
        Some(_) => {
            return Err(InvalidSpec {
                field: "metadata.annotations[zeroflow.dev/paused]",
                reason: "must be \"true\" or \"false\"".into(),
            });
        }
    };
    let max = pipeline.spec.scaling.max_replicas;
    let replicas = match annotations.get(PAUSED_REPLICAS_ANNOTATION) {
        None => None,
        Some(v) => match v.trim().parse::<i32>() {
            Ok(n) if (0..=max).contains(&n) => Some(n),
            _ => {
                return Err(InvalidSpec {
                    field: "metadata.annotations[zeroflow.dev/paused-replicas]",
                    reason: format!("must be a whole number from 0 to spec.scaling.maxReplicas ({max}), not {v:?}"),
                });
            }
        },
    };
    Ok(match (flag, replicas) {
        (Some(false), _) | (None, None) => None,
        (_, replicas) => Some(Paused { replicas: replicas.unwrap_or(0) }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::testing::{minimal_spec, pipeline};

    fn with(annotations: &[(&str, &str)]) -> DataPipeline {
        let mut p = pipeline(minimal_spec());
        p.metadata.annotations = Some(annotations.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect());
        p
    }

    #[test]
    fn either_annotation_pauses_as_in_keda() {
        assert_eq!(paused(&with(&[])), Ok(None));
        assert_eq!(paused(&with(&[(PAUSED_ANNOTATION, "true")])), Ok(Some(Paused { replicas: 0 })));
        assert_eq!(paused(&with(&[(PAUSED_ANNOTATION, "True")])), Ok(Some(Paused { replicas: 0 })));
        assert_eq!(paused(&with(&[(PAUSED_REPLICAS_ANNOTATION, "2")])), Ok(Some(Paused { replicas: 2 })));
        assert_eq!(
            paused(&with(&[(PAUSED_ANNOTATION, "true"), (PAUSED_REPLICAS_ANNOTATION, "1")])),
            Ok(Some(Paused { replicas: 1 }))
        );
        assert_eq!(paused(&with(&[(PAUSED_ANNOTATION, "false")])), Ok(None));
        assert_eq!(paused(&with(&[(PAUSED_ANNOTATION, "false"), (PAUSED_REPLICAS_ANNOTATION, "2")])), Ok(None));
    }

    #[test]
    fn bad_values_are_refused_with_the_annotation_named() {
        let e = paused(&with(&[(PAUSED_ANNOTATION, "yes")])).expect_err("refused");
        assert_eq!(e.field, "metadata.annotations[zeroflow.dev/paused]");
        for bad in ["-1", "11", "two", ""] {
            let e = paused(&with(&[(PAUSED_REPLICAS_ANNOTATION, bad)])).expect_err("refused");
            assert_eq!(e.field, "metadata.annotations[zeroflow.dev/paused-replicas]");
            assert!(e.reason.contains("maxReplicas (10)"), "{e}");
        }
    }
}
