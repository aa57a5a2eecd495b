#!/usr/bin/env python3
"""The trials of `e2e/bench/keda-side-by-side` (read its header first): sets up the objects of both
systems, relays MinIO's notifications to the two queues, watches the Deployments, runs KEDA's
worker pods on this host (`keda_worker.py`; zeroflow's are run by `zeroflow-host-workers`, started
by the shell script), records each system's first output from its sink's notification, uploads,
and prints every trial, percentiles and ratios. Both operators are started (and stopped) by the
shell script; this talks only to loopback: the testbed's apiserver, MinIO and ElasticMQ.

Clock: every time here is this host's wall clock (time.time()); the zeroflow operator's log
timestamps, used only for the breakdown of zeroflow's own time, are on the same clock.
"""

import argparse
import datetime
import http.client
import http.server
import json
import math
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from aws import ENV, Sqs, loopback, s3_put  # noqa: E402  (after the path above)

# KEDA's documented default pollingInterval, in seconds (the "default" round omits the field).
KEDA_DEFAULT_POLLING_SECONDS = 30
ROUNDS = (("default", None), ("fastest", 1))
# zeroflow's upload -> scale, step by step: MinIO's notification reaching the relay, SendMessage to
# its queue answered, the operator's long poll returning it, the operator sending the scale PATCH
# (admission, kick, scaler decision), the PATCH answered, the watch seeing the new spec.replicas.
STEPS = ("upload->relay", "relay->queued", "queued->received", "received->PATCH sent", "PATCH",
         "answered->watch")


class Kube:
    """The testbed apiserver, with the kubeconfig's client certificate."""

    def __init__(self, work):
        import base64
        import ssl

        config = json.loads(subprocess.check_output([ENV["KUBECTL"], "config", "view", "--raw", "--minify", "-o", "json"]))
        cluster, user = config["clusters"][0]["cluster"], config["users"][0]["user"]
        files = {}
        for name, data in (("kube-ca.pem", cluster["certificate-authority-data"]),
                           ("kube-cert.pem", user["client-certificate-data"]),
                           ("kube-key.pem", user["client-key-data"])):
            files[name] = os.path.join(work, name)
            with open(files[name], "wb") as f:
                f.write(base64.b64decode(data))
        self.host, self.port = loopback(cluster["server"])
        self.tls = ssl.create_default_context(cafile=files["kube-ca.pem"])
        self.tls.load_cert_chain(files["kube-cert.pem"], files["kube-key.pem"])

    def get(self, path, timeout=30):
        conn = http.client.HTTPSConnection(self.host, self.port, context=self.tls, timeout=timeout)
        conn.request("GET", path, headers={"Accept": "application/json"})
        response = conn.getresponse()
        body = response.read()
        conn.close()
        if response.status != 200:
            raise RuntimeError(f"GET {path}: {response.status} {body[:200]!r}")
        return json.loads(body)

    def watch_scale_ups(self, namespace, seen, stop):
        """Records in `seen` the first time each Deployment of `namespace` has spec.replicas >= 1."""
        path = f"/apis/apps/v1/namespaces/{namespace}/deployments"
        while not stop.is_set():
            listed = self.get(path)
            for item in listed["items"]:
                if item["spec"].get("replicas", 0) >= 1:
                    seen.setdefault(item["metadata"]["name"], time.time())
            rv = listed["metadata"]["resourceVersion"]
            conn = http.client.HTTPSConnection(self.host, self.port, context=self.tls, timeout=None)
            conn.request("GET", f"{path}?watch=true&resourceVersion={rv}&timeoutSeconds=600",
                         headers={"Accept": "application/json"})
            response = conn.getresponse()
            while not stop.is_set():
                line = response.readline()
                if not line:
                    break
                at = time.time()
                event = json.loads(line)
                obj = event.get("object", {})
                if event.get("type") in ("ADDED", "MODIFIED") and obj.get("spec", {}).get("replicas", 0) >= 1:
                    seen.setdefault(obj["metadata"]["name"], at)
            conn.close()


def kubectl(*args, stdin=None):
    return subprocess.run([ENV["KUBECTL"], *args], input=stdin, check=True, capture_output=True, text=True).stdout


def mc(*args):
    return subprocess.run([ENV["MC"], *args], capture_output=True, text=True)


class Trial:
    def __init__(self, round_name, index, suffix, keda_queue):
        tag = f"{round_name[0]}{index:02d}"
        self.round, self.index = round_name, index
        self.bucket = f"kside-{suffix}-{tag}"
        self.pipeline = f"z{tag}"
        self.zeroflow_deployment = f"z{tag}-worker"
        self.keda_deployment = f"k{tag}"
        self.keda_queue = keda_queue
        # Each system writes its output to its own sink bucket, under SINK_PREFIX.
        self.sinks = {"zeroflow": f"{self.bucket}-zo", "KEDA": f"{self.bucket}-ko"}
        self.output = {}  # system -> MinIO's notification of its first output reached the relay
        self.running = {}  # system -> this bench first saw the system's worker pod Running
        # system -> its worker ready: zeroflow's first lease answered (the operator's log),
        # KEDA's consumer started (its own log)
        self.ready = {}
        self.phase_delay = None  # the random wait before the upload, s (see main)
        self.answered = None  # the PUT's answer read by the benchmark
        self.uploaded = None  # the object stored: the earlier of `answered` and `relayed` (see main)
        self.relayed = None  # MinIO's notification reached the relay
        self.sent = {}  # queue -> SendMessage answered


# Both systems' outputs land under this prefix of their sink bucket; MinIO notifies only for
# it, so zeroflow's ledger markers (in the same bucket) are not taken for its output.
SINK_PREFIX = "out/"
# How often the bench looks at the namespace's pods, as `zeroflow-host-workers` does for zeroflow.
POD_POLL_SECONDS = 0.2
# The label on KEDA's worker pods that the bench's stand-in kubelet serves.
KEDA_WORKER_LABEL = "zf-bench-keda-worker"


def make_relay(sqs, zeroflow_queue, trials_by_bucket, outputs_by_bucket):
    """MinIO's webhook target: each notification for a trial's bucket goes to both queues at once,
    as an SNS topic with two subscribed queues (raw message delivery) would deliver it; one for a
    sink bucket (`outputs_by_bucket`: bucket -> (trial, system)) records the first output."""

    class Relay(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_HEAD(self):  # MinIO's liveness probe of the target
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_POST(self):
            at = time.time()
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            try:
                s3 = json.loads(body)["Records"][0]["s3"]
                # MinIO URL-encodes the key, '/' included.
                bucket, key = s3["bucket"]["name"], urllib.parse.unquote_plus(s3["object"]["key"])
            except (ValueError, KeyError, IndexError, TypeError):
                bucket, key = None, ""
            output = outputs_by_bucket.get(bucket)
            if output is not None and key.startswith(SINK_PREFIX):
                output[0].output.setdefault(output[1], at)
            trial = trials_by_bucket.get(bucket)
            if trial is not None and trial.relayed is None:
                trial.relayed = at
                message = body.decode()

                def send(queue):
                    sqs.call("SendMessage", {"QueueUrl": queue, "MessageBody": message})
                    trial.sent[queue] = time.time()

                other = threading.Thread(target=send, args=(trial.keda_queue,))
                other.start()
                send(zeroflow_queue)
                other.join()
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    host, port = ENV["ZF_WEBHOOK_ADDR"].rsplit(":", 1)
    return http.server.ThreadingHTTPServer((host, int(port)), Relay)


class Pods:
    """Looks at the namespace's pods every POD_POLL_SECONDS, as `zeroflow-host-workers` does for
    zeroflow's: records when each trial's worker pod of either system is first seen Running, and
    is the kubelet's stand-in for KEDA's worker pods: for each Running one it starts
    `keda_worker.py` on this host (the pod's consumer), and sends it SIGTERM when the pod is gone
    or deleted. Nothing runs for a KEDA Deployment before its pod is Running."""

    def __init__(self, kube, namespace, trials, work):
        self.kube, self.namespace, self.work = kube, namespace, work
        # Pod labels -> (trial, system): zeroflow's worker pods name their pipeline, KEDA's their app.
        self.by_pipeline = {t.pipeline: t for t in trials}
        self.by_app = {t.keda_deployment: t for t in trials}
        self.workers = {}  # KEDA pod name -> its worker process
        self.started = {}  # KEDA pod name -> when its worker was started
        self.trial_of = {}  # KEDA pod name -> its trial
        self.stop = threading.Event()
        self.errors = []

    def run(self):
        worker = os.path.join(os.path.dirname(os.path.abspath(__file__)), "keda_worker.py")
        path = f"/api/v1/namespaces/{self.namespace}/pods"
        while not self.stop.is_set():
            try:
                pods = self.kube.get(path)["items"]
            except (OSError, RuntimeError, ValueError, http.client.HTTPException) as e:
                self.errors.append(str(e))
                time.sleep(POD_POLL_SECONDS)
                continue
            at = time.time()
            live = set()
            for pod in pods:
                meta, labels = pod["metadata"], pod["metadata"].get("labels", {})
                if meta.get("deletionTimestamp") or pod.get("status", {}).get("phase") != "Running":
                    continue
                if labels.get("app.kubernetes.io/component") == "worker" and \
                        labels.get("zeroflow.dev/pipeline") in self.by_pipeline:
                    self.by_pipeline[labels["zeroflow.dev/pipeline"]].running.setdefault("zeroflow", at)
                elif labels.get(KEDA_WORKER_LABEL) == "true" and labels.get("app") in self.by_app:
                    t, name = self.by_app[labels["app"]], meta["name"]
                    t.running.setdefault("KEDA", at)
                    live.add(name)
                    if name not in self.workers:
                        log = open(os.path.join(self.work, f"keda-worker-{name}.log"), "ab")
                        self.workers[name] = subprocess.Popen(
                            [sys.executable, worker, t.keda_queue, t.sinks["KEDA"], SINK_PREFIX],
                            stdout=log, stderr=subprocess.STDOUT)
                        self.started[name] = time.time()
                        self.trial_of[name] = t
                        log.close()
            for name, process in self.workers.items():
                if name not in live and process.poll() is None:
                    process.send_signal(signal.SIGTERM)
            time.sleep(POD_POLL_SECONDS)

    def close(self):
        """Stops polling and every KEDA worker still running."""
        self.stop.set()
        for process in self.workers.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.workers.values():
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        # Each worker's first step "started" (its interpreter and imports ready to poll): the
        # consumer's own start, inside KEDA's Running -> output.
        for name, t in self.trial_of.items():
            try:
                with open(os.path.join(self.work, f"keda-worker-{name}.log")) as log:
                    for line in log:
                        entry = json.loads(line)
                        if entry.get("step") == "started":
                            t.ready.setdefault("KEDA", entry["at"])
                            break
            except (OSError, ValueError):
                pass


def objects(namespace, trials, rounds):
    """The Kubernetes objects of both systems for every trial, as one List."""
    sqs_host = ENV["ZF_SQS_ENDPOINT"]
    items = [
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "store"},
         "stringData": {"accessKeyId": ENV["ZF_S3_ACCESS_KEY"], "secretAccessKey": ENV["ZF_S3_SECRET_KEY"]}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "sqs-keys"},
         "stringData": {"awsAccessKeyID": ENV["ZF_SQS_ACCESS_KEY"], "awsSecretAccessKey": ENV["ZF_SQS_SECRET_KEY"]}},
        {"apiVersion": "keda.sh/v1alpha1", "kind": "TriggerAuthentication", "metadata": {"name": "sqs-keys"},
         "spec": {"secretTargetRef": [{"parameter": "awsAccessKeyID", "name": "sqs-keys", "key": "awsAccessKeyID"},
                                      {"parameter": "awsSecretAccessKey", "name": "sqs-keys", "key": "awsSecretAccessKey"}]}},
    ]
    for t in trials:
        items.append({"apiVersion": "zeroflow.dev/v1alpha1", "kind": "DataPipeline", "metadata": {"name": t.pipeline},
                      "spec": {"source": {"bucket": t.bucket, "store": {"endpoint": ENV["ZF_S3_ENDPOINT"],
                                                                        "credentialsSecretRef": {"name": "store"}}},
                               "sink": {"bucket": t.sinks["zeroflow"], "prefix": SINK_PREFIX},
                               # The output is the input: `cat` under the stdio contract, run by
                               # zeroflow-runner on this host (zeroflow-host-workers).
                               "transform": {"image": "example.org/t:1", "command": ["cat"], "contract": "stdio"}}})
        labels = {"app": t.keda_deployment, KEDA_WORKER_LABEL: "true"}
        items.append({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": t.keda_deployment},
                      "spec": {"replicas": 0, "selector": {"matchLabels": labels},
                               "template": {"metadata": {"labels": labels},
                                            "spec": {"containers": [{"name": "worker", "image": "example.org/k:1"}]}}}})
        spec = {"scaleTargetRef": {"name": t.keda_deployment}, "minReplicaCount": 0, "maxReplicaCount": 3,
                "triggers": [{"type": "aws-sqs-queue", "authenticationRef": {"name": "sqs-keys"},
                              "metadata": {"queueURL": t.keda_queue, "queueLength": "5",
                                           "awsRegion": ENV["ZF_SQS_REGION"], "awsEndpoint": sqs_host}}]}
        if rounds[t.round] is not None:
            spec["pollingInterval"] = rounds[t.round]
        items.append({"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
                      "metadata": {"name": t.keda_deployment}, "spec": spec})
    return {"apiVersion": "v1", "kind": "List", "items": items}


def wait_until(what, check, timeout):
    deadline = time.time() + timeout
    while not check():
        if time.time() > deadline:
            sys.exit(f"timed out waiting for {what}")
        time.sleep(0.5)


def ready_counts(namespace):
    """(pipelines reconciled, ScaledObjects Ready) in `namespace`."""
    dps = json.loads(kubectl("get", "dp", "-n", namespace, "-o", "json"))["items"]
    sos = json.loads(kubectl("get", "scaledobjects.keda.sh", "-n", namespace, "-o", "json"))["items"]
    reconciled = sum(1 for d in dps if d.get("status", {}).get("observedGeneration") == 1)
    ready = sum(1 for s in sos if any(c.get("type") == "Ready" and c.get("status") == "True"
                                      for c in s.get("status", {}).get("conditions", [])))
    return reconciled, ready


def operator_samples(log):
    """pipeline name -> (when the operator's long poll received the event, when it sent the scale
    PATCH, when the PATCH was answered), from the zeroflow operator's JSON log."""
    samples = {}
    for line in open(log):
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if "event_to_scale_ms" not in entry:
            continue
        answered = datetime.datetime.fromisoformat(entry["timestamp"].replace("Z", "+00:00")).timestamp()
        received = answered - float(entry["event_to_scale_ms"]) / 1000
        sent = answered - float(entry["patch_ms"]) / 1000
        samples[entry["pipeline"].rsplit("/", 1)[-1]] = (received, sent, answered)
    return samples


def first_leases(log):
    """pipeline name -> when the operator logged its first lease to a worker (`cold_start_ms`)."""
    leases = {}
    for line in open(log):
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if "cold_start_ms" not in entry:
            continue
        pipeline = entry.get("pipeline") or (entry.get("span") or {}).get("pipeline", "")
        at = datetime.datetime.fromisoformat(entry["timestamp"].replace("Z", "+00:00")).timestamp()
        leases.setdefault(pipeline.rsplit("/", 1)[-1], at)
    return leases


def quantile(values, p):
    """Nearest-rank quantile (p90 of 10 samples is the 9th smallest)."""
    values = sorted(values)
    return values[max(0, math.ceil(p * len(values)) - 1)]


def mean(values):
    return sum(values) / len(values)


def summary(values):
    return (f"n={len(values)} p50 {quantile(values, .5):9.1f}  p90 {quantile(values, .9):9.1f}  "
            f"max {max(values):9.1f}  mean {mean(values):9.1f} ms")


def ratios(keda, zeroflow):
    """KEDA's p50, p90, max and mean as multiples of zeroflow's."""
    return (f"p50 {quantile(keda, .5) / quantile(zeroflow, .5):.1f}x, p90 {quantile(keda, .9) / quantile(zeroflow, .9):.1f}x, "
            f"max {max(keda) / max(zeroflow):.1f}x, mean {mean(keda) / mean(zeroflow):.1f}x")


def print_outputs(round_name, setting, round_trials, seen, missing):
    """Upload -> first output per trial of a round, for both systems, with the worker side's
    share: scale request -> worker pod seen Running (ReplicaSet, scheduler, KWOK, the 200 ms
    poll), Running -> output (the worker started on this host, its work, MinIO's notification
    of the output), and within it Running -> worker ready (zeroflow: the operator's first lease
    to the runner; KEDA: the consumer process started). Appends to `missing` what was never
    seen."""
    systems = (("zeroflow", lambda t: t.zeroflow_deployment), ("KEDA", lambda t: t.keda_deployment))
    print(f"\n-- round '{round_name}': upload -> first output (the output's notification from its sink) --")
    print("trial  delay s  upload->first output ms: zeroflow       KEDA   | scale->pod Running seen: zeroflow  KEDA"
          "  | Running seen->output: zeroflow  KEDA  | Running seen->worker ready: zeroflow  KEDA")
    figures = {(system, what): [] for system, _ in systems for what in ("output", "running", "work", "ready")}
    fmt = lambda v: "missing" if v is None else f"{v:.1f}"
    for t in round_trials:
        row = {}
        for system, deployment in systems:
            scaled, running, output = seen.get(deployment(t)), t.running.get(system), t.output.get(system)
            ready = t.ready.get(system)
            row[system] = (
                (output - t.uploaded) * 1000 if output else None,
                (running - scaled) * 1000 if running and scaled else None,
                (output - running) * 1000 if output and running else None,
                (ready - running) * 1000 if ready and running else None,
            )
            if output is None:
                missing.append(f"{system} output of {t.bucket}")
            for what, value in zip(("output", "running", "work", "ready"), row[system]):
                if value is not None:
                    figures[(system, what)].append(value)
        z, k = row["zeroflow"], row["KEDA"]
        print(f"{t.index:5d}  {t.phase_delay:7.3f}  {fmt(z[0]):>31}  {fmt(k[0]):>9}   | {fmt(z[1]):>33}  {fmt(k[1]):>5}"
              f"  | {fmt(z[2]):>30}  {fmt(k[2]):>5}  | {fmt(z[3]):>36}  {fmt(k[3]):>5}")
    labels = (("output", "upload->first output"), ("running", "scale->pod Running seen"),
              ("work", "Running seen->output"), ("ready", "Running seen->ready"))
    for what, label in labels:
        for system, _ in systems:
            if figures[(system, what)]:
                print(f"{system:<8} {label:>23}: {summary(figures[(system, what)])}")
    zf, keda = figures[("zeroflow", "output")], figures[("KEDA", "output")]
    if zf and keda:
        print(f"ratio KEDA / zeroflow, upload->first output ({setting}): {ratios(keda, zf)}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--default-trials", type=int, required=True, help="trials of the round at KEDA's default")
    parser.add_argument("--fastest-trials", type=int, required=True, help="trials of the round at pollingInterval 1")
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--work", required=True)
    parser.add_argument("--zeroflow-queue", required=True)
    parser.add_argument("--zeroflow-log", required=True)
    args = parser.parse_args()
    ns, suffix = args.namespace, args.namespace.rsplit("-", 1)[-1]
    rounds = dict(ROUNDS)
    counts = {"default": args.default_trials, "fastest": args.fastest_trials}
    if min(counts.values()) < 1:
        sys.exit("every round needs at least one trial")
    sqs = Sqs()
    kube = Kube(args.work)

    trials = []
    for round_name, _ in ROUNDS:
        for i in range(counts[round_name]):
            queue = sqs.call("CreateQueue", {"QueueName": f"keda-{suffix}-{round_name[0]}{i:02d}"})["QueueUrl"]
            trials.append(Trial(round_name, i, suffix, queue))
    by_bucket = {t.bucket: t for t in trials}
    # ElasticMQ runs on a JVM: its first requests are slow (class loading, JIT), so warm it up
    # on a queue of its own before any trial is timed.
    warm = sqs.call("CreateQueue", {"QueueName": f"warm-{suffix}"})["QueueUrl"]
    for _ in range(50):
        sqs.call("SendMessage", {"QueueUrl": warm, "MessageBody": "warm-up"})
    sqs.call("PurgeQueue", {"QueueUrl": warm})

    outputs_by_bucket = {bucket: (t, system) for t in trials for system, bucket in t.sinks.items()}
    relay = make_relay(sqs, args.zeroflow_queue, by_bucket, outputs_by_bucket)
    threading.Thread(target=relay.serve_forever, daemon=True).start()
    seen, stop = {}, threading.Event()
    threading.Thread(target=kube.watch_scale_ups, args=(ns, seen, stop), daemon=True).start()
    pods = Pods(kube, ns, trials, args.work)
    threading.Thread(target=pods.run, daemon=True).start()

    alias, arn = ENV["ZF_MC_ALIAS"], ENV["ZF_WEBHOOK_ARN_NO_QUEUE"]
    # Every trial's source bucket, and both systems' sinks, notified for their outputs only.
    binds = [(t.bucket, []) for t in trials] + [(b, ["--prefix", SINK_PREFIX]) for b in outputs_by_bucket]
    for bucket, options in binds:
        made = mc("mb", f"{alias}/{bucket}")
        if made.returncode != 0:
            sys.exit(f"mc mb {bucket}: {made.stderr}")
        # MinIO refuses the bind while it believes the target offline; the relay is up, so retry.
        for attempt in range(30):
            bound = mc("event", "add", f"{alias}/{bucket}", arn, "--event", "put", *options)
            if bound.returncode == 0:
                break
            time.sleep(1)
        else:
            sys.exit(f"mc event add {bucket}: {bound.stderr}")
    kubectl("apply", "-n", ns, "--server-side", "-f", "-", stdin=json.dumps(objects(ns, trials, rounds)))
    wait_until("every DataPipeline reconciled and every ScaledObject Ready",
               lambda: ready_counts(ns) == (len(trials), len(trials)), 180)
    time.sleep(3)  # zeroflow's scaler adopts the pipelines on its next tick
    if seen:
        sys.exit(f"Deployments scaled before any upload: {sorted(seen)}")
    if pods.workers:
        sys.exit(f"KEDA workers started before any upload: {sorted(pods.workers)}")

    for round_name, polling in ROUNDS:
        interval = polling or KEDA_DEFAULT_POLLING_SECONDS
        # A poller answers an upload at its next poll, so KEDA's sample depends on the upload's phase
        # within its polling loop. Before each upload, wait a uniformly random delay in [0, interval):
        # whatever the loop's phase at that moment, the upload's phase is then uniform, so KEDA's
        # samples are fair draws (mean: half an interval plus its own work), not an accident of the
        # spacing. After each upload, 1.5 s more, so that zeroflow's cold starts do not overlap.
        round_trials = [t for t in trials if t.round == round_name]
        print(f"round {round_name}: KEDA pollingInterval {interval} s, {len(round_trials)} uploads, each after "
              f"a random delay in [0, {interval}) s and 1.5 s after the previous", file=sys.stderr, flush=True)
        for t in round_trials:
            t.phase_delay = random.uniform(0, interval)
            time.sleep(t.phase_delay)
            s3_put(t.bucket, "in/object.csv", f"trial {t.bucket}\n".encode())
            t.answered = time.time()
            print(f"  trial {t.index:2d}: uploaded after a random delay of {t.phase_delay:6.3f} s",
                  file=sys.stderr, flush=True)
            time.sleep(1.5)
        # Every scale request and every output, or give up after two intervals and a minute.
        deadline = time.time() + 2 * interval + 60
        names = [n for t in round_trials for n in (t.zeroflow_deployment, t.keda_deployment)]
        while time.time() < deadline and not (all(n in seen for n in names)
                                              and all(len(t.output) == 2 for t in round_trials)):
            time.sleep(0.2)
    stop.set()
    pods.close()
    time.sleep(2)  # the operator's log line follows the PATCH's answer
    # Both the PUT's answer and MinIO's notification mean the object is stored, and MinIO sends
    # the notification while it answers. On a loaded machine this process's threads can see
    # either late (the GIL, the CPU), so a trial starts at whichever was seen first: the earlier
    # start adds the same time to both systems' samples, which can only lower KEDA's ratio.
    early = [(t.answered - t.relayed) * 1000 for t in trials if t.relayed is not None and t.relayed < t.answered]
    for t in trials:
        t.uploaded = min(t.answered, t.relayed) if t.relayed is not None else t.answered
    logged = operator_samples(args.zeroflow_log)
    for pipeline, at in first_leases(args.zeroflow_log).items():
        if pipeline in pods.by_pipeline:
            pods.by_pipeline[pipeline].ready.setdefault("zeroflow", at)

    missing = []
    for round_name, polling in ROUNDS:
        interval = polling or KEDA_DEFAULT_POLLING_SECONDS
        setting = f"pollingInterval {interval} s" + (" (KEDA's default: field omitted)" if polling is None else "")
        print(f"\n== round '{round_name}': KEDA {setting}; zeroflow's SQS long poll 20 s ==")
        print("trial  delay s  upload->scale ms: zeroflow       KEDA   | zeroflow's time, ms: upload->relay  relay->queued"
              "  queued->received  received->PATCH sent  PATCH  answered->watch")
        zf, keda, breakdown = [], [], {}
        # The same, counted from each system's own message being in its queue (SendMessage
        # answered): without MinIO's and the fan-out's share, which both systems pay alike.
        zf_queued, keda_queued = [], []
        for t in (t for t in trials if t.round == round_name):
            z = (seen[t.zeroflow_deployment] - t.uploaded) * 1000 if t.zeroflow_deployment in seen else None
            k = (seen[t.keda_deployment] - t.uploaded) * 1000 if t.keda_deployment in seen else None
            for name, value, into in ((t.zeroflow_deployment, z, zf), (t.keda_deployment, k, keda)):
                if value is None:
                    missing.append(name)
                else:
                    into.append(value)
            if t.zeroflow_deployment in seen and args.zeroflow_queue in t.sent:
                zf_queued.append((seen[t.zeroflow_deployment] - t.sent[args.zeroflow_queue]) * 1000)
            if t.keda_deployment in seen and t.keda_queue in t.sent:
                keda_queued.append((seen[t.keda_deployment] - t.sent[t.keda_queue]) * 1000)
            parts = "n/a"
            sent = t.sent.get(args.zeroflow_queue)
            if t.pipeline in logged and t.relayed and sent and t.zeroflow_deployment in seen:
                received, patch_sent, answered = logged[t.pipeline]
                steps = (t.relayed - t.uploaded, sent - t.relayed, received - sent, patch_sent - received,
                         answered - patch_sent, seen[t.zeroflow_deployment] - answered)
                for label, value in zip(STEPS, steps):
                    breakdown.setdefault(label, []).append(value * 1000)
                parts = "  ".join(f"{v * 1000:8.1f}" for v in steps)
            fmt = lambda v: "missing" if v is None else f"{v:.1f}"
            print(f"{t.index:5d}  {t.phase_delay:7.3f}  {fmt(z):>24}  {fmt(k):>9}   | {parts}")
        if zf and keda:
            print(f"zeroflow upload->scale: {summary(zf)}")
            print(f"KEDA     upload->scale: {summary(keda)}")
            for label in STEPS:
                if label in breakdown:
                    print(f"  zeroflow {label:>22}: {summary(breakdown[label])}")
            print(f"ratio KEDA / zeroflow, upload->scale ({setting}): {ratios(keda, zf)}")
        if zf_queued and keda_queued:
            print(f"zeroflow queued->scale: {summary(zf_queued)}")
            print(f"KEDA     queued->scale: {summary(keda_queued)}")
            print(f"ratio KEDA / zeroflow, queued->scale: {ratios(keda_queued, zf_queued)}")
        print_outputs(round_name, setting, [t for t in trials if t.round == round_name], seen, missing)
    print(f"\nMinIO's notification reached the relay before this process read the PUT's answer in {len(early)} "
          f"of {len(trials)} trials" + (f" (by {min(early):.1f} to {max(early):.1f} ms); those start at the notification"
                                        if early else ""))
    if pods.errors:
        print(f"listing pods failed {len(pods.errors)} times; the first: {pods.errors[0]}")
    if missing:
        sys.exit(f"no scale-up or no output seen for {len(missing)}: {missing}")


if __name__ == "__main__":
    main()
