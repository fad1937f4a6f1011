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
    dnsmasq:dnsmasq-base dig:bind9-dnsutils ip:iproute2 openssl:openssl jq:jq curl:curl
)
# The tree vendors modern-go/reflect2 1.0.1, whose map iteration corrupts memory under Go >= 1.18
# (kube-apiserver dies with "fatal error: fault" in aeshashbody); 1.0.2 from Debian fixes it.
REFLECT2_SRC=/usr/share/gocode/src/github.com/modern-go/reflect2
BUILD_PACKAGES=(go:golang-go rsync:rsync make:make gcc:gcc /usr/lib/x86_64-linux-gnu/libc.a:libc6-dev
    "$REFLECT2_SRC:golang-github-modern-go-reflect2-dev")
# Bump when the build recipe changes, so cached binaries from an older recipe are rebuilt.
BUILD_RECIPE=2

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
    mkdir -p "$CACHE"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" \
        >"$CACHE/apt-install.log" 2>&1 \
        || { [[ -n $own_policy ]] && rm -f "$policy"; tail -n 20 "$CACHE/apt-install.log" >&2
             die "apt-get install ${missing[*]} failed; see $CACHE/apt-install.log"; }
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
    [[ $(cat "$BIN/.recipe" 2>/dev/null) == "$BUILD_RECIPE" ]] || return 1
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
    # _apt cannot write into root's cache dir; apt then downloads as root, which is fine.
    (cd "$work/src" && apt-get source --download-only -qq kubernetes 2>&1 | { grep -v unsandboxed >&2 || true; }) \
        || die "apt-get source kubernetes failed; check that deb-src entries are enabled and reachable"
    local orig
    # bookworm's version is "1.20.5+really1.20.2": the 1.20.2 tree.
    orig=$(ls "$work"/src/kubernetes_*"$K8S_VERSION".orig.tar.* 2>/dev/null | head -n1)
    [[ -n $orig ]] || die "no kubernetes $K8S_VERSION orig tarball in $work/src after apt-get source (found: $(ls "$work/src"))"
    mkdir -p "$work/tree"
    tar -xf "$orig" -C "$work/tree" --strip-components=1
    [[ -f $REFLECT2_SRC/reflect2.go ]] || die "no reflect2 source at $REFLECT2_SRC (apt-get install golang-github-modern-go-reflect2-dev)"
    rm -rf "$work/tree/vendor/github.com/modern-go/reflect2"
    cp -r "$REFLECT2_SRC" "$work/tree/vendor/github.com/modern-go/reflect2"

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
    echo "$BUILD_RECIPE" >"$BIN/.recipe"
    rm -rf "$work"
    log "binaries cached in $BIN"
}
