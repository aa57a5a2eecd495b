//! SQS (ElasticMQ): what an S3-notification consumer relies on. Long polling, visibility
//! timeouts, ChangeMessageVisibility, DeleteMessage and redrive to a dead-letter queue, over the
//! JSON protocol; and the query protocol that older SDKs speak.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::json;
use zeroflow_e2e::http;
use zeroflow_e2e::sqs::Sqs;

use super::unique;

#[tokio::test]
async fn a_long_poll_returns_a_message_sent_while_it_waits() -> anyhow::Result<()> {
    let sqs = Sqs::from_env()?;
    let queue = sqs.create_queue(&unique("zf-longpoll"), json!({})).await?;

    // An empty queue: the call waits out its WaitTimeSeconds and returns nothing.
    let started = Instant::now();
    assert!(sqs.receive(&queue, 1, 1).await?.is_empty());
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(900), "an empty long poll returned after {waited:?}, not after ~1 s");

    // A message sent one second into a 20 s long poll ends that same call: it did not run out.
    let poll = {
        let queue = queue.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let messages = Sqs::from_env()?.receive(&queue, 1, 20).await?;
            anyhow::Ok((messages, started.elapsed()))
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let id = sqs.send(&queue, "hello").await?;
    let (messages, took) = poll.await??;
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert_eq!((messages[0].message_id.as_str(), messages[0].body.as_str()), (id.as_str(), "hello"));
    assert!(took < Duration::from_secs(20), "the long poll ran out ({took:?}) instead of returning the message");
    println!("long poll returned the message {took:?} after it started (sent after 1 s)");
    Ok(())
}

#[tokio::test]
async fn visibility_timeout_hides_a_message_until_it_expires_and_delete_removes_it() -> anyhow::Result<()> {
    let sqs = Sqs::from_env()?;
    let queue = sqs.create_queue(&unique("zf-visibility"), json!({"VisibilityTimeout": "2"})).await?;
    sqs.send(&queue, "object-1").await?;

    let first = sqs.receive(&queue, 1, 5).await?;
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].receive_count, 1);
    // In flight: invisible to everyone else.
    assert!(sqs.receive(&queue, 1, 0).await?.is_empty(), "an in-flight message was delivered twice");
    // Not deleted: it comes back after the 2 s visibility timeout, with a new receipt handle.
    let again = sqs.receive(&queue, 1, 10).await?;
    assert_eq!(again.len(), 1, "the message did not reappear after its visibility timeout");
    assert_eq!(again[0].message_id, first[0].message_id);
    assert_eq!(again[0].receive_count, 2);
    assert_ne!(again[0].receipt_handle, first[0].receipt_handle);

    sqs.delete(&queue, &again[0].receipt_handle).await?;
    // Deleted: it does not come back when the visibility timeout would have expired.
    assert!(sqs.receive(&queue, 1, 4).await?.is_empty(), "a deleted message was delivered again");
    Ok(())
}

#[tokio::test]
async fn change_message_visibility_extends_and_releases_a_message() -> anyhow::Result<()> {
    let sqs = Sqs::from_env()?;
    let queue = sqs.create_queue(&unique("zf-change-visibility"), json!({"VisibilityTimeout": "1"})).await?;
    sqs.send(&queue, "object-2").await?;
    let first = sqs.receive(&queue, 1, 5).await?;
    assert_eq!(first.len(), 1);

    // Extended to 30 s (a worker still busy with the object): not back after the queue's 1 s.
    sqs.change_visibility(&queue, &first[0].receipt_handle, 30).await?;
    assert!(sqs.receive(&queue, 1, 3).await?.is_empty(), "an extended message came back early");
    // Released (a consumer giving it up): visible again at once.
    sqs.change_visibility(&queue, &first[0].receipt_handle, 0).await?;
    let again = sqs.receive(&queue, 1, 5).await?;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].message_id, first[0].message_id);
    Ok(())
}

#[tokio::test]
async fn redrive_moves_a_message_received_too_often_to_the_dead_letter_queue() -> anyhow::Result<()> {
    let sqs = Sqs::from_env()?;
    let dlq = sqs.create_queue(&unique("zf-dlq"), json!({})).await?;
    let dlq_arn = sqs.queue_arn(&dlq).await?;
    let redrive = json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "2"}).to_string();
    let queue = sqs.create_queue(&unique("zf-redriven"), json!({"RedrivePolicy": redrive})).await?;
    let id = sqs.send(&queue, "poison").await?;

    // Received twice and given up each time (a consumer that cannot handle it).
    for count in 1..=2 {
        let messages = sqs.receive(&queue, 1, 5).await?;
        assert_eq!(messages.len(), 1, "receive #{count}");
        assert_eq!(messages[0].receive_count, count);
        sqs.change_visibility(&queue, &messages[0].receipt_handle, 0).await?;
    }
    // The third receive finds it over maxReceiveCount: it moves to the dead-letter queue.
    assert!(sqs.receive(&queue, 1, 2).await?.is_empty(), "a message over maxReceiveCount was delivered again");
    let dead = sqs.receive(&dlq, 1, 5).await?;
    assert_eq!(dead.len(), 1, "the message is not in the dead-letter queue");
    assert_eq!((dead[0].message_id.as_str(), dead[0].body.as_str()), (id.as_str(), "poison"));
    Ok(())
}

#[tokio::test]
async fn the_query_protocol_reaches_the_same_queues() -> anyhow::Result<()> {
    let sqs = Sqs::from_env()?;
    let name = unique("zf-query");
    let queue = sqs.create_queue(&name, json!({})).await?;

    // Form-encoded Action=... with an XML answer, as older SDKs (and SNS-to-SQS tooling) send it.
    let form = |pairs: &[(&str, &str)]| form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish();
    let headers = [("Content-Type", "application/x-www-form-urlencoded")];
    let (status, body) = http(
        "POST",
        &format!("{}/", sqs.endpoint),
        &headers,
        form(&[("Action", "GetQueueUrl"), ("QueueName", &name)]).as_bytes(),
    )
    .await?;
    let body = String::from_utf8(body)?;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(&format!("<QueueUrl>{queue}</QueueUrl>")), "{body}");

    let send = form(&[("Action", "SendMessage"), ("QueueUrl", &queue), ("MessageBody", "via query")]);
    let (status, body) = http("POST", &format!("{}/", sqs.endpoint), &headers, send.as_bytes()).await?;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let received = sqs.receive(&queue, 1, 5).await?;
    assert_eq!(received.first().context("nothing received")?.body, "via query");

    // A JSON-protocol error names its type as AWS SDKs expect.
    let error = sqs.call("GetQueueUrl", json!({"QueueName": unique("zf-missing")})).await.err().context("no error")?;
    assert!(format!("{error:#}").contains("QueueDoesNotExist"), "{error:#}");
    Ok(())
}
