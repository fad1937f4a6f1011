# shellcheck shell=bash
# Configuring and starting each cluster component. Sourced by local-cluster.
# Every start_* is idempotent: a component whose pid file names a live process is left alone.

HERE=${HERE:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)}
FEATURE_GATES=TTLAfterFinished=true   # ttlSecondsAfterFinished is alpha in 1.20: dropped without this

api_healthy() { curl -sf --max-time 2 --cacert "$STATE/pki/ca.crt" "https://127.0.0.1:$API_PORT/readyz" >/dev/null; }

start_etcd() {
    mkdir -p "$STATE/etcd"
    start etcd etcd --name kubeline --data-dir "$STATE/etcd" \
        --listen-client-urls "http://$ETCD_CLIENT" --advertise-client-urls "http://$ETCD_CLIENT" \
        --listen-peer-urls "http://$ETCD_PEER" --initial-advertise-peer-urls "http://$ETCD_PEER" \
        --initial-cluster "kubeline=http://$ETCD_PEER" --listen-metrics-urls "" \
        --unsafe-no-fsync --snapshot-count 10000
    wait_for "etcd answering on $ETCD_CLIENT" 30 etcd curl -sf "http://$ETCD_CLIENT/health"
}

start_apiserver() {
    start kube-apiserver "$BIN/kube-apiserver" \
        --etcd-servers "http://$ETCD_CLIENT" \
        --bind-address 0.0.0.0 --secure-port "$API_PORT" --insecure-port 0 \
        --advertise-address "$NODE_IP" \
        --service-cluster-ip-range "$SERVICE_CIDR" \
        --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
        --client-ca-file "$PKI/ca.crt" \
        --token-auth-file "$PKI/tokens.csv" \
        --service-account-key-file "$PKI/sa.pub" \
        --service-account-signing-key-file "$PKI/sa.key" \
        --service-account-issuer "https://kubernetes.default.svc.$CLUSTER_DOMAIN" \
        --authorization-mode Node,RBAC \
        --enable-admission-plugins NodeRestriction \
        --kubelet-client-certificate "$PKI/apiserver-kubelet-client.crt" \
        --kubelet-client-key "$PKI/apiserver-kubelet-client.key" \
        --kubelet-preferred-address-types InternalIP \
        --allow-privileged=true \
        --feature-gates "$FEATURE_GATES" \
        --profiling=false --event-ttl 10m
    wait_for "kube-apiserver becoming ready on https://127.0.0.1:$API_PORT" 90 kube-apiserver api_healthy
}

start_controller_manager() {
    start kube-controller-manager "$BIN/kube-controller-manager" \
        --kubeconfig "$STATE/controller-manager.kubeconfig" \
        --authentication-kubeconfig "$STATE/controller-manager.kubeconfig" \
        --authorization-kubeconfig "$STATE/controller-manager.kubeconfig" \
        --bind-address 127.0.0.1 --port 0 \
        --leader-elect=false \
        --use-service-account-credentials \
        --service-account-private-key-file "$PKI/sa.key" \
        --root-ca-file "$PKI/ca.crt" \
        --cluster-signing-cert-file "$PKI/ca.crt" --cluster-signing-key-file "$PKI/ca.key" \
        --feature-gates "$FEATURE_GATES" \
        --profiling=false
}

start_scheduler() {
    start kube-scheduler "$BIN/kube-scheduler" \
        --kubeconfig "$STATE/scheduler.kubeconfig" \
        --authentication-kubeconfig "$STATE/scheduler.kubeconfig" \
        --authorization-kubeconfig "$STATE/scheduler.kubeconfig" \
        --bind-address 127.0.0.1 --port 0 \
        --leader-elect=false --profiling=false
}

start_containerd() {
    local d=$STATE/containerd
    mkdir -p "$CONTAINERD_ROOT" "$d/state" "$STATE/cni/net.d"
    cat >"$d/config.toml" <<TOML
version = 2
root = "$CONTAINERD_ROOT"
state = "$d/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = "$CONTAINERD_SOCK"
[ttrpc]
  address = "$d/containerd.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  # Without this every sandbox fails here with "can't get final child's PID from pipe: EOF".
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$STATE/cni/net.d"
TOML
    # CNI: pods on the kl0 bridge, addresses from the pod CIDR; masquerading is ours (network.sh).
    cat >"$STATE/cni/net.d/10-kubeline.conflist" <<JSON
{
  "cniVersion": "0.4.0",
  "name": "kubeline",
  "plugins": [
    {
      "type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": false, "hairpinMode": true,
      "ipam": {
        "type": "host-local", "dataDir": "$STATE/cni/ipam",
        "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$NODE_IP"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}, "snat": true}
  ]
}
JSON
    start containerd containerd --config "$d/config.toml"
    wait_for "containerd answering on $CONTAINERD_SOCK" 30 containerd ctr --address "$CONTAINERD_SOCK" version
}

start_kubelet() {
    local d=$STATE/kubelet
    mkdir -p "$d"
    cat >"$d/config.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: 10250
healthzBindAddress: 127.0.0.1
healthzPort: 10248
cgroupDriver: cgroupfs
failSwapOn: false
clusterDNS: [$NODE_IP]
clusterDomain: $CLUSTER_DOMAIN
resolvConf: /etc/resolv.conf
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization:
  mode: Webhook
serializeImagePulls: false
runtimeRequestTimeout: 5m
# The machine is shared with builds and tests: keep image GC and eviction from surprising us.
imageGCHighThresholdPercent: 100
evictionHard: {memory.available: "200Mi", nodefs.available: "2%", imagefs.available: "2%"}
# Pod churn in tests: report status quickly.
nodeStatusUpdateFrequency: 4s
syncFrequency: 10s
YAML
    start kubelet "$BIN/kubelet" \
        --config "$d/config.yaml" \
        --kubeconfig "$STATE/kubelet.kubeconfig" \
        --root-dir "$d/root" --cert-dir "$d/pki" \
        --hostname-override "$NODE_NAME" --node-ip "$NODE_IP" \
        --container-runtime remote \
        --container-runtime-endpoint "unix://$CONTAINERD_SOCK" \
        --pod-infra-container-image "$PAUSE_IMAGE"
}

start_kube_proxy() {
    start kube-proxy "$BIN/kube-proxy" \
        --kubeconfig "$STATE/kube-proxy.kubeconfig" \
        --hostname-override "$NODE_NAME" \
        --proxy-mode iptables --cluster-cidr "$POD_CIDR" \
        --conntrack-max-per-core 0 \
        --metrics-bind-address 127.0.0.1:10249 --healthz-bind-address 127.0.0.1:10256
}

# Debian has no CoreDNS: dnsmasq on the node IP answers cluster names from a hosts file that
# dns-sync keeps in step with the Service list; other names go to this machine's resolver.
start_dns() {
    local d=$STATE/dns upstream
    mkdir -p "$d"
    touch "$d/hosts"
    upstream=$(awk '/^nameserver/ {print $2; exit}' /etc/resolv.conf)
    [[ -n $upstream ]] || die "no nameserver in /etc/resolv.conf for dnsmasq to forward to"
    # --user=root: the hosts file lives in the (private) state dir and is re-read on SIGHUP.
    start dnsmasq dnsmasq --keep-in-foreground --user=root \
        --bind-interfaces --listen-address="$NODE_IP" --port=53 \
        --no-resolv --server="$upstream" --no-hosts --addn-hosts="$d/hosts" \
        --local="/$CLUSTER_DOMAIN/" --domain-needed \
        --cache-size=1000 --neg-ttl=1 --local-ttl=1 \
        --pid-file= --log-facility=-
    start dns-sync "$HERE/dns-sync" "$STATE" "$CLUSTER_DOMAIN" "https://127.0.0.1:$API_PORT"
}

dns_answers() {
    # Resolve the API server's Service name through our dnsmasq.
    local out
    out=$(dig +short +time=1 +tries=1 "@$NODE_IP" "kubernetes.default.svc.$CLUSTER_DOMAIN" 2>/dev/null) || return 1
    [[ $out == "$API_SERVICE_IP" ]]
}
