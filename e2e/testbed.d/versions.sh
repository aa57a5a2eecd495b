# Pinned versions of the testbed's components. Bumping one rebuilds only that one.
K8S_VERSION=v1.34.4
ETCD_VERSION=v3.6.16
KWOK_VERSION=v0.7.0
HELM_VERSION=v3.19.5
# MinIO publishes no semver tags (the community edition is source-only), so pin pseudo-versions.
MINIO_VERSION=v0.0.0-20260212201848-7aac2a2c5b7c
MC_VERSION=v0.0.0-20250313080218-cf909e1063a9
# Prometheus (cmd/prometheus, cmd/promtool) for the chart's alert rule tests and the dashboard
# test; its Go module tags v0.3MM.P for Prometheus v3.MM.P.
PROMETHEUS_VERSION=v0.316.0
# prometheus-operator's CRDs (ServiceMonitor, PodMonitor, PrometheusRule), from its Go module,
# so the apiserver validates the chart's monitoring objects.
PROMETHEUS_OPERATOR_VERSION=v0.85.0
