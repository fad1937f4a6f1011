# shellcheck shell=bash
# Host networking for the cluster: the bridge, sysctls and the egress guard. Sourced.
#
# Network safety: this workplace allows traffic only to this machine and to the package
# registries. Pods therefore get an iptables guard in FORWARD, installed before any pod can
# run, that REJECTs every private/special range except the pod CIDR itself. A pod's packet to
# a Service IP is DNATed by kube-proxy in PREROUTING, so it reaches FORWARD already carrying a
# pod address; a Service IP that kube-proxy has not (yet) programmed falls into 10.0.0.0/8
# and is rejected here instead of leaving through the default route.

ipt() { iptables -w 5 "$@"; }

ensure_bridge() {
    if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
        ip link add "$BRIDGE" type bridge
    fi
    ip addr replace "$NODE_IP/${POD_CIDR#*/}" dev "$BRIDGE"
    # IPv4 only: no link-local IPv6 on the pod network.
    sysctl -qw "net.ipv6.conf.$BRIDGE.disable_ipv6=1" 2>/dev/null || true
    ip link set "$BRIDGE" up
}

ensure_sysctls() {
    modprobe br_netfilter 2>/dev/null || true
    [[ -e /proc/sys/net/bridge/bridge-nf-call-iptables ]] \
        || die "br_netfilter is not available (no /proc/sys/net/bridge); Service traffic between pods on the bridge would bypass iptables"
    sysctl -qw net.ipv4.ip_forward=1
    sysctl -qw net.bridge.bridge-nf-call-iptables=1
}

# Idempotent: the chains are flushed and refilled, the jumps added only once.
ensure_egress_guard() {
    local range c="-m comment --comment $RULE_TAG"
    ipt -N KUBELINE-EGRESS 2>/dev/null || ipt -F KUBELINE-EGRESS
    # shellcheck disable=SC2086
    {
        ipt -A KUBELINE-EGRESS -d "$POD_CIDR" $c -j RETURN
        for range in "${GUARDED_RANGES[@]}"; do
            ipt -A KUBELINE-EGRESS -d "$range" $c -j REJECT --reject-with icmp-port-unreachable
        done
        ipt -C FORWARD -s "$POD_CIDR" $c -j KUBELINE-EGRESS 2>/dev/null \
            || ipt -I FORWARD 1 -s "$POD_CIDR" $c -j KUBELINE-EGRESS

        # If FORWARD drops by default (Docker does that), let pod traffic that passed the guard through.
        if ! iptables -S FORWARD | grep -q '^-P FORWARD ACCEPT'; then
            ipt -C FORWARD -s "$POD_CIDR" $c -j ACCEPT 2>/dev/null || ipt -A FORWARD -s "$POD_CIDR" $c -j ACCEPT
            ipt -C FORWARD -d "$POD_CIDR" $c -j ACCEPT 2>/dev/null || ipt -A FORWARD -d "$POD_CIDR" $c -j ACCEPT
        fi

        # Pods leave the pod CIDR with the node's address (the bridge CNI's ipMasq is off).
        ipt -t nat -N KUBELINE-MASQ 2>/dev/null || ipt -t nat -F KUBELINE-MASQ
        ipt -t nat -A KUBELINE-MASQ -d "$POD_CIDR" $c -j RETURN
        ipt -t nat -A KUBELINE-MASQ $c -j MASQUERADE
        ipt -t nat -C POSTROUTING -s "$POD_CIDR" $c -j KUBELINE-MASQ 2>/dev/null \
            || ipt -t nat -I POSTROUTING 1 -s "$POD_CIDR" $c -j KUBELINE-MASQ
    }
    # Pods have no IPv6 addresses; make sure nothing IPv6 is forwarded from the bridge either.
    if command -v ip6tables >/dev/null; then
        ip6tables -w 5 -C FORWARD -i "$BRIDGE" -m comment --comment "$RULE_TAG" -j REJECT 2>/dev/null \
            || ip6tables -w 5 -I FORWARD 1 -i "$BRIDGE" -m comment --comment "$RULE_TAG" -j REJECT 2>/dev/null || true
    fi
}

# kube-proxy and the kubelet insert their FORWARD jumps at the top when they start, ahead of
# the guard. None of their rules accepts a new pod connection to a guarded range, but the guard
# belongs first: move it back there once they are done (they never move existing rules).
guard_first() {
    local c="-m comment --comment $RULE_TAG"
    # shellcheck disable=SC2086
    if [[ $(iptables -w 5 -S FORWARD | sed -n 2p) != "-A FORWARD -s $POD_CIDR $c -j KUBELINE-EGRESS" ]]; then
        ipt -I FORWARD 1 -s "$POD_CIDR" $c -j KUBELINE-EGRESS
        ipt -D FORWARD $(( $(iptables -w 5 -S FORWARD | grep -n -- "-j KUBELINE-EGRESS" | tail -n1 | cut -d: -f1) - 1 ))
    fi
}

# Deletes every rule we or the cluster components added: ours carry $RULE_TAG; kube-proxy,
# kubelet and the CNI plugins own the KUBE-* and CNI-* chains (no other Kubernetes runs here).
remove_network() {
    local table rule chain
    for table in filter nat mangle; do
        # Rules in built-in chains that jump to or are tagged as ours.
        iptables -w 5 -t "$table" -S 2>/dev/null \
            | { grep -E "^-A (INPUT|OUTPUT|FORWARD|PREROUTING|POSTROUTING) .*(-j (KUBE-|CNI-|KUBELINE-)|$RULE_TAG)" || true; } \
            | while read -r rule; do
                # shellcheck disable=SC2086
                eval "iptables -w 5 -t $table ${rule/-A /-D }" 2>/dev/null || true
            done
        for chain in $(iptables -w 5 -t "$table" -S 2>/dev/null | awk '/^-N (KUBE-|CNI-|KUBELINE-)/ {print $2}'); do
            iptables -w 5 -t "$table" -F "$chain" 2>/dev/null || true
        done
        for chain in $(iptables -w 5 -t "$table" -S 2>/dev/null | awk '/^-N (KUBE-|CNI-|KUBELINE-)/ {print $2}'); do
            iptables -w 5 -t "$table" -X "$chain" 2>/dev/null || true
        done
    done
    ip6tables -w 5 -D FORWARD -i "$BRIDGE" -m comment --comment "$RULE_TAG" -j REJECT 2>/dev/null || true
    ip link del "$BRIDGE" 2>/dev/null || true
}
