# shellcheck shell=bash
# Certificates, tokens and kubeconfigs for the local cluster. Sourced.
#
# One CA signs the API server's serving cert and the API server's client cert for kubelets.
# Users (admin, components, the DNS sync loop) authenticate with static tokens: simpler than a
# client cert each, and the Node authorizer only looks at the user name system:node:<name>.

PKI=$STATE/pki

_sign() { # _sign NAME SUBJECT EXTFILE: key + cert signed by the CA, valid one year
    local name=$1 subj=$2 ext=$3
    openssl req -new -newkey rsa:2048 -nodes -keyout "$PKI/$name.key" -subj "$subj" \
        -out "$PKI/$name.csr" 2>/dev/null
    openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
        -days 365 -extfile "$ext" -out "$PKI/$name.crt" 2>/dev/null
    rm -f "$PKI/$name.csr"
}

ensure_pki() {
    [[ -f $PKI/done ]] && return 0
    rm -rf "$PKI"; mkdir -p "$PKI"; chmod 700 "$PKI"
    openssl req -x509 -new -newkey rsa:2048 -nodes -days 3650 -subj "/CN=kubeline-local-ca" \
        -keyout "$PKI/ca.key" -out "$PKI/ca.crt" 2>/dev/null || die "openssl could not create the CA in $PKI"

    cat >"$PKI/apiserver.ext" <<EXT
basicConstraints=CA:FALSE
keyUsage=digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,IP:$NODE_IP,IP:$API_SERVICE_IP,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.$CLUSTER_DOMAIN
EXT
    _sign apiserver "/CN=kube-apiserver" "$PKI/apiserver.ext"
    printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n' \
        >"$PKI/client.ext"
    _sign apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" "$PKI/client.ext"

    # Service-account token signing key pair.
    openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
    openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null

    # token,user,uid,"groups"
    local t
    : >"$PKI/tokens.csv"
    for t in "admin|kubeline-admin|system:masters" \
             "controller-manager|system:kube-controller-manager|" \
             "scheduler|system:kube-scheduler|" \
             "kubelet|system:node:$NODE_NAME|system:nodes" \
             "kube-proxy|system:kube-proxy|" \
             "dns-sync|system:kubeline-dns-sync|"; do
        local name user group tok
        IFS='|' read -r name user group <<<"$t"
        tok=$(openssl rand -hex 24)
        echo "$tok" >"$PKI/$name.token"
        printf '%s,%s,%s,"%s"\n' "$tok" "$user" "$user" "$group" >>"$PKI/tokens.csv"
        write_kubeconfig "$STATE/$name.kubeconfig" "$user" "$tok" "https://127.0.0.1:$API_PORT"
    done
    cp "$STATE/admin.kubeconfig" "$KUBECONFIG_PATH"
    touch "$PKI/done"
}

write_kubeconfig() { # write_kubeconfig FILE USER TOKEN SERVER
    local ca
    ca=$(base64 -w0 <"$PKI/ca.crt")
    cat >"$1" <<KC
apiVersion: v1
kind: Config
clusters:
- name: kubeline-local
  cluster:
    server: $4
    certificate-authority-data: $ca
users:
- name: $2
  user:
    token: $3
contexts:
- name: kubeline-local
  context:
    cluster: kubeline-local
    user: $2
current-context: kubeline-local
KC
    chmod 600 "$1"
}
