//! Tests of the Helm chart (`charts/zeroflow`), its alert rules, the Argo CD health check and
//! least-privilege RBAC, with the testbed's helm, kubectl, promtool and apiserver.
//!
//! `render`: what `helm template` and `helm lint` make of the chart (no cluster needed).
//! `alerts`: the PrometheusRule through `promtool check rules` and `promtool test rules`.
//! `cluster`: renders applied to the apiserver, helm's refusal of bad values, CRD adoption.
//! `release`: a real release from install to uninstall (restricted Pod Security, RBAC, the pod
//! patch guard, upgrade). `limited`: a release confined to two namespaces with the non-default
//! values installed. `secrets`: the least-privilege Secrets mode. `support`: what those share.
//! `trust`: the README's extraVolumes recipe for a store signed by a private CA, against a real
//! MinIO serving TLS.
//!
//! The real CRD (datapipelines.zeroflow.dev) is never modified: releases are installed from a
//! test copy of the chart whose CRD is renamed into a per-test API group, so other suites
//! sharing the testbed are not disturbed. Every release, namespace and cluster-scoped object a
//! test creates is removed when it ends.

mod alerts;
mod cluster;
mod limited;
mod release;
mod render;
mod secrets;
mod support;
mod trust;
