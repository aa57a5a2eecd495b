# Pinned versions of the testbed's components. Bumping one rebuilds only that one.
K8S_VERSION=v1.34.4
ETCD_VERSION=v3.6.16
KWOK_VERSION=v0.7.0
HELM_VERSION=v3.19.5
# containerd for the real node (`node up`): 2.x mounts Kubernetes image volumes (KEP-4639),
# which Debian's 1.6 cannot; built from the Go module with its static-build tags and without
# the cgo snapshotters (btrfs, devmapper, zfs), which the node does not use.
CONTAINERD_VERSION=v2.2.9
# MinIO publishes no semver tags (the community edition is source-only), so pin pseudo-versions.
MINIO_VERSION=v0.0.0-20260212201848-7aac2a2c5b7c
MC_VERSION=v0.0.0-20250313080218-cf909e1063a9
# Prometheus (cmd/prometheus, cmd/promtool) for the chart's alert rule tests and the dashboard
# test; its Go module tags v0.3MM.P for Prometheus v3.MM.P.
PROMETHEUS_VERSION=v0.316.0
# prometheus-operator's CRDs (ServiceMonitor, PodMonitor, PrometheusRule), from its Go module,
# so the apiserver validates the chart's monitoring objects.
PROMETHEUS_OPERATOR_VERSION=v0.85.0
# Optional services (`e2e/testbed up --with ...`), each from its own registry.
# ElasticMQ (SQS): Maven Central, org.elasticmq:elasticmq-server_2.13.
ELASTICMQ_VERSION=1.7.1
# Apache Kafka in KRaft mode: Maven Central, org.apache.kafka:kafka_2.13 (+ kafka-tools for the CLIs).
KAFKA_VERSION=4.1.1
# log4j's SLF4J binding, which Kafka's distribution ships but its POM does not name.
KAFKA_LOG4J_VERSION=2.24.3
# Azurite (Azure Blob): npm. 3.35.0 is the newest that runs on Node.js 20 (3.36 needs 21, 3.37 22);
# its whole dependency tree is pinned by testbed.d/azurite/package-lock.json.
AZURITE_VERSION=3.35.0
# fake-gcs-server (GCS): Go module github.com/fsouza/fake-gcs-server.
FAKE_GCS_VERSION=v1.56.1
# moto (server mode, PyPI): an SQS that verifies SigV4 signatures when its IAM auth is on; its
# whole dependency tree is pinned by testbed.d/moto/requirements.txt.
MOTO_VERSION=5.2.5
