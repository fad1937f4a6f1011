# shellcheck shell=bash
# Installing Debian packages and building the Kubernetes binaries. Sourced by local-cluster.
#
# Nothing here can be pulled prebuilt (no registry but Debian's and PyPI is reachable), so the
# five Kubernetes server binaries are compiled from Debian's `kubernetes` source package, which
# carries the whole tree with vendor/. The result is cached in $BIN and reused by every `up`.

K8S_COMPONENTS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy)
# command -> Debian package providing it, for what a running cluster needs.
RUNTIME_PACKAGES=(
    etcd:etcd-server containerd:containerd runc:runc ctr:containerd
    /usr/lib/cni/bridge:containernetworking-plugins iptables:iptables conntrack:conntrack
    dnsmasq:dnsmasq-base ip:iproute2 openssl:openssl jq:jq curl:curl
)
BUILD_PACKAGES=(go:golang-go rsync:rsync make:make gcc:gcc /usr/lib/x86_64-linux-gnu/libc.a:libc6-dev)

APT_UPDATED=
apt_update_once() {
    [[ -n $APT_UPDATED ]] && return 0
    log "apt-get update"
    # A third-party source that cannot be reached makes apt-get update exit non-zero even
    # though Debian's lists were fetched; the install that follows is the real check.
    apt-get update -qq >&2 || log "apt-get update reported errors (continuing; install will tell)"
    APT_UPDATED=1
}

# apt_install_missing PAIR...: installs the package of every command:package pair whose command is absent.
apt_install_missing() {
    local pair cmd pkg missing=()
    for pair in "$@"; do
        cmd=${pair%%:*}; pkg=${pair#*:}
        if [[ $cmd == /* ]]; then [[ -e $cmd ]] && continue
        else command -v "$cmd" >/dev/null 2>&1 && continue; fi
        [[ " ${missing[*]} " == *" $pkg "* ]] || missing+=("$pkg")
    done
    ((${#missing[@]})) || return 0
    [[ $(id -u) == 0 ]] || die "missing packages ${missing[*]}; run as root or: sudo apt-get install ${missing[*]}"
    apt_update_once
    log "apt-get install ${missing[*]}"
    # Keep Debian's maintainer scripts from starting their own etcd/containerd services:
    # ours run with private ports, sockets and state dirs.
    local policy=/usr/sbin/policy-rc.d own_policy=
    if [[ ! -e $policy ]]; then printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod +x "$policy"; own_policy=1; fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2 \
        || { [[ -n $own_policy ]] && rm -f "$policy"; die "apt-get install ${missing[*]} failed (see above)"; }
    [[ -n $own_policy ]] && rm -f "$policy"
    return 0
}

ensure_runtime_packages() { apt_install_missing "${RUNTIME_PACKAGES[@]}"; }

# Debian's deb822 sources file lists binary packages only; `apt-get source` needs deb-src too.
enable_deb_src() {
    local f=/etc/apt/sources.list.d/debian.sources
    if [[ -f $f ]] && grep -q '^Types: deb$' "$f"; then
        log "enabling deb-src entries in $f"
        sed -i 's/^Types: deb$/Types: deb deb-src/' "$f"
        APT_UPDATED=
    fi
}

binaries_present() {
    local c
    for c in "${K8S_COMPONENTS[@]}" pause; do [[ -x $BIN/$c ]] || return 1; done
}

ensure_binaries() {
    binaries_present && return 0
    log "building Kubernetes v$K8S_VERSION binaries into $BIN (once; about 5 minutes on 2 cores)"
    apt_install_missing "${BUILD_PACKAGES[@]}"
    enable_deb_src
    apt_update_once

    local work=$CACHE/k8s-v$K8S_VERSION/build
    rm -rf "$work"; mkdir -p "$work/src"
    (cd "$work/src" && apt-get source --download-only -qq "kubernetes=$K8S_VERSION*" >&2) \
        || (cd "$work/src" && apt-get source --download-only -qq kubernetes >&2) \
        || die "apt-get source kubernetes failed; check that deb-src entries are enabled and reachable"
    local orig
    orig=$(ls "$work"/src/kubernetes_*.orig.tar.* 2>/dev/null | head -n1)
    [[ -n $orig ]] || die "no kubernetes orig tarball in $work/src after apt-get source"
    mkdir -p "$work/tree"
    tar -xf "$orig" -C "$work/tree" --strip-components=1

    # The GOPATH layout the Kubernetes build scripts expect (as debian/rules sets up).
    mkdir -p "$work/go/src/k8s.io"
    ln -sfn "$work/tree" "$work/go/src/k8s.io/kubernetes"
    local what=() c
    for c in "${K8S_COMPONENTS[@]}"; do what+=("cmd/$c"); done
    (
        cd "$work/go/src/k8s.io/kubernetes"
        export GOPATH=$work/go GOCACHE=$work/gocache CGO_ENABLED=0
        # No .git in the tarball: tell the build which version it is.
        export KUBE_GIT_VERSION=v$K8S_VERSION KUBE_GIT_TREE_STATE=clean KUBE_GIT_COMMIT=debian-source
        make WHAT="${what[*]}" >"$work/make.log" 2>&1
    ) || { tail -n 30 "$work/make.log" >&2; die "building Kubernetes failed; full log: $work/make.log"; }

    mkdir -p "$BIN"
    local out=$work/tree/_output/bin
    [[ -d $out ]] || out=$work/tree/_output/local/bin/linux/amd64
    for c in "${K8S_COMPONENTS[@]}"; do install -m 0755 "$out/$c" "$BIN/$c"; done
    # The pod sandbox ("pause") process, from the same tree, static so it runs in an empty image.
    gcc -static -Os -DVERSION=v3.2-kubeline -o "$BIN/pause" "$work/tree/build/pause/linux/pause.c" \
        || die "gcc -static pause.c failed; is libc6-dev installed?"
    strip "$BIN/pause" || true
    rm -rf "$work"
    log "binaries cached in $BIN"
}
