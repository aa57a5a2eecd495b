# shellcheck shell=bash disable=SC2154  # sourced by e2e/testbed, which sets $here and $STATE
# A real node for the testbed: kubelet, containerd and runc in network and mount namespaces of
# their own, so pods really run while all traffic stays on this machine. Sourced by e2e/testbed,
# whose helpers (log, die, start, alive, pid_of, kubectl_) and settings (STATE, ZF_CACHE,
# BIN_K8S, BIN_KWOK) it uses. See e2e/node/README.md for the layout and what we learned.
#
#   host (root netns)                       node netns "zfn-<id>"                 pod netns
#   127.0.0.1: apiserver, MinIO, etcd        eth0 172.30.X.2 (node IP)            eth0 10.245.X.n
#   zfh-<id> 172.30.X.1 <-- veth --------->  cni0 10.245.X.1 (bridge, gateway) <-- veth
#     socat 172.30.X.1:<api>   -> 127.0.0.1  lo 10.96.0.1 (the kubernetes Service)
#     socat 172.30.X.1:<minio> -> 127.0.0.1    socat 10.96.0.1:443 -> 172.30.X.1:<api>
#   route 10.245.X.0/24 via 172.30.X.2       kubelet, containerd (+ private mount namespace)
#
# Nothing is NATed and the host's own IP forwarding stays off: the host only talks to addresses
# in the node netns, and the node netns (which forwards between its veth and its bridge) has no
# route anywhere else. kubelet and containerd share a private mount namespace (held by a "sleep"
# process), so their overlay, tmpfs and netns mounts never appear on the host and vanish when
# the node stops; kubelet's kernel tunables (vm.overcommit_memory, kernel.panic, ...) are
# satisfied there by bind-mounted files, so the host's sysctls are never changed.

# python3: Debian's interpreter and standard library make the demo's transform image.
# containerd itself is built from its Go module (testbed.d/build.sh: 2.x, for image volumes);
# runc stays Debian's.
NODE_APT_PACKAGES=(runc containernetworking-plugins socat busybox-static iproute2 gcc libc6-dev python3)
NODE_TAINT_KEY=zeroflow.dev/real-node
NODE_CNI_BIN=/usr/lib/cni
# Images written by e2e/oci/mkimage.py; nothing is ever pulled (imagePullPolicy Never, and tags
# that are not :latest, so IfNotPresent never pulls either).
NODE_PAUSE_IMAGE=zeroflow.local/pause:testbed
NODE_BUSYBOX_IMAGE=zeroflow.local/busybox:testbed

# Per-testbed identity: several testbeds (different ZF_TESTBED_STATE) get different names,
# subnets and cgroups.
node_ids() {
  local h; h=$(printf '%s' "$STATE" | sha1sum | cut -c1-8)
  NODE_DIR="$STATE/node"
  NODE_ID=${h:0:6}
  NODE_NETNS="zfn-$NODE_ID"
  NODE_HOST_IF="zfh-$NODE_ID"
  NODE_CGROUP="zeroflow-node-$NODE_ID"
  # The subnet number X: from the state path, or the one `node up` recorded (it skips numbers
  # another testbed's node already uses).
  NODE_X=$(cat "$NODE_DIR/subnet" 2>/dev/null || echo $(((16#${h:0:4} % 200) + 20)))
  node_addresses
}

node_addresses() {
  NODE_HOST_IP="172.30.$NODE_X.1"
  NODE_IP="172.30.$NODE_X.2"
  NODE_POD_CIDR="10.245.$NODE_X.0/24"
  NODE_POD_GW="10.245.$NODE_X.1"
  # kubelet's node name is its IP: the apiserver reaches a kubelet (logs, exec) by the node's
  # Hostname address first, and a name would make it ask the host's DNS resolver.
  NODE_NAME="$NODE_IP"
}

node_pick_subnet() {
  local tries
  for ((tries = 0; tries < 200; tries++)); do
    # Here-strings, not pipes: under pipefail, `cmd | grep -q` fails when grep stops reading early.
    if ! grep -q " 172\.30\.$NODE_X\." <<<"$(ip -o addr show)" && ! grep -q "^10\.245\.$NODE_X\." <<<"$(ip route show)"; then
      echo "$NODE_X" >"$NODE_DIR/subnet"
      node_addresses
      return
    fi
    NODE_X=$(((NODE_X - 20 + 1) % 200 + 20))
  done
  die "no free 172.30.X.0/30 and 10.245.X.0/24 subnets for the node"
}

node_pidfile() { echo "$STATE/pids/node-$1"; }
node_alive() { local p; p=$(cat "$(node_pidfile "$1")" 2>/dev/null) && [[ -n "$p" ]] && kill -0 "$p" 2>/dev/null; }
in_node() { nsenter --net="/run/netns/$NODE_NETNS" -- "$@"; }

# node_start NAME COMM CMD... : like `start`, for node processes; COMM (the process name) is
# recorded so that `down` never signals a PID that was reused by something else. The process
# joins the node's cgroups before it execs CMD, so it and everything it starts (containerd's
# shims, which outlive containerd) can be found and stopped there; nsenter joins namespaces,
# never cgroups, so without this containerd and its shims stayed in the caller's cgroup.
node_start() {
  local name=$1 comm=$2; shift 2
  setsid sh -c "$(node_join_cgroups)"' exec "$@"' sh "$@" >"$STATE/logs/node-$name.log" 2>&1 </dev/null &
  echo $! >"$(node_pidfile "$name")"
  echo "$comm" >"$NODE_DIR/comm/$name"
}

# Shell code that moves the shell running it ($$) into the node's "system" cgroup in every
# hierarchy, including the hybrid layout's cgroup2 ("unified"), where runc mirrors containers.
node_join_cgroups() {
  local h code=""
  for h in $(node_cgroup_hierarchies) $(node_unified_hierarchy); do
    code+="echo \$\$ >'$h/$NODE_CGROUP/system/cgroup.procs' || exit 1; "
  done
  printf '%s' "$code"
}

# A stopped process stays a zombie until this machine's init reaps it (which takes up to ~2 s
# here), so a zombie counts as stopped.
node_running() { [[ -e "/proc/$1" ]] && ! grep -q '^State:.*Z' "/proc/$1/status" 2>/dev/null; }

# node_stop NAME : TERM, wait up to 5 s, KILL; only if the PID still runs the recorded command.
node_stop() {
  local name=$1 pid comm
  pid=$(cat "$(node_pidfile "$name")" 2>/dev/null || true)
  comm=$(cat "$NODE_DIR/comm/$name" 2>/dev/null || true)
  if [[ -n "$pid" && -n "$comm" ]] && [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$comm" ]]; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do node_running "$pid" || break; sleep 0.1; done
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$(node_pidfile "$name")" "$NODE_DIR/comm/$name"
}

node_install_packages() {
  local missing=() p
  for p in "${NODE_APT_PACKAGES[@]}"; do
    [[ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" == *"install ok installed"* ]] || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  log "installing ${missing[*]} (apt)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# Why this machine cannot run a node, or nothing.
node_unsupported() {
  ((EUID == 0)) || { echo "a real node needs root (network namespaces, mounts, cgroups)"; return; }
  [[ -d /sys/fs/cgroup/pids ]] || [[ "$(stat -fc %T /sys/fs/cgroup)" == cgroup2fs ]] \
    || { echo "no cgroup hierarchy usable by kubelet under /sys/fs/cgroup"; return; }
  grep -qw overlay /proc/filesystems || { echo "the kernel has no overlay filesystem (containerd's snapshotter)"; return; }
  if ! ip netns add "zfprobe-$$" 2>/dev/null; then echo "cannot create a network namespace (ip netns add)"; return; fi
  if ! ip link add "zfp$$a" type veth peer name "zfp$$b" 2>/dev/null; then
    ip netns del "zfprobe-$$"; echo "the kernel cannot create veth pairs"; return
  fi
  ip link del "zfp$$a" 2>/dev/null || true
  ip netns del "zfprobe-$$"
}

node_cgroup_hierarchies() {
  if [[ "$(stat -fc %T /sys/fs/cgroup)" == cgroup2fs ]]; then echo /sys/fs/cgroup; return; fi
  local d
  for d in /sys/fs/cgroup/*/; do
    d=${d%/}
    [[ -L "$d" || "$d" == */unified ]] && continue
    [[ -f "$d/cgroup.procs" ]] && echo "$d"
  done
}

# The cgroup2 mounted beside cgroup v1 in the hybrid layout; nothing in the other layouts.
node_unified_hierarchy() {
  if [[ "$(stat -fc %T /sys/fs/cgroup)" != cgroup2fs && -f /sys/fs/cgroup/unified/cgroup.procs ]]; then
    echo /sys/fs/cgroup/unified
  fi
}

node_make_cgroups() {
  local h
  for h in $(node_unified_hierarchy); do mkdir -p "$h/$NODE_CGROUP/system"; done
  for h in $(node_cgroup_hierarchies); do
    mkdir -p "$h/$NODE_CGROUP/system"
    if [[ -f "$h/cpuset.cpus" ]]; then
      # cgroup v1 cpuset children start empty; copy the parent's CPUs and memory nodes.
      cat "$h/cpuset.cpus" >"$h/$NODE_CGROUP/cpuset.cpus"; cat "$h/cpuset.mems" >"$h/$NODE_CGROUP/cpuset.mems"
      cat "$h/cpuset.cpus" >"$h/$NODE_CGROUP/system/cpuset.cpus"; cat "$h/cpuset.mems" >"$h/$NODE_CGROUP/system/cpuset.mems"
    fi
  done
}

# Every process the node started (kubelet, containerd, shims, containers, forwarders in the
# netns) lives in the node's cgroup; this lists them.
node_cgroup_pids() {
  local h
  h=$(node_cgroup_hierarchies | grep -E '/(pids|unified)$' | head -n 1 || true)
  [[ -n "$h" ]] || h=$(node_cgroup_hierarchies | head -n 1)
  [[ -d "$h/$NODE_CGROUP" ]] || return 0
  find "$h/$NODE_CGROUP" -name cgroup.procs -exec cat {} + 2>/dev/null | sort -un
}

# The node's containerd shims, found by the socket they were told to call back on (the
# address is under this node's directory), wherever they are: a node started before its
# processes joined its cgroups left them in the caller's cgroup.
node_shim_pids() {
  pgrep -f -- "containerd-shim-runc-v2 .*-address $NODE_DIR/containerd\.sock( |$)" || true
}

# Kills everything in the node's cgroups (and its shims), repeating until nothing is left:
# a shim killed between listing and signalling must not leave a container behind, and
# containerd's shims reap and restart nothing once containerd is gone.
node_kill_all() {
  local pids
  for _ in $(seq 1 20); do
    pids=$(node_cgroup_pids; node_shim_pids)
    pids=$(for p in $pids; do node_running "$p" && echo "$p"; done)
    [[ -n "$pids" ]] || return 0
    # shellcheck disable=SC2086
    kill -KILL $pids 2>/dev/null || true
    sleep 0.25
  done
  log "WARNING: processes of the node still running: $(node_cgroup_pids; node_shim_pids)"
}

node_remove_cgroups() {
  local h
  node_kill_all
  # runc also mirrors the containers' cgroups in the hybrid layout's cgroup2 ("unified").
  for h in $(node_cgroup_hierarchies) /sys/fs/cgroup/unified; do
    [[ -d "$h/$NODE_CGROUP" ]] || continue
    for _ in $(seq 1 50); do
      find "$h/$NODE_CGROUP" -depth -type d -exec rmdir {} + 2>/dev/null || true
      [[ -d "$h/$NODE_CGROUP" ]] || break
      sleep 0.1
    done
    [[ ! -d "$h/$NODE_CGROUP" ]] || log "WARNING: could not remove cgroup $h/$NODE_CGROUP"
  done
}

node_make_network() {
  ip netns add "$NODE_NETNS"
  ip link add "$NODE_HOST_IF" type veth peer name eth0 netns "$NODE_NETNS"
  ip addr add "$NODE_HOST_IP/30" dev "$NODE_HOST_IF"
  ip link set "$NODE_HOST_IF" up
  in_node ip link set lo up
  in_node ip addr add "$NODE_IP/30" dev eth0
  in_node ip link set eth0 up
  # The kubernetes Service's ClusterIP, local to the node netns (a forwarder listens on it).
  in_node ip addr add 10.96.0.1/32 dev lo
  # Pods answer the host through the node netns, which routes between its veth and the bridge.
  in_node sysctl -qw net.ipv4.ip_forward=1
  ip route add "$NODE_POD_CIDR" via "$NODE_IP" dev "$NODE_HOST_IF"
}

node_remove_network() {
  ip route del "$NODE_POD_CIDR" 2>/dev/null || true
  ip link del "$NODE_HOST_IF" 2>/dev/null || true
  ip netns del "$NODE_NETNS" 2>/dev/null || true
}

node_write_pki() {
  local pki="$STATE/pki" d="$NODE_DIR/pki"
  mkdir -p "$d"
  printf 'extendedKeyUsage = clientAuth\n' >"$d/client.ext"
  openssl req -newkey rsa:2048 -nodes -subj "/O=system:nodes/CN=system:node:$NODE_NAME" \
    -keyout "$d/kubelet.key" -out "$d/kubelet.csr" 2>/dev/null
  openssl x509 -req -in "$d/kubelet.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial -days 30 \
    -extfile "$d/client.ext" -out "$d/kubelet.crt" 2>/dev/null
  rm -f "$d/kubelet.csr" "$d/client.ext"
  cat >"$NODE_DIR/kubelet.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: testbed
  cluster:
    server: https://$NODE_HOST_IP:$NODE_API_PORT
    tls-server-name: kubernetes
    certificate-authority-data: $(base64 -w0 "$pki/ca.crt")
users:
- name: kubelet
  user:
    client-certificate-data: $(base64 -w0 "$d/kubelet.crt")
    client-key-data: $(base64 -w0 "$d/kubelet.key")
contexts:
- name: testbed
  context: {cluster: testbed, user: kubelet}
current-context: testbed
EOF
}

node_write_configs() {
  local n=$NODE_DIR
  mkdir -p "$n/cni/net.d" "$n/cni/ipam" "$n/containerd" "$n/runc" "$n/kubelet" "$n/var-log" "$n/sysctl"
  # containerd 2's configuration format (version 3): the CRI plugin is split into images,
  # runtime and the gRPC server.
  cat >"$n/containerd.toml" <<EOF
version = 3
root = "$n/containerd/root"
state = "$n/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.erofs", "io.containerd.snapshotter.v1.blockfile"]
[grpc]
  address = "$n/containerd.sock"
[ttrpc]
  address = "$n/containerd.sock.ttrpc"
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$n/containerd/opt"
[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "$NODE_PAUSE_IMAGE"
[plugins."io.containerd.cri.v1.runtime"]
  netns_mounts_under_state_dir = true
  # No CAP_SYS_RESOURCE here (see e2e/node/README.md): a negative oom_score_adj (the sandbox's
  # -998) is refused, so keep containers' scores at or above containerd's own.
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$n/runc"
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["$NODE_CNI_BIN"]
    conf_dir = "$n/cni/net.d"
[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = "127.0.0.1"
EOF
  cat >"$n/cni/net.d/10-zeroflow.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "zeroflow",
  "plugins": [
    {
      "type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
      "ipam": {
        "type": "host-local", "dataDir": "$n/cni/ipam",
        "ranges": [[{"subnet": "$NODE_POD_CIDR", "gateway": "$NODE_POD_GW"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    }
  ]
}
EOF
  # Pods get no DNS server: there is none on the testbed, and the host's must not be asked.
  echo "options ndots:1" >"$n/resolv.conf"
  cat >"$n/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
containerRuntimeEndpoint: unix://$n/containerd.sock
cgroupDriver: cgroupfs
cgroupRoot: /$NODE_CGROUP
failSwapOn: false
# Image volumes (KEP-4639; beta, off by default in 1.34): the runner reaches worker pods without
# an init container. The apiserver has the gate too (e2e/testbed). ZF_NODE_IMAGE_VOLUME=false
# starts a node without it, to see what zeroflow does on such a node.
featureGates: {ImageVolume: ${ZF_NODE_IMAGE_VOLUME:-true}}
# A test node: the apiserver reaches it without a client certificate (logs, exec), and only
# from this machine (the node IP exists only on the harness's veth pair).
authentication:
  anonymous: {enabled: true}
  webhook: {enabled: false}
  x509: {clientCAFile: "$STATE/pki/ca.crt"}
authorization: {mode: AlwaysAllow}
registerWithTaints:
- {key: $NODE_TAINT_KEY, value: "true", effect: NoSchedule}
resolvConf: "$n/resolv.conf"
podLogsDir: "$n/var-log/pods"
volumePluginDir: "$n/kubelet/volume-plugins"
staticPodPath: ""
maxPods: 60
serializeImagePulls: false
# Images are imported, never pulled: never garbage-collect them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
# No eviction for disk: the node's filesystem is the developer's or CI machine's own disk, whose
# free space says nothing about the test. At 1% a 252 GB disk with 2.1 GB free (a full build
# cache) evicted the demo's operator pod (DiskPressure), so the disk signals are off, as kind's
# nodes have them; memory keeps a floor. Checked by e2e/tests/node.rs through /configz.
evictionHard: {memory.available: "100Mi", nodefs.available: "0%", imagefs.available: "0%", nodefs.inodesFree: "0%"}
nodeStatusUpdateFrequency: 5s
nodeLeaseDurationSeconds: 40
syncFrequency: 10s
fileCheckFrequency: 10s
EOF
}

# The private mount namespace: a "sleep" process holds it; containerd and kubelet join it.
node_start_holder() {
  local n=$NODE_DIR s
  local tunables=(vm/overcommit_memory:1 vm/panic_on_oom:0 kernel/panic:10 kernel/panic_on_oops:1
    kernel/keys/root_maxkeys:1000000 kernel/keys/root_maxbytes:25000000)
  local setup="set -e; mount -t tmpfs tmpfs /run/containerd; mount --bind '$n/var-log' /var/log"
  mkdir -p /run/containerd "$n/sysctl/vm" "$n/sysctl/kernel/keys"
  for s in "${tunables[@]}"; do
    echo "${s#*:}" >"$n/sysctl/${s%%:*}"
    setup+="; mount --bind '$n/sysctl/${s%%:*}' '/proc/sys/${s%%:*}'"
  done
  # Like every node process, the holder runs in the node's cgroups (node_start).
  node_start holder sleep nsenter --net="/run/netns/$NODE_NETNS" -- unshare --mount --propagation private -- \
    sh -c "$setup; exec sleep infinity"
  local pid; pid=$(cat "$(node_pidfile holder)")
  for _ in $(seq 1 50); do [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == sleep ]] && break; sleep 0.1; done
  [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == sleep ]] || { tail -n 20 "$STATE/logs/node-holder.log" >&2; die "the node's mount namespace holder did not start"; }
  NODE_HOLDER_PID=$pid
}

in_holder() { nsenter --target "$NODE_HOLDER_PID" --mount --net -- "$@"; }

node_ctr() { "$BIN_CONTAINERD/ctr" --address "$NODE_DIR/containerd.sock" -n k8s.io "$@"; }

# Image archives: the pause image (a static C program) and a busybox image (Debian's static
# busybox with its applet links), written by e2e/oci/mkimage.py.
node_build_base_images() {
  local out="$NODE_DIR/images" src="$here/oci"
  mkdir -p "$out"
  gcc -static -O2 -o "$out/pause" "$src/pause.c"
  python3 "$src/mkimage.py" --name "$NODE_PAUSE_IMAGE" --out "$out/pause.tar" \
    --file "$out/pause:/pause" --entrypoint '["/pause"]' --user 65535:65535 2>/dev/null
  local links=() a
  for a in $(/bin/busybox --list); do [[ "$a" == busybox ]] || links+=(--symlink "bin/$a:busybox"); done
  python3 "$src/mkimage.py" --name "$NODE_BUSYBOX_IMAGE" --out "$out/busybox.tar" \
    --file /bin/busybox:/bin/busybox "${links[@]}" --dir tmp:1777 --entrypoint '["/bin/sh"]' 2>/dev/null
}

node_import() {
  local f
  # containerd 2.2's ctr warns on every call that cgroup v1 is deprecated (this machine has v1).
  for f in "$@"; do node_ctr images import "$f" 2> >(grep -v 'support for cgroup v1 is deprecated' >&2) >/dev/null; done
}

cmd_node_up() {
  if ! [[ -f "$STATE/env" ]] || ! alive kube-apiserver; then die "the testbed is not up (run: e2e/testbed up)"; fi
  node_ids
  if node_alive kubelet && node_alive containerd; then log "node $NODE_NAME already running"; return 0; fi
  if ((EUID == 0)); then node_install_packages; fi
  local why; why=$(node_unsupported)
  [[ -z "$why" ]] || die "this machine cannot run a real node: $why"
  "$here/testbed.d/build.sh" kubelet containerd
  cmd_node_down restore >/dev/null 2>&1 || true
  local started=$SECONDS
  mkdir -p "$NODE_DIR/comm"
  node_pick_subnet
  # shellcheck disable=SC1091
  . "$STATE/env"
  NODE_API_PORT=$(sed -n 's#.*server: https://127.0.0.1:\([0-9]*\).*#\1#p' "$STATE/kubeconfig")
  NODE_MINIO_PORT=${ZF_S3_ENDPOINT##*:}

  log "node $NODE_NAME: netns $NODE_NETNS, host $NODE_HOST_IP, pods $NODE_POD_CIDR, cgroup /$NODE_CGROUP"
  node_make_network
  node_make_cgroups
  node_write_pki
  node_write_configs
  node_build_base_images

  # Forwarders: the apiserver and MinIO bind 127.0.0.1 only; the node and its pods reach them
  # on the host end of the veth pair. Pods reach the apiserver at the kubernetes Service's IP.
  node_start fwd-api socat socat "TCP-LISTEN:$NODE_API_PORT,bind=$NODE_HOST_IP,fork,reuseaddr" "TCP:127.0.0.1:$NODE_API_PORT"
  node_start fwd-minio socat socat "TCP-LISTEN:$NODE_MINIO_PORT,bind=$NODE_HOST_IP,fork,reuseaddr" "TCP:127.0.0.1:$NODE_MINIO_PORT"
  node_start_holder
  node_start fwd-service socat nsenter --target "$NODE_HOLDER_PID" --net -- \
    socat "TCP-LISTEN:443,bind=10.96.0.1,fork,reuseaddr" "TCP:$NODE_HOST_IP:$NODE_API_PORT"

  log "starting containerd"
  # containerd finds its shim (containerd-shim-runc-v2) on PATH.
  node_start containerd containerd nsenter --target "$NODE_HOLDER_PID" --mount --net -- \
    env PATH="$BIN_CONTAINERD:$PATH" containerd --config "$NODE_DIR/containerd.toml"

  for _ in $(seq 1 100); do node_ctr version >/dev/null 2>&1 && break; node_alive containerd || break; sleep 0.1; done
  node_ctr version >/dev/null 2>&1 || { tail -n 30 "$STATE/logs/node-containerd.log" >&2; die "containerd did not start"; }
  node_import "$NODE_DIR/images/pause.tar" "$NODE_DIR/images/busybox.tar"

  log "starting kubelet"
  # kwok must stop managing every node, or it would also "run" the real node's pods.
  restart_kwok --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake
  node_start kubelet kubelet nsenter --target "$NODE_HOLDER_PID" --mount --net -- \
    "$BIN_K8S/kubelet" --config="$NODE_DIR/kubelet.yaml" --kubeconfig="$NODE_DIR/kubelet.kubeconfig" \
    --root-dir="$NODE_DIR/kubelet" --cert-dir="$NODE_DIR/kubelet/pki" --hostname-override="$NODE_NAME" \
    --node-ip="$NODE_IP" --node-labels="$NODE_TAINT_KEY=true" --v=1
  local deadline=$((SECONDS + 120))
  until kubectl_ wait --for=condition=Ready "node/$NODE_NAME" --timeout=2s >/dev/null 2>&1; do
    if ! node_alive kubelet; then tail -n 40 "$STATE/logs/node-kubelet.log" >&2; die "kubelet exited"; fi
    if ((SECONDS > deadline)); then
      tail -n 40 "$STATE/logs/node-kubelet.log" >&2; die "node $NODE_NAME not Ready after 120 s"
    fi
    sleep 0.5
  done

  cat >"$NODE_DIR/env" <<ENV
export ZF_NODE_NAME='$NODE_NAME'
export ZF_NODE_IP='$NODE_IP'
export ZF_NODE_HOST_IP='$NODE_HOST_IP'
export ZF_NODE_NETNS='$NODE_NETNS'
export ZF_NODE_POD_CIDR='$NODE_POD_CIDR'
export ZF_NODE_TAINT='$NODE_TAINT_KEY'
export ZF_NODE_S3_ENDPOINT='http://$NODE_HOST_IP:$NODE_MINIO_PORT'
export ZF_NODE_CONTAINERD='$NODE_DIR/containerd.sock'
export ZF_NODE_PAUSE_IMAGE='$NODE_PAUSE_IMAGE'
export ZF_NODE_BUSYBOX_IMAGE='$NODE_BUSYBOX_IMAGE'
ENV
  log "node $NODE_NAME Ready in $((SECONDS - started)) s"
}

# cmd_node_down [keep-kwok]: stops the node and removes everything it made. Safe to repeat.
cmd_node_down() {
  node_ids
  local restore_kwok=${1:-restore} had_node=""
  # First of all the node stops being announced (`e2e/testbed env`), so a `down` cut short never
  # leaves a node that looks running.
  rm -f "$NODE_DIR/env"
  [[ ! -d "$NODE_DIR" ]] || had_node=1
  if [[ -f "$STATE/kubeconfig" ]] && alive kube-apiserver; then
    kubectl_ delete node "$NODE_NAME" --ignore-not-found --wait=false >/dev/null 2>&1 || true
  fi
  local c
  for c in "$NODE_DIR"/comm/fwd-*; do
    if [[ -e "$c" ]]; then node_stop "$(basename "$c")"; fi
  done
  node_stop kubelet
  node_stop containerd
  node_stop holder
  # Containers, shims and anything else left in the node's cgroup.
  node_remove_cgroups
  node_remove_network
  rm -rf "$NODE_DIR" || log "WARNING: could not remove all of $NODE_DIR"
  if [[ "$restore_kwok" == restore && -n "$had_node" ]] && alive kwok; then
    restart_kwok --manage-all-nodes=true
  fi
  log "node down"
}

cmd_node_status() {
  node_ids
  local c running=0 all=0
  for c in holder containerd kubelet fwd-api fwd-minio fwd-service; do
    all=$((all + 1))
    if node_alive "$c"; then printf 'node %-19s running (pid %s)\n' "$c" "$(cat "$(node_pidfile "$c")")"; running=$((running + 1))
    else printf 'node %-19s stopped\n' "$c"; fi
  done
  ((running == all))
}

cmd_node_env() {
  node_ids
  [[ -f "$NODE_DIR/env" ]] || die "no node (run: e2e/testbed node up)"
  cat "$NODE_DIR/env"
}

# cmd_node_forward NAME host|node LISTEN_IP:PORT TARGET_IP:PORT : a TCP forwarder, stopped with
# the node (or by `node unforward NAME`). "host" listens in the host's netns (e.g. on
# 127.0.0.1, for MinIO's webhook), "node" in the node netns (e.g. on a Service-like address
# pods use).
cmd_node_forward() {
  node_ids
  local name=$1 side=$2 listen=$3 target=$4
  [[ -d "$NODE_DIR/comm" ]] || die "no node (run: e2e/testbed node up)"
  node_stop "fwd-$name"
  local sock="TCP-LISTEN:${listen##*:},bind=${listen%:*},fork,reuseaddr"
  case $side in
    host) node_start "fwd-$name" socat socat "$sock" "TCP:$target" ;;
    node)
      if ! grep -q " ${listen%:*}/" <<<"$(in_node ip -o addr show)"; then in_node ip addr add "${listen%:*}/32" dev lo; fi
      node_start "fwd-$name" socat nsenter --net="/run/netns/$NODE_NETNS" -- socat "$sock" "TCP:$target" ;;
    *) die "node forward: side must be host or node" ;;
  esac
  local deadline=$((SECONDS + 10))
  until node_listening "$side" "${listen##*:}"; do
    node_alive "fwd-$name" || { cat "$STATE/logs/node-fwd-$name.log" >&2; die "forwarder $name exited"; }
    ((SECONDS < deadline)) || die "forwarder $name not listening"
    sleep 0.1
  done
}

node_listening() {
  if [[ $1 == host ]]; then [[ -n "$(ss -Hltn "sport = :$2")" ]]; else [[ -n "$(in_node ss -Hltn "sport = :$2")" ]]; fi
}

cmd_node_unforward() { node_ids; node_stop "fwd-$1"; }

cmd_node_import() {
  node_ids
  [[ -S "$NODE_DIR/containerd.sock" ]] || die "no node (run: e2e/testbed node up)"
  node_import "$@"
}

cmd_node() {
  case "${1:-}" in
    up) cmd_node_up ;;
    down) cmd_node_down restore ;;
    status) cmd_node_status ;;
    env) cmd_node_env ;;
    forward) shift; (($# == 4)) || die "usage: e2e/testbed node forward NAME host|node LISTEN_IP:PORT TARGET_IP:PORT"; cmd_node_forward "$@" ;;
    unforward) shift; cmd_node_unforward "$1" ;;
    import) shift; cmd_node_import "$@" ;;
    # Exits 0 if this machine can run a real node; 3, printing why, if it cannot; else failed.
    check)
      # The probes need ip(8): install the packages first (a failure is an error, never a reason
      # to skip).
      if ((EUID == 0)); then node_install_packages >&2; fi
      local why; why=$(node_unsupported); [[ -z "$why" ]] || { echo "$why"; return 3; } ;;
    *) die "usage: e2e/testbed node up|down|status|env|check|forward|unforward|import" ;;
  esac
}
