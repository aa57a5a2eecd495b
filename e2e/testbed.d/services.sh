# shellcheck shell=bash disable=SC2154  # sourced by e2e/testbed, which sets $here, $STATE and $ZF_CACHE
# Optional services of the testbed, real implementations from the package registries, started
# only when asked for (`e2e/testbed up --with sqs,kafka,azurite,gcs`, or ZF_TESTBED_SERVICES):
#
#   sqs      ElasticMQ (Maven Central)            SQS, query and JSON protocols
#   kafka    Apache Kafka, KRaft (Maven Central)  one combined broker+controller, a plaintext
#                                                 listener, a SASL_SSL one and an SSL one that
#                                                 requires a client certificate; MinIO publishes
#                                                 bucket notifications to the first two
#   azurite  Azurite (npm)                        Azure Blob Storage, blob service only
#   gcs      fake-gcs-server (Go module proxy)    Google Cloud Storage, JSON and XML APIs over HTTP
#   moto     moto's server (PyPI)                 SQS, IAM and STS that verify SigV4 (IAM auth);
#                                                 no process: each test starts its own server,
#                                                 since its auth is switched on after a count of
#                                                 requests (`env` exports ZF_MOTO_SERVER)
#
# Each runs as a plain process on 127.0.0.1 with a random port, logs to $STATE/logs/<name>.log
# and records its PID in $STATE/pids/<name>, so `down` stops exactly it. Uses e2e/testbed's
# helpers (log, die, start, wait_for, free_port).

SERVICES_ALL=(sqs kafka azurite gcs moto)

# The well-known Azurite development account (Azurite's and the Azure SDKs' documented default;
# it is public, so nothing secret is exported).
AZURITE_ACCOUNT=devstoreaccount1
AZURITE_KEY='Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=='
# The topic MinIO publishes its bucket notifications to, and the one it publishes to through the
# SASL_SSL listener.
KAFKA_TOPIC=zeroflow-events
KAFKA_TOPIC_TLS=zeroflow-events-tls
KAFKA_TOPIC_PARTITIONS=2
# The SASL user of the SASL_SSL listener (PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512, one password,
# made by `up`).
KAFKA_SASL_USER=zeroflow
# ElasticMQ's account id and region appear in queue URLs and ARNs; it checks no signature, so any
# access key works.
SQS_ACCOUNT_ID=000000000000
SQS_REGION=us-east-1

# services_parse LIST: the services named in a comma-separated LIST ("all" for every one), in
# start order, one per line; dies on an unknown name.
services_parse() {
  local list=${1//,/ } name known
  for name in $list; do
    if [[ "$name" == all ]]; then printf '%s\n' "${SERVICES_ALL[@]}"; continue; fi
    known=""
    for s in "${SERVICES_ALL[@]}"; do [[ "$s" == "$name" ]] && known=1; done
    [[ -n "$known" ]] || die "unknown service '$name' (known: ${SERVICES_ALL[*]}, all)"
    echo "$name"
  done | awk '!seen[$0]++'
}

# service_tool SERVICE: the build.sh target that provides it.
service_tool() {
  case $1 in
    sqs) echo elasticmq ;;
    kafka) echo kafka ;;
    azurite) echo azurite ;;
    gcs) echo fake_gcs_server ;;
    moto) echo moto ;;
  esac
}

# service_component SERVICE: the process name (PID file, log file) of a service.
service_component() {
  case $1 in
    sqs) echo elasticmq ;;
    kafka) echo kafka ;;
    azurite) echo azurite ;;
    gcs) echo fake-gcs-server ;;
    moto) ;; # no process of its own
  esac
}

# The JVM services are small: a bounded heap keeps them from sizing it off the machine's 24 GiB,
# the serial collector from starting a GC thread per core, and the C1 compiler alone halves their
# start (ElasticMQ: 7 s and 3 CPU-seconds instead of 15 s and 6 on the shared 2 cores).
java_opts() { echo "-Xms32m -Xmx$1 -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -XX:+ExitOnOutOfMemoryError"; }

# services_launch SERVICE...: starts each service's process without waiting for it, so the JVMs
# warm up while the control plane starts; records ports in $STATE/services/.
services_launch() {
  local s
  mkdir -p "$STATE/services"
  for s in "$@"; do "launch_$s"; done
}

# services_wait SERVICE...: waits until each service answers; appends its settings to the env file.
services_wait() {
  local s
  for s in "$@"; do "wait_$s"; done
}

launch_sqs() {
  local port dir="$STATE/services/sqs"; port=$(free_port); mkdir -p "$dir"
  echo "$port" >"$dir/port"
  # Only the SQS endpoint: the statistics UI (rest-stats) stays off. Queues live in memory.
  cat >"$dir/elasticmq.conf" <<CONF
include classpath("application.conf")
node-address { protocol = http, host = "127.0.0.1", port = $port, context-path = "" }
rest-sqs { enabled = true, bind-port = $port, bind-hostname = "127.0.0.1", sqs-limits = strict }
rest-stats { enabled = false, bind-port = 0, bind-hostname = "127.0.0.1" }
generate-node-address = false
aws { region = "$SQS_REGION", accountId = "$SQS_ACCOUNT_ID" }
CONF
  log "starting ElasticMQ (SQS) on 127.0.0.1:$port"
  # shellcheck disable=SC2046  # java_opts is a list of flags
  start elasticmq java $(java_opts 128m) -Dconfig.file="$dir/elasticmq.conf" \
    -cp "$ZF_CACHE/bin/elasticmq-$ELASTICMQ_VERSION/libs/*" org.elasticmq.server.Main
}

wait_sqs() {
  local port; port=$(cat "$STATE/services/sqs/port")
  wait_for elasticmq 120 curl -fsS -H 'Content-Type: application/x-amz-json-1.0' \
    -H 'X-Amz-Target: AmazonSQS.ListQueues' -d '{}' "http://127.0.0.1:$port/"
  cat >>"$STATE/services/env" <<ENV
export ZF_SQS_ENDPOINT='http://127.0.0.1:$port'
export ZF_SQS_REGION='$SQS_REGION'
export ZF_SQS_ACCOUNT_ID='$SQS_ACCOUNT_ID'
export ZF_SQS_ACCESS_KEY='zeroflow'
export ZF_SQS_SECRET_KEY='zeroflow'
ENV
}

launch_kafka() {
  local port secure mtls controller dir="$STATE/services/kafka" bin="$ZF_CACHE/bin/kafka-$KAFKA_VERSION/bin"
  port=$(free_port); secure=$(free_port); mtls=$(free_port); controller=$(free_port); mkdir -p "$dir/data"
  echo "$port" >"$dir/port"; echo "$secure" >"$dir/secure-port"; echo "$mtls" >"$dir/mtls-port"
  # The SASL_SSL listener's identity: a key and a certificate for 127.0.0.1 signed by the
  # testbed's CA (pki.sh), in one PEM file as Kafka's PEM keystore wants it; the password of
  # the SASL user.
  make_serving_cert "$STATE/pki" kafka "IP:127.0.0.1, DNS:localhost"
  cat "$STATE/pki/kafka.key" "$STATE/pki/kafka.crt" >"$dir/keystore.pem"
  openssl rand -hex 16 >"$dir/sasl-password"
  local password; password=$(cat "$dir/sasl-password")
  # One process that is both broker and the KRaft controller; every internal topic has one
  # replica; consumer groups rebalance at once instead of after 3 s. The SASL_SSL listener takes
  # PLAIN (users in its JAAS line), SCRAM-SHA-256 and SCRAM-SHA-512 (users stored in the cluster
  # metadata by `kafka-storage format --add-scram`); a client certificate is asked for, not
  # required. The SSL listener authenticates by client certificate alone: one signed by the
  # testbed CA is required, so a client without one fails its TLS handshake.
  cat >"$dir/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$controller
listeners=PLAINTEXT://127.0.0.1:$port,SASL_SSL://127.0.0.1:$secure,SSL://127.0.0.1:$mtls,CONTROLLER://127.0.0.1:$controller
advertised.listeners=PLAINTEXT://127.0.0.1:$port,SASL_SSL://127.0.0.1:$secure,SSL://127.0.0.1:$mtls
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL,SSL:SSL,CONTROLLER:PLAINTEXT
sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512
listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_$KAFKA_SASL_USER="$password";
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
ssl.keystore.type=PEM
ssl.keystore.location=$dir/keystore.pem
ssl.truststore.type=PEM
ssl.truststore.location=$STATE/pki/ca.crt
listener.name.sasl_ssl.ssl.client.auth=requested
listener.name.ssl.ssl.client.auth=required
log.dirs=$dir/data
num.partitions=1
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
PROPS
  # A KRaft log directory must be formatted with a cluster id before the first start, and only
  # then: `e2e/testbed start kafka` runs this command line again on the same data.
  local cluster_id
  cluster_id=$(python3 -c 'import base64, uuid; print(base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("="))')
  log "starting Kafka on 127.0.0.1:$port, SASL_SSL on 127.0.0.1:$secure, SSL (client certificates) on 127.0.0.1:$mtls (controller 127.0.0.1:$controller)"
  # shellcheck disable=SC2016  # expanded by the inner bash
  start kafka env KAFKA_HEAP_OPTS="$(java_opts 384m)" bash -c \
    '[[ -f "$4/meta.properties" ]] || "$1/kafka-storage" format -t "$2" -c "$3" --add-scram "$5" --add-scram "$6" >/dev/null || exit 1
     exec "$1/kafka-server" "$3"' \
    kafka "$bin" "$cluster_id" "$dir/server.properties" "$dir/data" \
    "SCRAM-SHA-256=[name=$KAFKA_SASL_USER,password=$password]" \
    "SCRAM-SHA-512=[name=$KAFKA_SASL_USER,password=$password]"
  # The operator's client certificate for the SSL listener, signed by the CA the broker trusts
  # for clients (ssl.truststore.location). The broker does not read it, so it is made while the
  # JVM starts (0.2-0.45 s of openssl), not before.
  make_client_cert "$STATE/pki" kafka-client "/CN=zeroflow-operator"
}

# kafka_answers: whether the broker accepts connections on its plaintext port.
kafka_answers() { bash -c "echo >/dev/tcp/127.0.0.1/$(cat "$STATE/services/kafka/port")" 2>/dev/null; }

wait_kafka() {
  local port secure mtls dir="$STATE/services/kafka" bin="$ZF_CACHE/bin/kafka-$KAFKA_VERSION/bin"
  port=$(cat "$dir/port"); secure=$(cat "$dir/secure-port"); mtls=$(cat "$dir/mtls-port")
  wait_for kafka 120 kafka_answers
  # Creating MinIO's topics proves the broker and its controller work; explicit, so their
  # partition count does not depend on which producer comes first. Records carry the time the
  # broker appended them (LogAppendTime), which tests compare with when they stored the object.
  local topic
  for topic in "$KAFKA_TOPIC" "$KAFKA_TOPIC_TLS"; do
    wait_for kafka 60 "$bin/kafka-topics" --bootstrap-server "127.0.0.1:$port" --create --if-not-exists \
      --topic "$topic" --partitions "$KAFKA_TOPIC_PARTITIONS" --replication-factor 1 \
      --config message.timestamp.type=LogAppendTime
  done
  cat >>"$STATE/services/env" <<ENV
export ZF_KAFKA_BROKERS='127.0.0.1:$port'
export ZF_KAFKA_TOPIC='$KAFKA_TOPIC'
export ZF_KAFKA_ARN='arn:minio:sqs::ZEROFLOW:kafka'
export ZF_KAFKA_ARN_NO_QUEUE='arn:minio:sqs::ZEROFLOWNOQ:kafka'
export ZF_KAFKA_BIN='$bin'
export ZF_KAFKA_SASL_SSL_BROKERS='127.0.0.1:$secure'
export ZF_KAFKA_TLS_TOPIC='$KAFKA_TOPIC_TLS'
export ZF_KAFKA_TLS_ARN='arn:minio:sqs::ZEROFLOWTLS:kafka'
export ZF_KAFKA_CA_FILE='$STATE/pki/ca.crt'
export ZF_KAFKA_SASL_USERNAME='$KAFKA_SASL_USER'
export ZF_KAFKA_SASL_PASSWORD='$(cat "$dir/sasl-password")'
export ZF_KAFKA_SSL_BROKERS='127.0.0.1:$mtls'
export ZF_KAFKA_CLIENT_CERT_FILE='$STATE/pki/kafka-client.crt'
export ZF_KAFKA_CLIENT_KEY_FILE='$STATE/pki/kafka-client.key'
ENV
}

# minio_kafka_env: the environment that gives MinIO its three Kafka targets: ZEROFLOW and
# ZEROFLOWNOQ on the plaintext listener, like the webhook's (ZEROFLOW persists events in a queue
# dir while Kafka is down, ZEROFLOWNOQ drops them), and ZEROFLOWTLS on the SASL_SSL listener
# (SCRAM-SHA-512, the broker's certificate verified against the testbed CA, which MinIO trusts
# from its certs dir's CAs/), to its own topic and with its own queue dir.
minio_kafka_env() {
  local brokers secure dir="$STATE/services/kafka"
  brokers="127.0.0.1:$(cat "$dir/port")"; secure="127.0.0.1:$(cat "$dir/secure-port")"
  mkdir -p "$STATE/minio/kafka-queue" "$STATE/minio/kafka-tls-queue"
  echo MINIO_NOTIFY_KAFKA_ENABLE_ZEROFLOW=on MINIO_NOTIFY_KAFKA_BROKERS_ZEROFLOW="$brokers" \
    MINIO_NOTIFY_KAFKA_TOPIC_ZEROFLOW="$KAFKA_TOPIC" \
    MINIO_NOTIFY_KAFKA_QUEUE_DIR_ZEROFLOW="$STATE/minio/kafka-queue" MINIO_NOTIFY_KAFKA_QUEUE_LIMIT_ZEROFLOW=100000 \
    MINIO_NOTIFY_KAFKA_ENABLE_ZEROFLOWNOQ=on MINIO_NOTIFY_KAFKA_BROKERS_ZEROFLOWNOQ="$brokers" \
    MINIO_NOTIFY_KAFKA_TOPIC_ZEROFLOWNOQ="$KAFKA_TOPIC" \
    MINIO_NOTIFY_KAFKA_ENABLE_ZEROFLOWTLS=on MINIO_NOTIFY_KAFKA_BROKERS_ZEROFLOWTLS="$secure" \
    MINIO_NOTIFY_KAFKA_TOPIC_ZEROFLOWTLS="$KAFKA_TOPIC_TLS" MINIO_NOTIFY_KAFKA_TLS_ZEROFLOWTLS=on \
    MINIO_NOTIFY_KAFKA_SASL_ZEROFLOWTLS=on MINIO_NOTIFY_KAFKA_SASL_MECHANISM_ZEROFLOWTLS=sha512 \
    MINIO_NOTIFY_KAFKA_SASL_USERNAME_ZEROFLOWTLS="$KAFKA_SASL_USER" \
    MINIO_NOTIFY_KAFKA_SASL_PASSWORD_ZEROFLOWTLS="$(cat "$dir/sasl-password")" \
    MINIO_NOTIFY_KAFKA_QUEUE_DIR_ZEROFLOWTLS="$STATE/minio/kafka-tls-queue" \
    MINIO_NOTIFY_KAFKA_QUEUE_LIMIT_ZEROFLOWTLS=100000
}

launch_azurite() {
  local port dir="$STATE/services/azurite"; port=$(free_port); mkdir -p "$dir/data"
  echo "$port" >"$dir/port"
  log "starting Azurite (Blob) on 127.0.0.1:$port"
  # --disableTelemetry: Azurite otherwise reports usage to Microsoft, which the network rule
  # forbids. --skipApiVersionCheck: clients newer than this Azurite (object_store's
  # x-ms-version) are served instead of refused.
  start azurite node "$ZF_CACHE/bin/azurite-$AZURITE_VERSION/node_modules/azurite/dist/src/blob/main.js" \
    --blobHost 127.0.0.1 --blobPort "$port" --location "$dir/data" --disableTelemetry \
    --skipApiVersionCheck --silent
}

wait_azurite() {
  local port; port=$(cat "$STATE/services/azurite/port")
  # Any HTTP answer (an unauthenticated list is refused with 403) means it serves.
  wait_for azurite 60 curl -sS -o /dev/null "http://127.0.0.1:$port/$AZURITE_ACCOUNT?comp=list"
  cat >>"$STATE/services/env" <<ENV
export ZF_AZURE_BLOB_ENDPOINT='http://127.0.0.1:$port/$AZURITE_ACCOUNT'
export ZF_AZURE_ACCOUNT='$AZURITE_ACCOUNT'
export ZF_AZURE_ACCOUNT_KEY='$AZURITE_KEY'
export ZF_AZURE_CONNECTION_STRING='DefaultEndpointsProtocol=http;AccountName=$AZURITE_ACCOUNT;AccountKey=$AZURITE_KEY;BlobEndpoint=http://127.0.0.1:$port/$AZURITE_ACCOUNT;'
export AZURITE_BLOB_STORAGE_URL='http://127.0.0.1:$port'
ENV
}

launch_gcs() {
  local port dir="$STATE/services/gcs"; port=$(free_port); mkdir -p "$dir/data"
  echo "$port" >"$dir/port"
  # A service-account key for V4 signed URLs: fake-gcs-server checks no signature, but a client
  # needs a private key to sign with (without one object_store asks Google's IAM API to sign).
  openssl genrsa -out "$dir/sa.key" 2048 2>/dev/null
  python3 - "$dir/sa.key" "http://127.0.0.1:$port" >"$dir/service-account.json" <<'PY'
import json, sys
key = open(sys.argv[1]).read()
print(json.dumps({
    "type": "service_account",
    "project_id": "zeroflow-testbed",
    "private_key_id": "testbed",
    "private_key": key,
    "client_email": "zeroflow@zeroflow-testbed.iam.gserviceaccount.com",
    # object_store's emulator settings: this base URL, and no OAuth token exchange with Google.
    "gcs_base_url": sys.argv[2],
    "disable_oauth": True,
}, indent=2))
PY
  log "starting fake-gcs-server (GCS) on 127.0.0.1:$port"
  # -public-host: requests for this host are served as storage.googleapis.com's XML API and
  # signed URLs (path-style /bucket/object); no Pub/Sub events (the -event.* flags) are sent.
  start fake-gcs-server "$ZF_CACHE/bin/fake-gcs-server-$FAKE_GCS_VERSION/fake-gcs-server" \
    -scheme http -host 127.0.0.1 -port "$port" -public-host "127.0.0.1:$port" \
    -external-url "http://127.0.0.1:$port" -backend filesystem -filesystem-root "$dir/data" \
    -log-level warn
}

wait_gcs() {
  local port dir="$STATE/services/gcs"; port=$(cat "$dir/port")
  wait_for fake-gcs-server 60 curl -fsS "http://127.0.0.1:$port/storage/v1/b"
  cat >>"$STATE/services/env" <<ENV
export ZF_GCS_ENDPOINT='http://127.0.0.1:$port'
export ZF_GCS_SERVICE_ACCOUNT_KEY='$dir/service-account.json'
export STORAGE_EMULATOR_HOST='http://127.0.0.1:$port'
ENV
}

# moto runs no process here: tests start their own server (ZF_MOTO_SERVER) with the testbed's
# certificate (ZF_KUBE_CA's apiserver.crt, valid for 127.0.0.1), since object_store asks STS over
# HTTPS only.
launch_moto() { :; }

wait_moto() {
  local server="$ZF_CACHE/bin/moto-$MOTO_VERSION/venv/bin/moto_server"
  [[ -x "$server" ]] || die "moto is not built: $server is missing"
  cat >>"$STATE/services/env" <<ENV
export ZF_MOTO_SERVER='$server'
ENV
}
