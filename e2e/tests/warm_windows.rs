//! Warm windows (`spec.scaling.schedules`) against the testbed's real apiserver: the CRD refuses
//! malformed schedules and time zones with readable messages (server dry-run), the operator
//! refuses what only a parser can tell (a minute 61, an unknown zone) in the `Ready` condition,
//! and a window open now holds its minimum with no objects and lets it go when it closes.

use std::time::Duration;

use anyhow::Context as _;
use chrono::{Timelike as _, Utc};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, PostParams};
use serde_json::json;
use zeroflow_e2e::{Operator, TIMEOUT, TestNamespace, client, eventually, kubectl};
use zeroflow_operator::api::DataPipeline;
use zeroflow_operator::api::conditions::READY;

fn pipeline(name: &str, scaling: serde_json::Value) -> serde_json::Value {
    json!({
        "apiVersion": "zeroflow.dev/v1alpha1",
        "kind": "DataPipeline",
        "metadata": {"name": name},
        "spec": {"source": {"bucket": "raw-invoices"}, "transform": {"image": "example.org/csv2json:1"},
                 "scaling": scaling}
    })
}

/// Creates `object` with `dryRun=All`: the apiserver validates it completely and stores nothing.
async fn dry_run(client: &kube::Client, ns: &str, object: &serde_json::Value) -> Result<(), kube::core::Status> {
    let request = http::Request::post(format!("/apis/zeroflow.dev/v1alpha1/namespaces/{ns}/datapipelines?dryRun=All"))
        .header("content-type", "application/json")
        .body(serde_json::to_vec(object).expect("JSON"))
        .expect("a request");
    match client.request_text(request).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) => Err(*e),
        Err(e) => panic!("the apiserver did not answer: {e}"),
    }
}

#[tokio::test]
async fn the_apiserver_refuses_malformed_schedules_with_readable_messages() -> anyhow::Result<()> {
    let client = client().await?;
    let ns = TestNamespace::create(&client, "zf-warm-crd").await?;
    let window = |schedule: &str, zone: &str, duration: &str, min: i32| json!({"maxReplicas": 3, "schedules": [{"schedule": schedule, "timeZone": zone, "duration": duration, "minReplicas": min}]});
    let refused = [
        (window("0 8 * *", "Europe/Paris", "8h", 1), "five fields"),
        (window("0 0 8 * * 1", "Europe/Paris", "8h", 1), "five fields"),
        (window("0 8 * * 1-5", "Paris time", "8h", 1), "IANA time zone name"),
        (window("0 8 * * 1-5", "Europe/Paris", "eight hours", 1), "must be a duration"),
        (window("0 8 * * 1-5", "Europe/Paris", "200h", 1), "must be at most 168h"),
        (window("0 8 * * 1-5", "Europe/Paris", "0s", 1), "duration must be longer than 0s"),
        (window("0 8 * * 1-5", "Europe/Paris", "8h", 4), "minReplicas of a schedule must not exceed maxReplicas"),
        (window("0 8 * * 1-5", "Europe/Paris", "8h", -1), "minReplicas must not be negative"),
    ];
    for (i, (scaling, message)) in refused.into_iter().enumerate() {
        let error = dry_run(&client, &ns.name, &pipeline(&format!("bad-{i}"), scaling))
            .await
            .err()
            .with_context(|| format!("case {i} was accepted"))?;
        assert_eq!(error.code, 422, "case {i}: {error:?}");
        assert!(error.message.contains(message), "case {i}: expected {message:?} in {:?}", error.message);
    }
    // Business hours in Paris, a nickname, and the time zone left to its default (UTC).
    let accepted = json!({"maxReplicas": 3, "schedules": [
        {"schedule": "0 8 * * 1-5", "timeZone": "Europe/Paris", "duration": "8h", "minReplicas": 2},
        {"schedule": "@hourly", "duration": "10m", "minReplicas": 1},
    ]});
    dry_run(&client, &ns.name, &pipeline("good", accepted))
        .await
        .map_err(|e| anyhow::anyhow!("a valid window was refused: {e:?}"))?;
    Ok(())
}

#[tokio::test]
async fn what_only_a_parser_can_tell_is_reported_in_the_ready_condition() -> anyhow::Result<()> {
    let client = client().await?;
    let ns = TestNamespace::create(&client, "zf-warm-invalid").await?;
    let pipelines: Api<DataPipeline> = Api::namespaced(client.clone(), &ns.name);
    let cases = [
        (
            "minute",
            json!({"schedule": "61 8 * * *", "timeZone": "UTC", "duration": "1h", "minReplicas": 1}),
            "spec.scaling.schedules: entry 0: schedule \"61 8 * * *\" is not a cron expression",
        ),
        (
            "zone",
            json!({"schedule": "0 8 * * *", "timeZone": "Europe/Pariss", "duration": "1h", "minReplicas": 1}),
            "spec.scaling.schedules: entry 0: timeZone \"Europe/Pariss\" is not an IANA time zone name",
        ),
    ];
    for (name, window, _) in &cases {
        let object: DataPipeline = serde_json::from_value(pipeline(name, json!({"schedules": [window]})))?;
        pipelines.create(&PostParams::default(), &object).await?;
    }
    let operator = Operator::start(&ns.name, "solo").await?;
    operator.wait_ready(TIMEOUT).await?;
    for (name, _, message) in cases {
        let ready = eventually(&format!("{name}: Ready=False with the parser's message"), TIMEOUT, || async {
            let status = pipelines.get(name).await?.status.unwrap_or_default();
            Ok(status.conditions.into_iter().find(|c| c.type_ == READY && c.status == "False"))
        })
        .await?;
        assert!(ready.message.contains(message), "{name}: expected {message:?} in {:?}", ready.message);
    }
    Ok(())
}

#[tokio::test]
async fn a_window_open_now_holds_its_minimum_without_objects_and_lets_go_when_it_closes() -> anyhow::Result<()> {
    let client = client().await?;
    let ns = TestNamespace::create(&client, "zf-warm").await?;
    let pipelines: Api<DataPipeline> = Api::namespaced(client.clone(), &ns.name);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    // A window that opened at the start of this minute, Paris time, and closes 90 s from now:
    // its schedule names this very minute and hour, so it does not open again today.
    let zone = zeroflow_core::scaling::windows::parse_time_zone("Europe/Paris")?;
    let now = Utc::now().with_timezone(&zone);
    let open_for = now.second() + 90;
    let schedule = format!("{} {} * * *", now.minute(), now.hour());
    let scaling = json!({"maxReplicas": 3, "idleTimeout": "5s", "scaleDownStabilization": "0s", "schedules": [
        {"schedule": schedule, "timeZone": "Europe/Paris", "duration": format!("{open_for}s"), "minReplicas": 2},
    ]});
    let object: DataPipeline = serde_json::from_value(pipeline("warm", scaling))?;
    pipelines.create(&PostParams::default(), &object).await?;
    let operator = Operator::start(&ns.name, "solo").await?;
    operator.wait_ready(TIMEOUT).await?;

    let replicas = || async {
        let d = deployments.get_opt("warm-worker").await?;
        anyhow::Ok(d.and_then(|d| d.spec).and_then(|s| s.replicas))
    };
    let active = eventually("the window in status.activeSchedule", TIMEOUT, || async {
        let status = pipelines.get("warm").await?.status.unwrap_or_default();
        Ok(status.active_schedule)
    })
    .await?;
    assert_eq!(active.schedule, schedule);
    assert_eq!(active.time_zone, "Europe/Paris");
    assert_eq!(active.min_replicas, 2);
    eventually("two workers held by the window, with no objects", TIMEOUT, || async {
        Ok((replicas().await? == Some(2)).then_some(()))
    })
    .await?;
    // Still held while the window is open (nothing is pending, and idleTimeout is 5 s).
    let status = pipelines.get("warm").await?.status.unwrap_or_default();
    assert_eq!(status.pending, 0);
    if status.active_schedule.is_some() {
        assert_eq!(replicas().await?, Some(2), "the window lets the workers go while it is open");
    }

    let closes = Duration::from_secs(u64::from(open_for)) + TIMEOUT;
    eventually("the window gone from status", closes, || async {
        let status = pipelines.get("warm").await?.status.unwrap_or_default();
        Ok(status.active_schedule.is_none().then_some(()))
    })
    .await?;
    eventually("the workers back to zero after the window", TIMEOUT, || async {
        Ok((replicas().await? == Some(0)).then_some(()))
    })
    .await?;
    let events = kubectl(&[
        "get",
        "events",
        "-n",
        &ns.name,
        "-o",
        "jsonpath={range .items[*]}{.reason}: {.message}{\"\\n\"}{end}",
    ])
    .await?;
    assert!(events.contains("WarmWindowOpened"), "{events}");
    assert!(events.contains("WarmWindowClosed"), "{events}");
    assert!(events.contains("scaled workers from 2 to 0"), "{events}");
    drop(operator);
    Ok(())
}
