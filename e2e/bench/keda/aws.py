"""The testbed's SQS (ElasticMQ) and S3 (MinIO), with the standard library only, for
`e2e/bench/keda/side_by_side.py` and the KEDA worker's stand-in `keda_worker.py`: the same client
code on both sides of the benchmark. Loopback only; endpoints and keys from `e2e/testbed env`.
"""

import datetime
import hashlib
import hmac
import http.client
import json
import os
import sys
import threading
import urllib.parse

ENV = os.environ


def loopback(url):
    """(host, port) of `url`; refuses anything but loopback (the benchmark's network rule)."""
    parsed = urllib.parse.urlparse(url)
    if parsed.hostname not in ("127.0.0.1", "localhost"):
        sys.exit(f"refusing {url}: only services on loopback")
    return parsed.hostname, parsed.port


class Sqs:
    """ElasticMQ's JSON protocol (it checks no signature), one kept-alive connection per thread."""

    def __init__(self, timeout=10):
        # A long poll holds the answer for up to its WaitTimeSeconds: `timeout` must exceed it.
        self.host, self.port = loopback(ENV["ZF_SQS_ENDPOINT"])
        self.timeout = timeout
        self.local = threading.local()

    def call(self, action, body):
        for attempt in (1, 2):
            conn = getattr(self.local, "conn", None) or http.client.HTTPConnection(self.host, self.port,
                                                                                  timeout=self.timeout)
            self.local.conn = conn
            try:
                conn.request("POST", "/", json.dumps(body), {"Content-Type": "application/x-amz-json-1.0",
                                                            "X-Amz-Target": f"AmazonSQS.{action}"})
                response = conn.getresponse()
                answer = response.read()
            except (OSError, http.client.HTTPException):
                # A kept-alive connection the server closed: one retry on a new one.
                conn.close()
                self.local.conn = None
                if attempt == 2:
                    raise
                continue
            if response.status != 200:
                raise RuntimeError(f"SQS {action}: {response.status} {answer[:200]!r}")
            return json.loads(answer) if answer else {}


def s3(method, bucket, key, data=b""):
    """One request to MinIO, signed with SigV4 (the testbed's static keys); returns the body."""
    host, port = loopback(ENV["ZF_S3_ENDPOINT"])
    access, secret, region = ENV["ZF_S3_ACCESS_KEY"], ENV["ZF_S3_SECRET_KEY"], ENV.get("ZF_S3_REGION", "us-east-1")
    amz_date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = f"/{bucket}/{urllib.parse.quote(key, safe='/')}"
    payload = hashlib.sha256(data).hexdigest()
    headers = {"host": f"{host}:{port}", "x-amz-content-sha256": payload, "x-amz-date": amz_date}
    signed = ";".join(sorted(headers))
    canonical = "\n".join([method, path, "", *(f"{k}:{headers[k]}" for k in sorted(headers)), "", signed, payload])
    scope = f"{amz_date[:8]}/{region}/s3/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key_bytes = ("AWS4" + secret).encode()
    for part in (amz_date[:8], region, "s3", "aws4_request"):
        key_bytes = hmac.new(key_bytes, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key_bytes, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["Authorization"] = f"AWS4-HMAC-SHA256 Credential={access}/{scope}, SignedHeaders={signed}, Signature={signature}"
    conn = http.client.HTTPConnection(host, port, timeout=10)
    conn.request(method, path, data if method == "PUT" else None, headers)
    response = conn.getresponse()
    answer = response.read()
    conn.close()
    if response.status != 200:
        raise RuntimeError(f"{method} {path}: {response.status} {answer[:300]!r}")
    return answer


def s3_put(bucket, key, data):
    """PUT an object to MinIO."""
    s3("PUT", bucket, key, data)


def s3_get(bucket, key):
    """GET an object from MinIO: its content."""
    return s3("GET", bucket, key)
