{{/* Name of the chart, overridable. */}}
{{- define "zeroflow.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified name: "<release>-zeroflow", or the release name when it already contains the chart name. */}}
{{- define "zeroflow.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "zeroflow.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "zeroflow.selectorLabels" -}}
app.kubernetes.io/name: {{ include "zeroflow.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "zeroflow.labels" -}}
helm.sh/chart: {{ include "zeroflow.chart" . }}
{{ include "zeroflow.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: zeroflow
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "zeroflow.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "zeroflow.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* image reference: repository@digest, else repository:tag (tag defaults to appVersion); the
repository's registry replaced by global.imageRegistry when set (see zeroflow.repository). */}}
{{- define "zeroflow.imageRef" -}}
{{- $img := index . 0 }}{{- $root := index . 1 }}
{{- $repository := include "zeroflow.repository" (list $img.repository $root) }}
{{- if $img.digest }}
{{- printf "%s@%s" $repository $img.digest }}
{{- else }}
{{- printf "%s:%s" $repository (default $root.Chart.AppVersion $img.tag) }}
{{- end }}
{{- end }}

{{/* A repository with its registry replaced by global.imageRegistry. The registry is the first
path component when it contains "." or ":" or is "localhost" (Docker's reference rule; without
one the image is on Docker Hub and the whole repository is kept). */}}
{{- define "zeroflow.repository" -}}
{{- $repository := index . 0 }}{{- $root := index . 1 }}
{{- $registry := ((($root.Values).global).imageRegistry) | default "" | trimSuffix "/" }}
{{- if $registry }}
{{- $parts := splitList "/" $repository }}
{{- $first := first $parts }}
{{- if and (gt (len $parts) 1) (or (contains "." $first) (contains ":" $first) (eq $first "localhost")) }}
{{- $repository = join "/" (rest $parts) }}
{{- end }}
{{- $repository = printf "%s/%s" $registry $repository }}
{{- end }}
{{- $repository }}
{{- end }}

{{/* The job label Prometheus gives the operator's series through the chart's monitor:
prometheus-operator names a ServiceMonitor's job after the Service, a PodMonitor's
"<namespace>/<name>". */}}
{{- define "zeroflow.scrapeJob" -}}
{{- if .Values.podMonitor.enabled }}
{{- printf "%s/%s" .Release.Namespace (include "zeroflow.fullname" .) }}
{{- else }}
{{- include "zeroflow.fullname" . }}
{{- end }}
{{- end }}

{{/* PromQL label matchers of this release's series: prometheusRule.selector, or the monitor's job. */}}
{{- define "zeroflow.ruleSelector" -}}
{{- default (printf "job=%q" (include "zeroflow.scrapeJob" .)) .Values.prometheusRule.selector }}
{{- end }}

{{- define "zeroflow.gatewayTokenSecret" -}}
{{- default (printf "%s-gateway-token" (include "zeroflow.fullname" .)) .Values.gatewayToken.existingSecret }}
{{- end }}

{{- define "zeroflow.workApiUrl" -}}
{{- default (printf "http://%s.%s.svc:%v" (include "zeroflow.fullname" .) .Release.Namespace .Values.ports.workApi) .Values.workApiUrl }}
{{- end }}

{{- define "zeroflow.leaderElectionId" -}}
{{- default (printf "%s-leader" (include "zeroflow.fullname" .)) .Values.leaderElection.id }}
{{- end }}

{{/* Rules the operator needs wherever it runs DataPipelines (ClusterRole, or Role per watched namespace). */}}
{{- define "zeroflow.workloadRules" -}}
# Exactly what the operator calls today. TokenReviews (worker authentication) are a separate
# ClusterRole.
- apiGroups: ["zeroflow.dev"]
  resources: ["datapipelines"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["zeroflow.dev"]
  resources: ["datapipelines/status"]
  verbs: ["patch"]
# Worker Deployments and ServiceAccounts: server-side apply needs create and patch; deletion is
# left to the garbage collector through owner references.
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch"]
# The scaler is the only writer of replicas, through the scale subresource; it reads the live
# count when it takes a pipeline up (a start, a restart, a leader change) and adopts it.
- apiGroups: ["apps"]
  resources: ["deployments/scale"]
  verbs: ["get", "patch"]
- apiGroups: [""]
  resources: ["serviceaccounts"]
  verbs: ["get", "list", "watch", "create", "patch"]
{{- if not .Values.rbac.restrictSecretAccess }}
# Store credentials referenced by pipelines; read one by one, never listed or watched. With
# rbac.restrictSecretAccess, only in rbac.secretNamespaces instead (templates/rbac.yaml).
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
{{- end }}
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
# A worker pod whose volumes the kubelet cannot mount says why only in its FailedMount Events:
# read for pods still waiting for their volumes, to fall back from the runner's image volume
# (runnerDelivery) on a kubelet without the ImageVolume feature gate.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["list"]
# Worker pods: watched so that a pipeline whose workers cannot start (image pull, scheduling,
# crash loop) says so in its conditions; before a scale-down the scaler sets their
# controller.kubernetes.io/pod-deletion-cost, so pods holding leases are removed last.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch", "patch"]
{{- end }}
