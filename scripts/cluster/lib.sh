# shellcheck shell=bash disable=SC2034  # settings used by the files that source this one
# Shared settings and helpers for scripts/local-cluster. Sourced, never run.
#
# Layout: everything a running cluster owns lives in one state dir ($STATE: certs,
# configs, data, logs, pid files) that `down` deletes; everything that is expensive
# to make (Kubernetes binaries, image tarballs) lives in $CACHE and survives `down`.

K8S_VERSION=1.20.2
CACHE=${KUBELINE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kubeline}
BIN=$CACHE/k8s-v$K8S_VERSION/bin
IMAGE_CACHE=$CACHE/images
# containerd's root (image content and unpacked layers) outlives `down`: re-importing a 300 MB
# image takes half a minute. `down` deletes every container from it; state stays in $STATE.
CONTAINERD_ROOT=$CACHE/containerd-root
STATE=${KUBELINE_CLUSTER_STATE:-$CACHE/cluster}
LOGS=$STATE/logs
PIDS=$STATE/pids

NODE_NAME=kubeline-node
BRIDGE=kl0
NODE_IP=10.244.0.1
POD_CIDR=10.244.0.0/24
SERVICE_CIDR=10.96.0.0/24
API_SERVICE_IP=10.96.0.1        # first IP of SERVICE_CIDR: the `kubernetes` Service
API_PORT=6443
ETCD_CLIENT=127.0.0.1:12379     # off the default ports so a system etcd never clashes
ETCD_PEER=127.0.0.1:12380
CLUSTER_DOMAIN=cluster.local
PAUSE_IMAGE=registry.k8s.io/pause:3.2-kubeline
CONTAINERD_SOCK=$STATE/containerd/containerd.sock
KUBECONFIG_PATH=$STATE/kubeconfig
RULE_TAG=kubeline-cluster       # iptables comment on every rule we add

# Private and special ranges a pod must never reach (except the pod CIDR itself).
GUARDED_RANGES=(10.0.0.0/8 172.16.0.0/12 192.168.0.0/16 100.64.0.0/10 169.254.0.0/16)

# Start order; `down` stops in reverse.
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler containerd kubelet kube-proxy dnsmasq dns-sync)

log() { printf '[local-cluster] %s\n' "$*" >&2; }
die() { printf '[local-cluster] error: %s\n' "$*" >&2; exit 1; }

# pid_of NAME: prints the pid if NAME's pid file names a live process.
pid_of() {
    local f=$PIDS/$1.pid pid
    [[ -f $f ]] || return 1
    pid=$(<"$f")
    [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

# start NAME CMD...: run CMD in the background, logging to $LOGS/NAME.log, and record its pid.
# setsid puts it in its own session so that it outlives the calling shell; fd 9 (the
# local-cluster lock) is closed so that the component does not hold the lock for its lifetime.
start() {
    local name=$1; shift
    if pid_of "$name" >/dev/null; then return 0; fi
    mkdir -p "$LOGS" "$PIDS"
    setsid "$@" >>"$LOGS/$name.log" 2>&1 </dev/null 9>&- &
    echo $! >"$PIDS/$name.pid"
}

# stop NAME...: SIGTERM to all, wait up to 10 s for them to exit, then SIGKILL; removes the pid files.
stop() {
    local name pid pids=() i
    for name in "$@"; do
        if pid=$(pid_of "$name"); then kill -TERM "$pid" 2>/dev/null && pids+=("$pid"); fi
    done
    for i in $(seq 1 100); do
        for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && break; pid=; done
        [[ -z ${pid:-} ]] && break
        sleep 0.1
    done
    for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    for name in "$@"; do rm -f "$PIDS/$name.pid"; done
}

# wait_for DESC SECONDS LOGNAME CMD...: poll CMD every 0.5 s until it succeeds.
wait_for() {
    local desc=$1 secs=$2 logname=$3; shift 3
    local deadline=$((SECONDS + secs))
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            die "$desc did not happen in ${secs}s; see $LOGS/$logname.log"
        fi
        if [[ $logname != - ]] && [[ -f $PIDS/$logname.pid ]] && ! pid_of "$logname" >/dev/null; then
            tail -n 20 "$LOGS/$logname.log" >&2 || true
            die "$logname exited while waiting for: $desc; see $LOGS/$logname.log"
        fi
        sleep 0.5
    done
}

kctl() { kubectl --kubeconfig "$KUBECONFIG_PATH" "$@"; }
