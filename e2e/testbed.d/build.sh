#!/usr/bin/env bash
# Builds the testbed's binaries from Go modules, once, into $ZF_CACHE/bin/<tool>-<version>/.
# Every build is skipped when its stamp says the wanted version is already there.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
. "$here/versions.sh"

ZF_CACHE="${ZF_CACHE:-$HOME/.cache/zeroflow-testbed}"
export GOTOOLCHAIN=local GOFLAGS=-buildvcs=false CGO_ENABLED=0
export GOMODCACHE="$ZF_CACHE/gomod" GOCACHE="$ZF_CACHE/gocache"
mkdir -p "$ZF_CACHE/src" "$ZF_CACHE/bin" "$GOMODCACHE" "$GOCACHE"

log() { printf '[testbed build %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

# bin_dir TOOL VERSION -> the directory holding that build
bin_dir() { echo "$ZF_CACHE/bin/$1-$2"; }
is_built() { [[ -f "$(bin_dir "$1" "$2")/.built" ]]; }
mark_built() { echo "$2" >"$(bin_dir "$1" "$2")/.built"; }

timed() {
  local name=$1 start=$SECONDS; shift
  "$@"
  log "$name done in $((SECONDS - start)) s"
}

build_kubernetes() {
  local v=$K8S_VERSION out; out=$(bin_dir kubernetes "$v")
  if is_built kubernetes "$v" && [[ "$("$out/kube-apiserver" --version 2>/dev/null)" == "Kubernetes $v" ]]; then return; fi
  log "building Kubernetes $v (kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, kubelet); a cold build takes tens of minutes"
  local mod="$ZF_CACHE/src/kubernetes-$v"; mkdir -p "$mod" "$out"
  # k8s.io/kubernetes requires every staging module at v0.0.0; point each at the matching v0.x tag.
  local gomod staging minor=${v#v1.}; minor=${minor%%.*}
  gomod=$(cd "$mod" && go mod download -json "k8s.io/kubernetes@$v" | sed -n 's/.*"GoMod": "\(.*\)",*/\1/p')
  staging=$(grep -E '^\s*k8s\.io/[a-z0-9-]+ v0\.0\.0\s*$' "$gomod" | awk '{print $1}' | sort -u)
  {
    echo "module zeroflow.dev/testbed/kubernetes"
    echo "go 1.24"
    echo "require k8s.io/kubernetes $v"
    for m in $staging; do echo "replace $m => $m v0.${v#v1.}"; done
  } >"$mod/go.mod"
  cat >"$mod/tools.go" <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
GO
  (cd "$mod" && go mod tidy 2>&1 | grep -v '^go: downloading' >&2 || true)
  local ld="" p
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $p.gitVersion=$v -X $p.gitMajor=1 -X $p.gitMinor=$minor"
    ld+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z -X $p.gitCommit=0000000000000000000000000000000000000000"
  done
  (cd "$mod" && go build -trimpath -ldflags "-s -w $ld" -o "$out/" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl)
  mark_built kubernetes "$v"
}

build_kubelet() {
  local v=$K8S_VERSION out; out=$(bin_dir kubernetes "$v")
  [[ -x "$out/kubelet" ]] && return
  build_kubernetes
  local mod="$ZF_CACHE/src/kubernetes-$v" ld="" p minor=${v#v1.}; minor=${minor%%.*}
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $p.gitVersion=$v -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
  done
  log "building kubelet $v"
  (cd "$mod" && go build -trimpath -ldflags "-s -w $ld" -o "$out/" k8s.io/kubernetes/cmd/kubelet)
}

build_etcd() {
  local v=$ETCD_VERSION out; out=$(bin_dir etcd "$v")
  is_built etcd "$v" && return
  log "building etcd $v"
  # go install refuses a module with replace directives, so build it as a dependency of a throwaway module.
  local mod="$ZF_CACHE/src/etcd-$v"; mkdir -p "$mod" "$out"
  printf 'module zeroflow.dev/testbed/etcd\ngo 1.24\n' >"$mod/go.mod"
  (cd "$mod" && go get "go.etcd.io/etcd/server/v3@$v" >/dev/null &&
    go build -trimpath -ldflags "-s -w" -o "$out/etcd" go.etcd.io/etcd/server/v3)
  mark_built etcd "$v"
}

# go_install TOOL VERSION PACKAGE [LDFLAGS] [TAGS]
go_install() {
  local tool=$1 v=$2 pkg=$3 ld=${4:-} tags=${5:-} out; out=$(bin_dir "$tool" "$v")
  is_built "$tool" "$v" && return
  log "building $tool $v"
  mkdir -p "$out"
  GOBIN="$out" go install -trimpath -tags "$tags" -ldflags "-s -w $ld" "$pkg@$v"
  mark_built "$tool" "$v"
}

# containerd, its runc shim and ctr, for the real node. CGO_ENABLED=0 with containerd's own
# static-build tags (osusergo netgo static_build, as its Makefile's STATIC=1); no_btrfs,
# no_devmapper and no_zfs leave out the snapshotters that need cgo or are never used here.
build_containerd() {
  local v=$CONTAINERD_VERSION m=github.com/containerd/containerd/v2 out; out=$(bin_dir containerd "$v")
  is_built containerd "$v" && return
  log "building containerd $v (containerd, containerd-shim-runc-v2, ctr)"
  mkdir -p "$out"
  GOBIN="$out" go install -trimpath -tags "no_btrfs no_devmapper no_zfs urfave_cli_no_docs osusergo netgo static_build" \
    -ldflags "-s -w -X $m/version.Version=$v" \
    "$m/cmd/containerd@$v" "$m/cmd/containerd-shim-runc-v2@$v" "$m/cmd/ctr@$v"
  mark_built containerd "$v"
}

build_kwok() { go_install kwok "$KWOK_VERSION" sigs.k8s.io/kwok/cmd/kwok "-X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION"; }
build_minio() { go_install minio "$MINIO_VERSION" github.com/minio/minio; }
build_mc() { go_install mc "$MC_VERSION" github.com/minio/mc; }
build_helm() {
  local minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
  # Unstamped helm assumes Kubernetes 1.20 when offline; stamp the testbed's version.
  go_install helm "$HELM_VERSION" helm.sh/helm/v3/cmd/helm \
    "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$minor -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$minor"
}

# Prometheus and promtool: the tests only scrape static loopback targets, so every service
# discovery plugin is left out (remove_all_sd), which halves the build.
prometheus_ldflags() {
  local m=${PROMETHEUS_VERSION#v0.}
  echo "-X github.com/prometheus/common/version.Version=3.${m%%.*}.${m#*.}"
}
build_promtool() {
  go_install promtool "$PROMETHEUS_VERSION" github.com/prometheus/prometheus/cmd/promtool "$(prometheus_ldflags)" remove_all_sd
}
build_prometheus() {
  go_install prometheus "$PROMETHEUS_VERSION" github.com/prometheus/prometheus/cmd/prometheus "$(prometheus_ldflags)" remove_all_sd
}

# The CRDs of prometheus-operator the chart renders objects of, copied out of its Go module
# (example/prometheus-operator-crd/); nothing is built.
build_monitoring_crds() {
  local v=$PROMETHEUS_OPERATOR_VERSION out dir crd; out=$(bin_dir monitoring-crds "$v")
  is_built monitoring-crds "$v" && return
  log "fetching prometheus-operator $v's CRDs"
  dir=$(go mod download -json "github.com/prometheus-operator/prometheus-operator@$v" | sed -n 's/.*"Dir": "\(.*\)",*/\1/p')
  mkdir -p "$out"
  for crd in servicemonitors podmonitors prometheusrules; do
    cp "$dir/example/prometheus-operator-crd/monitoring.coreos.com_$crd.yaml" "$out/"
  done
  mark_built monitoring-crds "$v"
}

# The optional services (`e2e/testbed up --with ...`). Java ones are fetched from Maven Central
# into a local repository in the cache; the classpath is every jar copied into the tool's dir.

# need_java: Kafka 4 and ElasticMQ need Java 17 or later, and mvn to fetch them.
need_java() {
  command -v mvn >/dev/null || { log "mvn (Maven) is required to fetch the Java services"; exit 1; }
  local major
  major=$(java -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p')
  major=${major%%.*}
  ((${major:-0} >= 17)) || { log "Java 17 or later is required (found: ${major:-none})"; exit 1; }
}

# maven_fetch TOOL VERSION DEPENDENCIES-XML: resolves the dependencies' runtime closure with a
# throwaway pom and copies the jars into $ZF_CACHE/bin/TOOL-VERSION/libs.
maven_fetch() {
  local tool=$1 v=$2 deps=$3 out src; out=$(bin_dir "$tool" "$v"); src="$ZF_CACHE/src/$tool-$v"
  need_java
  mkdir -p "$src" "$out"
  cat >"$src/pom.xml" <<POM
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>dev.zeroflow.testbed</groupId>
  <artifactId>$tool</artifactId>
  <version>$v</version>
  <packaging>pom</packaging>
  <dependencies>
$deps
  </dependencies>
</project>
POM
  rm -rf "$out/libs"
  # --strict-checksums: a jar whose checksum does not match Maven Central's fails the build.
  (cd "$src" && mvn -B -q -Dstyle.color=never --strict-checksums -Dmaven.repo.local="$ZF_CACHE/m2" \
    dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$out/libs")
}

build_elasticmq() {
  local v=$ELASTICMQ_VERSION
  is_built elasticmq "$v" && return
  log "fetching ElasticMQ $v"
  maven_fetch elasticmq "$v" "    <dependency><groupId>org.elasticmq</groupId><artifactId>elasticmq-server_2.13</artifactId><version>$v</version></dependency>"
  mark_built elasticmq "$v"
}

build_kafka() {
  local v=$KAFKA_VERSION
  if ! is_built kafka "$v"; then
    log "fetching Apache Kafka $v"
    # kafka-tools brings the CLIs (kafka-topics, console consumer/producer, consumer groups);
    # Kafka Connect's runtime, which it also names, is left out: no tool used here needs it.
    maven_fetch kafka "$v" "    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$v</version></dependency>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka-tools</artifactId><version>$v</version>
      <exclusions><exclusion><groupId>org.apache.kafka</groupId><artifactId>connect-runtime</artifactId></exclusion></exclusions>
    </dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId><version>$KAFKA_LOG4J_VERSION</version></dependency>"
    mark_built kafka "$v"
  fi
  kafka_scripts "$(bin_dir kafka "$v")"
}

# kafka_scripts DIR: the log configuration and the CLIs as plain scripts (what bin/*.sh of Kafka's
# own distribution run); rewritten on every build, so a change here needs no new fetch.
kafka_scripts() {
  local out=$1 name class
  # WARN to stderr (the testbed's log file), and the line that says the broker started.
  cat >"$out/log4j2.properties" <<'PROPS'
rootLogger.level = WARN
rootLogger.appenderRef.stdout.ref = STDOUT
appender.stdout.type = Console
appender.stdout.name = STDOUT
appender.stdout.target = SYSTEM_ERR
appender.stdout.layout.type = PatternLayout
appender.stdout.layout.pattern = [%d] %p %m (%c)%n
logger.started.name = kafka.server.KafkaRaftServer
logger.started.level = INFO
PROPS
  mkdir -p "$out/bin"
  for name in kafka-topics:org.apache.kafka.tools.TopicCommand \
    kafka-console-consumer:org.apache.kafka.tools.consumer.ConsoleConsumer \
    kafka-console-producer:org.apache.kafka.tools.ConsoleProducer \
    kafka-consumer-groups:org.apache.kafka.tools.consumer.group.ConsumerGroupCommand \
    kafka-storage:kafka.tools.StorageTool kafka-server:kafka.Kafka; do
    class=${name#*:}; name=${name%%:*}
    {
      echo '#!/bin/sh'
      echo "# $name of Apache Kafka, fetched from Maven Central by zeroflow's e2e/testbed.d/build.sh."
      echo '# KAFKA_HEAP_OPTS sets the JVM options (default: a small heap and fast start, as for a CLI).'
      # shellcheck disable=SC2016,SC1003  # written for the script to expand; a literal backslash
      echo 'exec java ${KAFKA_HEAP_OPTS:--Xms16m -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1} \'
      echo "  -Dlog4j2.configurationFile='$out/log4j2.properties' -cp '$out/libs/*' $class \"\$@\""
    } >"$out/bin/$name.tmp"
    chmod +x "$out/bin/$name.tmp"
    mv "$out/bin/$name.tmp" "$out/bin/$name"
  done
}

build_azurite() {
  local v=$AZURITE_VERSION out; out=$(bin_dir azurite "$v")
  is_built azurite "$v" && return
  grep -q "\"azurite\": \"$v\"" "$here/azurite/package.json" ||
    { log "testbed.d/azurite/package.json does not pin azurite $v: update it and its lock file"; exit 1; }
  local node; node=$(node --version 2>/dev/null || true); node=${node#v}; node=${node%%.*}
  ((${node:-0} >= 20)) || { log "Node.js 20 or later is required for Azurite $v (found: ${node:-none})"; exit 1; }
  log "installing Azurite $v"
  mkdir -p "$out"
  cp "$here/azurite/package.json" "$here/azurite/package-lock.json" "$out/"
  # npm ci installs exactly the lock file's tree (versions and integrity hashes); no package of
  # it has install scripts, so none are run.
  (cd "$out" && npm ci --omit=dev --ignore-scripts --no-audit --no-fund --cache "$ZF_CACHE/npm" >&2)
  mark_built azurite "$v"
}

build_moto() {
  local v=$MOTO_VERSION out; out=$(bin_dir moto "$v")
  is_built moto "$v" && return
  grep -qx "moto==$v" "$here/moto/requirements.txt" ||
    { log "testbed.d/moto/requirements.txt does not pin moto $v: update it"; exit 1; }
  python3 -c 'import venv, ensurepip' 2>/dev/null || { log "moto needs Python's venv module (Debian: python3-venv)"; exit 1; }
  log "installing moto $v (PyPI)"
  rm -rf "$out"; mkdir -p "$out"
  python3 -m venv "$out/venv"
  # --no-deps: exactly the pinned tree, nothing resolved anew.
  "$out/venv/bin/pip" install -q --disable-pip-version-check --no-deps --cache-dir "$ZF_CACHE/pip" \
    -r "$here/moto/requirements.txt" >&2
  mark_built moto "$v"
}

build_fake_gcs_server() { go_install fake-gcs-server "$FAKE_GCS_VERSION" github.com/fsouza/fake-gcs-server; }

main() {
  local what=("$@") t start=$SECONDS
  ((${#what[@]})) || what=(etcd kubernetes kwok helm minio mc promtool prometheus monitoring_crds)
  for t in "${what[@]}"; do timed "$t" "build_$t"; done
  log "all builds ready in $((SECONDS - start)) s"
}

main "$@"
