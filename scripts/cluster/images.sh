# shellcheck shell=bash
# Building container images without Docker, and importing them into the cluster. Sourced.
#
# Nothing can be pulled here, so images are written as docker-archive tarballs by hand
# (one layer tar + config JSON + manifest.json with RepoTags) and imported with
# `ctr -n k8s.io images import`. Tarballs are cached in $IMAGE_CACHE; `up` re-imports them
# after a `down`, which wipes containerd's store along with the rest of the state dir.

WORKER_IMAGE=kubeline-worker:dev
DEBIAN_SUITE=bookworm

# write_docker_archive OUT TAG ROOTFS_DIR CONFIG_JSON: OUT becomes a one-layer docker-archive.
# CONFIG_JSON is the image's runtime config ({"Env": [...], "Cmd": [...], "User": ...}).
write_docker_archive() {
    local out=$1 tag=$2 root=$3 config=$4 work layer_sha cfg cfg_sha
    work=$(mktemp -d "${out}.XXXX")
    tar --numeric-owner --xattrs -C "$root" \
        --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' --exclude='./run/*' \
        --exclude='./tmp/*' --exclude='./var/cache/apt/archives/*.deb' --exclude='./var/lib/apt/lists/*' \
        -cf "$work/layer.tar" .
    layer_sha=$(sha256sum "$work/layer.tar" | cut -d' ' -f1)
    mkdir "$work/$layer_sha" && mv "$work/layer.tar" "$work/$layer_sha/layer.tar"
    cfg=$(jq -cn --argjson c "$config" --arg diff "sha256:$layer_sha" --arg tag "$tag" \
        '{architecture: "amd64", os: "linux", config: $c,
          rootfs: {type: "layers", diff_ids: [$diff]},
          history: [{created_by: "scripts/local-cluster load-image (\($tag))"}]}')
    cfg_sha=$(printf '%s' "$cfg" | sha256sum | cut -d' ' -f1)
    printf '%s' "$cfg" >"$work/$cfg_sha.json"
    jq -cn --arg c "$cfg_sha.json" --arg t "$tag" --arg l "$layer_sha/layer.tar" \
        '[{Config: $c, RepoTags: [$t], Layers: [$l]}]' >"$work/manifest.json"
    tar -C "$work" -cf "$out.tmp" manifest.json "$cfg_sha.json" "$layer_sha"
    mv "$out.tmp" "$out"
    rm -rf "$work"
}

import_image() { # import_image TARBALL
    ctr --address "$CONTAINERD_SOCK" -n k8s.io images import "$1" >/dev/null \
        || die "ctr images import $1 failed; see $LOGS/containerd.log"
    # Remember what the (persistent) store holds, so `up` skips tarballs it already imported,
    # and which sources it was built from (empty: unknown), so `image-status` can tell.
    local stamp
    stamp=$CONTAINERD_ROOT/imported-$(basename "$1")
    if [[ -f $1.source ]]; then cp "$1.source" "$stamp"; else : >"$stamp"; fi
    touch -r "$1" "$stamp"
}

# import_if_changed TARBALL: import unless this very tarball is already in containerd's store.
import_if_changed() {
    local stamp
    stamp=$CONTAINERD_ROOT/imported-$(basename "$1")
    [[ -f $stamp && ! $1 -nt $stamp && ! $1 -ot $stamp ]] && return 0
    import_image "$1"
}

# The pod sandbox image: just the static pause binary.
ensure_pause_image() {
    local tar=$IMAGE_CACHE/pause.tar root
    if [[ ! -f $tar || $BIN/pause -nt $tar ]]; then
        mkdir -p "$IMAGE_CACHE"
        root=$(mktemp -d)
        install -m 0755 "$BIN/pause" "$root/pause"
        write_docker_archive "$tar" "$PAUSE_IMAGE" "$root" \
            '{"Entrypoint": ["/pause"], "User": "65535:65535"}'
        rm -rf "$root"
    fi
    import_if_changed "$tar"
}

# The Debian mirror apt uses here (the first deb.debian.org-style URI of the main archive).
debian_mirror() {
    local m
    m=$(awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null)
    [[ -n $m ]] || m=$(awk '/^deb / && $0 !~ /security/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null)
    echo "${m:-http://deb.debian.org/debian}"
}

# A cached minimal Debian rootfs tarball (debootstrap minbase + python3 + ca-certificates),
# with the apt mirror configured and a non-root user "kubeline" (uid/gid 1000).
ensure_base_rootfs() {
    local tar=$IMAGE_CACHE/rootfs-$DEBIAN_SUITE-minbase.tar root mirror
    [[ -f $tar ]] && return 0
    apt_install_missing debootstrap:debootstrap
    mirror=$(debian_mirror)
    log "debootstrap $DEBIAN_SUITE from $mirror (once; about 2 minutes)"
    mkdir -p "$IMAGE_CACHE"
    root=$(mktemp -d "$IMAGE_CACHE/rootfs.XXXX")
    debootstrap --variant=minbase --include=python3,ca-certificates "$DEBIAN_SUITE" "$root" "$mirror" \
        >"$IMAGE_CACHE/debootstrap.log" 2>&1 \
        || { rm -rf "$root"; die "debootstrap failed; see $IMAGE_CACHE/debootstrap.log"; }
    printf 'Types: deb\nURIs: %s\nSuites: %s %s-updates\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
        "$mirror" "$DEBIAN_SUITE" "$DEBIAN_SUITE" >"$root/etc/apt/sources.list.d/debian.sources"
    rm -f "$root/etc/apt/sources.list"
    chroot "$root" groupadd -g 1000 kubeline
    chroot "$root" useradd -u 1000 -g 1000 -m -d /home/kubeline -s /bin/sh kubeline
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
    tar --numeric-owner --xattrs -C "$root" -cf "$tar.tmp" . && mv "$tar.tmp" "$tar"
    rm -rf "$root"
}

# build_python_image TAG OUT CUSTOMIZE_FN [ARGS...]: unpack the base rootfs, add uv and this
# machine's CA bundle, call CUSTOMIZE_FN ROOT ARGS... to add the image's own content (it may
# chroot into ROOT; DNS works there), and write OUT. A later server image reuses this with its
# own CUSTOMIZE_FN.
build_python_image() {
    local tag=$1 out=$2 fn=$3; shift 3
    local root
    ensure_base_rootfs
    root=$(mktemp -d "$IMAGE_CACHE/build.XXXX")
    BUILD_ROOT=$root    # cleaned up by cleanup_build_root, also when a step dies
    tar -C "$root" -xf "$IMAGE_CACHE/rootfs-$DEBIAN_SUITE-minbase.tar"
    # Pods verify the registries' TLS only with this machine's CA bundle.
    cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
    install -m 0755 "$(ensure_uv)" "$root/usr/local/bin/uv"
    cp /etc/resolv.conf "$root/etc/resolv.conf"
    mount -t proc proc "$root/proc"
    # A persistent uv cache, so rebuilding an image does not download every wheel again.
    mkdir -p "$IMAGE_CACHE/uv-cache" "$root/var/cache/uv"
    mount --bind "$IMAGE_CACHE/uv-cache" "$root/var/cache/uv"
    "$fn" "$root" "$@"
    umount "$root/var/cache/uv" "$root/proc"
    : >"$root/etc/resolv.conf"     # the kubelet mounts the pod's own
    write_docker_archive "$out" "$tag" "$root" \
        '{"Env": ["PATH=/opt/kubeline/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                  "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt", "PYTHONUNBUFFERED=1",
                  "UV_CACHE_DIR=/tmp/uv-cache", "HOME=/home/kubeline"],
          "Cmd": ["python3"], "User": "1000:1000", "WorkingDir": "/home/kubeline"}'
    cleanup_build_root
}

BUILD_ROOT=
cleanup_build_root() {
    [[ -n $BUILD_ROOT ]] || return 0
    umount -l "$BUILD_ROOT/var/cache/uv" 2>/dev/null || true
    umount -l "$BUILD_ROOT/proc" 2>/dev/null || true
    rm -rf "$BUILD_ROOT"
    BUILD_ROOT=
}

# The uv binary, from the uv wheel on PyPI (cached).
ensure_uv() {
    local dir=$IMAGE_CACHE/uv
    if [[ ! -x $dir/uv ]]; then
        mkdir -p "$dir/wheel"
        python3 -m pip download -q --no-deps --only-binary :all: --platform manylinux_2_17_x86_64 \
            -d "$dir/wheel" uv >&2 || die "pip download uv failed (PyPI unreachable?)"
        python3 - "$dir" <<'PY' || die "could not extract uv from its wheel"
import pathlib, sys, zipfile
d = pathlib.Path(sys.argv[1])
whl = next((d / "wheel").glob("uv-*.whl"))
with zipfile.ZipFile(whl) as z:
    name = next(n for n in z.namelist() if n.endswith(".data/scripts/uv"))
    (d / "uv").write_bytes(z.read(name))
(d / "uv").chmod(0o755)
PY
    fi
    echo "$dir/uv"
}

# The kubeline wheel from the repo, when the package exists yet (pyproject.toml present).
build_kubeline_wheel() { # build_kubeline_wheel OUTDIR -> prints the wheel path or nothing
    local repo=$REPO out=$1
    if [[ ! -f $repo/pyproject.toml ]]; then
        log "no $repo/pyproject.toml yet: building the worker image without the kubeline package"
        return 0
    fi
    rm -rf "$out"; mkdir -p "$out"
    python3 -m pip wheel -q --no-deps -w "$out" "$repo" >&2 \
        || die "building the kubeline wheel from $repo failed (python3 -m pip wheel --no-deps $repo)"
    ls "$out"/kubeline-*.whl 2>/dev/null | head -n1
}

_customize_worker() { # ROOT WHEEL|""
    local root=$1 wheel=$2
    chroot "$root" env UV_CACHE_DIR=/var/cache/uv uv venv -q --python /usr/bin/python3 /opt/kubeline \
        || die "uv venv in the worker image failed"
    if [[ -n $wheel ]]; then
        cp "$wheel" "$root/tmp/"
        chroot "$root" env UV_CACHE_DIR=/var/cache/uv UV_LINK_MODE=copy \
            uv pip install -q --python /opt/kubeline/bin/python \
            "/tmp/$(basename "$wheel")" || die "installing the kubeline wheel into the worker image failed"
        rm -rf "$root/tmp/"*
    fi
}

build_worker_image() {
    local wheel out=$IMAGE_CACHE/kubeline-worker-dev.tar
    wheel=$(build_kubeline_wheel "$IMAGE_CACHE/wheel")
    log "building $WORKER_IMAGE${wheel:+ with $(basename "$wheel")}"
    build_python_image "$WORKER_IMAGE" "$out" _customize_worker "$wheel"
    echo "$out"
}

# kubeline-server:dev = the worker image's base + kubeline[postgres] + kopf + kubernetes.
# kubeline-postgres:dev = Debian bookworm's postgresql packages, uid 999, and an entrypoint that
# honours POSTGRES_USER/POSTGRES_PASSWORD/POSTGRES_DB/PGDATA like the official image.
SERVER_IMAGE=kubeline-server:dev
POSTGRES_IMAGE=kubeline-postgres:dev

_customize_server() { # ROOT WHEEL
    local root=$1 wheel=$2
    _customize_worker "$root" ""
    cp "$wheel" "$root/tmp/"
    chroot "$root" env UV_CACHE_DIR=/var/cache/uv UV_LINK_MODE=copy \
        uv pip install -q --python /opt/kubeline/bin/python "/tmp/$(basename "$wheel")[postgres]" kopf kubernetes \
        || die "installing kubeline[postgres], kopf and kubernetes into the server image failed"
    rm -rf "$root/tmp/"*
    mkdir -p "$root/var/lib/kubeline" && chown 1000:1000 "$root/var/lib/kubeline"
}

_customize_postgres() { # ROOT
    local root=$1
    chroot "$root" groupadd -g 999 postgres
    chroot "$root" useradd -u 999 -g 999 -d /var/lib/postgresql -s /bin/sh postgres
    chroot "$root" sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql-15 >/dev/null' \
        || die "apt-get install postgresql-15 in the postgres image failed"
    rm -rf "$root"/var/lib/postgresql/15 "$root"/etc/postgresql/15/main
    install -d -o 999 -g 999 "$root/var/lib/postgresql" "$root/var/run/postgresql"
    cat >"$root/usr/local/bin/docker-entrypoint.sh" <<'SH'
#!/bin/sh
# Initialise PGDATA on first start (POSTGRES_USER/PASSWORD/DB), then run postgres in the foreground.
set -eu
export PATH=/usr/lib/postgresql/15/bin:$PATH
: "${PGDATA:=/var/lib/postgresql/data}" "${POSTGRES_USER:=postgres}" "${POSTGRES_DB:=$POSTGRES_USER}"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    [ -n "${POSTGRES_PASSWORD:-}" ] || { echo "POSTGRES_PASSWORD is required" >&2; exit 1; }
    mkdir -p "$PGDATA" && chmod 700 "$PGDATA"
    pwfile=$(mktemp) && printf '%s' "$POSTGRES_PASSWORD" >"$pwfile"
    initdb -D "$PGDATA" -U "$POSTGRES_USER" --pwfile="$pwfile" --auth-local=trust --auth-host=scram-sha-256 >/dev/null
    rm -f "$pwfile"
    echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
    if [ "$POSTGRES_DB" != postgres ]; then
        echo "CREATE DATABASE \"$POSTGRES_DB\";" | postgres --single -D "$PGDATA" postgres >/dev/null
    fi
fi
exec postgres -D "$PGDATA" -c listen_addresses='*' -c unix_socket_directories=/var/run/postgresql
SH
    chmod 0755 "$root/usr/local/bin/docker-entrypoint.sh"
    ln -sf /usr/lib/postgresql/15/bin/pg_isready "$root/usr/local/bin/pg_isready"
}

build_server_image() {
    local wheel out=$IMAGE_CACHE/kubeline-server-dev.tar
    wheel=$(build_kubeline_wheel "$IMAGE_CACHE/wheel")
    [[ -n $wheel ]] || die "no kubeline wheel (pyproject.toml missing?)"
    log "building $SERVER_IMAGE with $(basename "$wheel")"
    build_python_image "$SERVER_IMAGE" "$out" _customize_server "$wheel"
    echo "$out"
}

build_postgres_image() {
    local out=$IMAGE_CACHE/kubeline-postgres-dev.tar
    log "building $POSTGRES_IMAGE from Debian's postgresql-15"
    build_python_image "$POSTGRES_IMAGE" "$out.tmp.tar" _customize_postgres
    # The same rootfs, with the postgres runtime config (user 999, the entrypoint).
    local work; work=$(mktemp -d)
    tar -C "$work" -xf "$out.tmp.tar"
    local cfg; cfg=$(jq -r '.[0].Config' "$work/manifest.json")
    jq -c '.config = {"Env": ["PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "PGDATA=/var/lib/postgresql/data", "LANG=C.UTF-8"], "Entrypoint": ["/usr/local/bin/docker-entrypoint.sh"], "User": "999:999", "WorkingDir": "/var/lib/postgresql", "ExposedPorts": {"5432/tcp": {}}}' \
        "$work/$cfg" >"$work/cfg.json"
    local sha; sha=$(sha256sum "$work/cfg.json" | cut -d' ' -f1)
    rm "$work/$cfg"; mv "$work/cfg.json" "$work/$sha.json"
    jq -c --arg c "$sha.json" '.[0].Config = $c' "$work/manifest.json" >"$work/m.json" && mv "$work/m.json" "$work/manifest.json"
    tar -C "$work" -cf "$out" manifest.json "$sha.json" "$(jq -r '.[0].Layers[0]' "$work/manifest.json" | cut -d/ -f1)"
    rm -rf "$work" "$out.tmp.tar"
    echo "$out"
}

# Import every cached image tarball that containerd's store does not hold yet.
import_cached_images() {
    local t
    for t in "$IMAGE_CACHE"/*.tar; do
        [[ -f $t ]] || continue
        case $(basename "$t") in rootfs-*|pause.tar) continue ;; esac
        import_if_changed "$t"
    done
}

# --- Which sources an image was built from ---------------------------------------------------
# An image is "current" when the copy in containerd's store was built from what this checkout
# holds now; the e2e tests rebuild only stale images (a rebuild of all three takes minutes).
# The hash covers what goes into the image: the files the kubeline wheel is made of (what
# hatchling takes: git's tracked and not-ignored untracked files under src/, the built web UI it
# ships as artifacts, pyproject.toml) and the recipe itself (the bodies of the shell functions
# that build it, so a comment edit rebuilds nothing). It is written beside the tarball
# ($tar.source) when built and copied beside containerd's store when imported.

# image_tarball KIND: the cached tarball of worker | server | postgres.
image_tarball() { echo "$IMAGE_CACHE/kubeline-$1-dev.tar"; }

image_ref() { echo "kubeline-$1:dev"; }

# The package's files (relative to $REPO, NUL-separated): those in the wheel.
_package_files() {
    local f
    if git -C "$REPO" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
        git -C "$REPO" ls-files -z --cached --others --exclude-standard -- src pyproject.toml
    else
        (cd "$REPO" && find src -type f ! -name '*.pyc' ! -path '*/__pycache__/*' -print0 && printf '%s\0' pyproject.toml)
    fi
    [[ -d $REPO/src/kubeline/ui/static ]] && (cd "$REPO" && find src/kubeline/ui/static -type f -print0)
    return 0
}

# source_hash KIND: sha256 of what the image KIND is built from.
source_hash() {
    local kind=$1 recipe=(build_python_image write_docker_archive ensure_base_rootfs ensure_uv)
    case $kind in
        worker) recipe+=(build_kubeline_wheel _customize_worker build_worker_image) ;;
        server) recipe+=(build_kubeline_wheel _customize_worker _customize_server build_server_image) ;;
        postgres) recipe+=(_customize_postgres build_postgres_image) ;;
        *) die "unknown image '$kind' (expected: worker, server, postgres)" ;;
    esac
    {
        echo "suite $DEBIAN_SUITE"
        declare -f "${recipe[@]}"
        if [[ $kind != postgres ]]; then
            _package_files | sort -zu | (cd "$REPO" && while IFS= read -r -d '' f; do
                [[ -f $f ]] && sha256sum -- "$f"
            done; true)
        fi
    } | sha256sum | cut -d' ' -f1
}

# build_image KIND: build the tarball of worker | server | postgres, record its sources, print its path.
build_image() {
    local kind=$1 hash out
    hash=$(source_hash "$kind")    # before the build: an edit made during it makes it stale
    out=$("build_${kind}_image")
    printf '%s\n' "$hash" >"$out.source"
    echo "$out"
}

# image_state KIND: prints current | stale | missing (not in containerd's store) | unknown
# (imported from a tarball without a record of its sources).
image_state() {
    local kind=$1 stamp recorded
    stamp=$CONTAINERD_ROOT/imported-$(basename "$(image_tarball "$kind")")
    if ! ctr --address "$CONTAINERD_SOCK" -n k8s.io images ls -q 2>/dev/null \
        | grep -qx -e "$(image_ref "$kind")" -e "docker.io/library/$(image_ref "$kind")"; then
        echo missing; return 0
    fi
    recorded=$(cat "$stamp" 2>/dev/null || true)
    if [[ -z $recorded ]]; then echo unknown
    elif [[ $recorded == "$(source_hash "$kind")" ]]; then echo current
    else echo stale; fi
}
