#!/usr/bin/env python3
"""The worker of KEDA's side in `e2e/bench/keda-side-by-side`: what a KEDA user's SQS consumer pod
does, run as a host process in the place of the pod (the testbed's KWOK node runs no containers),
as `zeroflow-host-workers` runs `zeroflow-runner` for zeroflow's pods.

It long-polls its queue (WaitTimeSeconds 20, one message at a time), reads the S3 record's object
from MinIO, writes the same bytes to the sink as `<prefix><key>/<file name>` (the key zeroflow's
stdio contract gives the output of `cat`), and deletes the message; then polls again, until
SIGTERM (the bench sends it when the pod is gone, as the kubelet would). It prints one JSON line
per step on stdout, with this host's wall clock, for the bench's breakdown.

Usage: keda_worker.py QUEUE_URL SINK_BUCKET SINK_PREFIX   (environment: `e2e/testbed env`)
"""

import json
import os
import signal
import sys
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from aws import Sqs, s3_get, s3_put  # noqa: E402  (after the path above)

# The longest long poll SQS allows: one request per 20 s while the queue is empty.
WAIT_SECONDS = 20


def step(what, **fields):
    print(json.dumps({"at": time.time(), "step": what, **fields}), flush=True)


def main():
    if len(sys.argv) != 4:
        sys.exit("usage: keda_worker.py QUEUE_URL SINK_BUCKET SINK_PREFIX")
    queue, sink, prefix = sys.argv[1:]
    # SIGTERM ends the process at once (no message is held between polls long enough to matter
    # here; SQS would make an unfinished one visible again after its visibility timeout).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    sqs = Sqs(timeout=WAIT_SECONDS + 10)
    step("started")
    while True:
        answer = sqs.call("ReceiveMessage", {"QueueUrl": queue, "MaxNumberOfMessages": 1,
                                             "WaitTimeSeconds": WAIT_SECONDS})
        for message in answer.get("Messages", []):
            step("received")
            try:
                records = json.loads(message["Body"])["Records"]
            except (ValueError, KeyError, TypeError):
                records = []  # not an S3 notification: dropped, as a consumer would
            for record in records:
                bucket = record["s3"]["bucket"]["name"]
                # S3 and MinIO URL-encode the key in notifications.
                key = urllib.parse.unquote_plus(record["s3"]["object"]["key"])
                data = s3_get(bucket, key)
                s3_put(sink, f"{prefix}{key}/{key.rsplit('/', 1)[-1]}", data)
                step("output written", key=key, size=len(data))
            sqs.call("DeleteMessage", {"QueueUrl": queue, "ReceiptHandle": message["ReceiptHandle"]})


if __name__ == "__main__":
    main()
