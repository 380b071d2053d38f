#!/usr/bin/env bash
# Builds the kind node image for Kubernetes $K8S_VERSION on this machine, without a registry:
#
#   images/kind/build.sh            build (or reuse) it; stdout: its reference (localhost/tpfleet/kind-node:<version>)
#   images/kind/build.sh --images   the images preloaded in it, one `ref<TAB>archive` line each (builds them if needed)
#   images/kind/build.sh --kind-module   the pinned kind module's directory (its files are the node's base)
#
# kind's layout (`kind build node-image` and kind's base image, from the kind module pinned in
# tools/k8s/kind): a systemd root with containerd, runc and CNI plugins and kind's own files
# (entrypoint, systemd units, containerd config), taken from that module; kubelet, kubeadm and
# kubectl in /usr/bin; /kind/version; the default CNI and storage manifests in /kind/manifests; and
# every image kubeadm and those manifests need already in containerd's store (namespace k8s.io,
# pinned). Sources: Debian packages (debootstrap from this machine's mirror, images/kind/rootfs.sh)
# and binaries built from their Go modules (tools/k8s/build.sh); each image is assembled with
# buildah. What differs from kind's own image, and why, is in images/kind/README.md.
#
# Everything is cached under $TPFLEET_CACHE/kind, keyed by its inputs: the Debian roots, one
# docker-archive per component image, the preloaded containerd store, and the node image (in
# buildah's storage, which podman shares, with its key as a label). A warm run only hashes.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR
source "$here/../lib.sh"
# shellcheck source=../../tools/k8s/versions.env
source "$REPO_ROOT/tools/k8s/versions.env"

KIND_CACHE="$TPFLEET_CACHE/kind"
ARCHIVES="$KIND_CACHE/images"
mkdir -p "$ARCHIVES"
NODE_REF="localhost/tpfleet/kind-node:$K8S_VERSION"
INPUTS_LABEL=io.tpfleet.inputs
SELF_SHA=$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-16)

BINARIES=(kubelet kubeadm kubectl kube-apiserver kube-controller-manager kube-scheduler kube-proxy etcd
  containerd containerd-shim-runc-v2 ctr crictl coredns local-path-provisioner)

sha() { sha256sum "$@" | sha256sum | cut -c1-16; }

# The kind module's directory in the Go module cache (its files are the node's base files).
kind_module() {
  local v
  v=$(sed -n 's/^require sigs.k8s.io\/kind \(v[^ ]*\)$/\1/p' "$REPO_ROOT/tools/k8s/kind/go.mod")
  [ -n "$v" ] || { log "tools/k8s/kind/go.mod: no sigs.k8s.io/kind version"; exit 1; }
  (cd "$REPO_ROOT/tools/k8s/kind" && source ../env.sh && go mod download -json "sigs.k8s.io/kind@$v") \
    | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p'
}

# A version pinned in a tools/k8s sibling go.mod (e.g. coredns v1.14.6).
pinned() { sed -n "s#^\(require \|\t\)$2 \(v[^ ]*\).*#\2#p" "$REPO_ROOT/tools/k8s/$1/go.mod" | head -n1; }

# A root filesystem tarball imported as an image in buildah's storage (reused while its key holds).
import_root() { # name tarball -> ref
  local ref="localhost/tpfleet-kind/$1-root:${2##*-}" c
  ref=${ref%.tar}
  if [ -z "$(image_id "$ref")" ]; then
    c=$("${BUILDAH[@]}" from scratch)
    "${BUILDAH[@]}" add --quiet "$c" "$2" / >/dev/null
    "${BUILDAH[@]}" config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --os linux --arch amd64 "$c"
    "${BUILDAH[@]}" commit --quiet --rm "$c" "$ref" >/dev/null
  fi
  echo "$ref"
}

# One component image: a base (scratch or netbase) plus files, exported as a docker-archive whose
# name inside is the reference kubeadm or the manifests ask for. Rebuilt only when its key changes.
#   component NAME REF BASE ENTRYPOINT-JSON SRC:DEST:MODE... (or TARBALL:/:tar, unpacked at /)
component() {
  local name=$1 ref=$2 base=$3 entrypoint=$4; shift 4
  local archive="$ARCHIVES/$name.tar" key f src dest mode c
  # The key: what goes in (destination, mode, content), never where it was staged from.
  key=$( { echo "$name $ref $base $entrypoint $SELF_SHA"; for f in "$@"; do echo "${f#*:} $(sha256sum "${f%%:*}" | cut -c1-64)"; done; } | sha256sum | cut -c1-16)
  if [ ! -f "$archive" ] || [ "$(cat "$archive.inputs" 2>/dev/null)" != "$key" ]; then
    log "image $ref ($name)"
    if [ "$base" = scratch ]; then c=$("${BUILDAH[@]}" from scratch); else c=$("${BUILDAH[@]}" from --pull-never --quiet "$base"); fi
    for f in "$@"; do
      IFS=: read -r src dest mode <<<"$f"
      if [ "$mode" = tar ]; then "${BUILDAH[@]}" add --quiet "$c" "$src" "$dest" >/dev/null; continue; fi
      "${BUILDAH[@]}" copy --quiet --chown 0:0 --chmod "$mode" "$c" "$src" "$dest" >/dev/null
    done
    "${BUILDAH[@]}" config --entrypoint "$entrypoint" --cmd '' --os linux --arch amd64 \
      --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --label "$INPUTS_LABEL=$key" "$c"
    "${BUILDAH[@]}" commit --quiet --rm "$c" "localhost/tpfleet-kind/$name:$key" >/dev/null
    rm -f "$archive" "$archive.inputs"
    "${BUILDAH[@]}" push --quiet "localhost/tpfleet-kind/$name:$key" "docker-archive:$archive.tmp:$ref" >/dev/null
    # Only the archive is kept: the image lives on inside the node image's containerd store.
    "${BUILDAH[@]}" rmi "localhost/tpfleet-kind/$name:$key" >/dev/null 2>&1 || true
    mv "$archive.tmp" "$archive"
    echo "$key" >"$archive.inputs"
  fi
  printf '%s\t%s\t%s\n' "$ref" "$archive" "$key" >>"$WORK/images.tsv"
}

# The pause image: e2e/cluster/pause/pause.c, static (the local-real nodes' sandbox image too).
pause_binary() {
  local src="$REPO_ROOT/e2e/cluster/pause/pause.c" out
  out="$KIND_CACHE/pause-$(sha "$src")"
  if [ ! -x "$out" ]; then gcc -static -O2 -s -o "$out.tmp" "$src" && mv "$out.tmp" "$out"; fi
  echo "$out"
}

# kube-proxy's iptables commands as images/kind/kube-proxy/iptables-wrapper, which points them at
# the node's backend on first use. A reproducible tar (fixed owner, mode and time): its hash is a key.
iptables_wrapper_tar() {
  local st="$WORK/ipt" c
  mkdir -p "$st/usr/sbin"
  cp "$here/kube-proxy/iptables-wrapper" "$st/usr/sbin/iptables-wrapper"
  chmod 0755 "$st/usr/sbin" "$st/usr/sbin/iptables-wrapper"
  for c in iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore; do ln -sf iptables-wrapper "$st/usr/sbin/$c"; done
  tar -C "$st" --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -cf "$WORK/iptables-wrapper.tar" ./usr/sbin
  echo "$WORK/iptables-wrapper.tar"
}

# Minimal /etc for the images built from scratch (static binaries): root and nobody, and hosts
# files resolving through /etc/hosts first.
scratch_etc() {
  mkdir -p "$WORK/etc"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n' >"$WORK/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$WORK/etc/group"
  printf 'hosts: files dns\n' >"$WORK/etc/nsswitch.conf"
}

build_components() { # bin netbase-ref kind-module
  local bin=$1 netbase=$2 kmod=$3 img repo tag coredns_tag etcd_tag
  : >"$WORK/images.tsv"
  scratch_etc
  local etc=("$WORK/etc/passwd:/etc/passwd:0644" "$WORK/etc/group:/etc/group:0644" "$WORK/etc/nsswitch.conf:/etc/nsswitch.conf:0644")
  # kubeadm names the control plane, kube-proxy, etcd and CoreDNS images; the versions we build
  # must be the ones it names (etcd and CoreDNS come from pinned modules: fail if they drift).
  local want
  want=$("$bin/kubeadm" config images list --kubernetes-version "$K8S_VERSION")
  while IFS= read -r img; do
    [ -n "$img" ] || continue
    repo=${img%:*} tag=${img##*:}
    case ${repo##*/} in
      kube-apiserver | kube-controller-manager | kube-scheduler)
        component "${repo##*/}" "$img" scratch "[\"/usr/local/bin/${repo##*/}\"]" "${etc[@]}" "$bin/${repo##*/}:/usr/local/bin/${repo##*/}:0755" ;;
      kube-proxy)
        component kube-proxy "$img" "$netbase" '["/usr/local/bin/kube-proxy"]' "$bin/kube-proxy:/usr/local/bin/kube-proxy:0755" \
          "$(iptables_wrapper_tar):/:tar" ;;
      etcd)
        etcd_tag="v${tag%-*}"
        [ "$etcd_tag" = "$("$bin/etcd" --version | sed -n 's/^etcd Version: /v/p')" ] \
          || { log "kubeadm wants etcd $tag, tools/k8s builds $("$bin/etcd" --version | head -n1)"; exit 1; }
        component etcd "$img" scratch '["/usr/local/bin/etcd"]' "${etc[@]}" "$bin/etcd:/usr/local/bin/etcd:0755" ;;
      coredns)
        coredns_tag=$(pinned coredns github.com/coredns/coredns)
        [ "$tag" = "$coredns_tag" ] || { log "kubeadm wants CoreDNS $tag, tools/k8s/coredns pins $coredns_tag"; exit 1; }
        component coredns "$img" scratch '["/coredns"]' "${etc[@]}" "$bin/coredns:/coredns:0755" ;;
      pause) ;; # kind replaces kubeadm's pause with containerd's sandbox image (below)
      *) log "kubeadm wants an image this build does not know: $img"; exit 1 ;;
    esac
  done <<<"$want"
  # The sandbox image is whatever kind's containerd config names.
  local sandbox
  sandbox=$(sed -n 's/^\s*sandbox_image = "\(.*\)"$/\1/p' "$kmod/images/base/files/etc/containerd/config.toml")
  [ -n "$sandbox" ] || { log "no sandbox_image in kind's containerd config"; exit 1; }
  component pause "$sandbox" scratch '["/pause"]' "$(pause_binary):/pause:0755"
  # The default CNI and storage manifests' images (names of our own; never pulled).
  local lpp
  lpp=$(pinned local-path-provisioner github.com/rancher/local-path-provisioner)
  KINDNET_REF="localhost/tpfleet-kind/kindnet:$(sha "$here/kindnet/tpfleet-kindnet" "$bin/kubectl")"
  PROVISIONER_REF="localhost/tpfleet-kind/local-path-provisioner:$lpp"
  HELPER_REF="localhost/tpfleet-kind/local-path-helper:bookworm"
  component kindnet "$KINDNET_REF" "$netbase" '["/usr/local/bin/tpfleet-kindnet"]' \
    "$bin/kubectl:/usr/local/bin/kubectl:0755" "$here/kindnet/tpfleet-kindnet:/usr/local/bin/tpfleet-kindnet:0755"
  component local-path-provisioner "$PROVISIONER_REF" scratch '["/usr/local/bin/local-path-provisioner"]' "${etc[@]}" \
    "$bin/local-path-provisioner:/usr/local/bin/local-path-provisioner:0755"
  component local-path-helper "$HELPER_REF" "$netbase" '["/bin/sh"]'
}

# containerd's store with every component image, as kind's node image builder makes it: imported
# into namespace k8s.io, pinned (never garbage-collected), not unpacked (containerd unpacks on first
# use). Made by this machine's containerd (the same build the node runs) into a plain directory,
# then kept as a tarball keyed by the archives and containerd.
preload() { # bin -> tarball
  local bin=$1 key out work pid sock a
  key=$( { cut -f1,3 "$WORK/images.tsv"; sha256sum "$bin/containerd" "$bin/ctr"; echo "$SELF_SHA"; } | sha256sum | cut -c1-16)
  out="$KIND_CACHE/preload-$key.tar"
  if [ -f "$out" ]; then echo "$out"; return; fi
  log "preloading $(wc -l <"$WORK/images.tsv") images into a containerd store"
  work=$(mktemp -d "$KIND_CACHE/preload.XXXXXX")
  sock="$work/containerd.sock"
  cat >"$work/config.toml" <<EOF
version = 3
root = "$work/root/var/lib/containerd"
state = "$work/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.cri.v1.images", "io.containerd.cri.v1.runtime", "io.containerd.internal.v1.opt", "io.containerd.nri.v1.nri", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.blockfile", "io.containerd.snapshotter.v1.erofs"]
[grpc]
  address = "$sock"
[ttrpc]
  address = "$sock.ttrpc"
EOF
  "$bin/containerd" --config "$work/config.toml" >"$work/containerd.log" 2>&1 &
  pid=$!
  # shellcheck disable=SC2064 # expand now: this run's daemon and directory
  trap "kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf '$work'" EXIT
  local i
  for i in $(seq 1 100); do
    "$bin/ctr" --address "$sock" version >/dev/null 2>&1 && break
    kill -0 "$pid" 2>/dev/null || { tail -n 20 "$work/containerd.log" >&2; exit 1; }
    sleep 0.2
  done
  while IFS=$'\t' read -r _ a _; do
    "$bin/ctr" --address "$sock" --namespace k8s.io images import --label=io.cri-containerd.pinned=pinned \
      --all-platforms --no-unpack --digests "$a" >/dev/null
  done <"$WORK/images.tsv"
  local have
  have=$("$bin/ctr" --address "$sock" --namespace k8s.io images list --quiet)
  while IFS=$'\t' read -r a _ _; do
    grep -qxF "$a" <<<"$have" || { log "preload: $a missing after import"; exit 1; }
  done <"$WORK/images.tsv"
  kill "$pid"
  wait "$pid" || true
  trap "rm -rf '$work'" EXIT
  tar -C "$work/root" --numeric-owner -cf "$work/preload.tar" var/lib/containerd
  mv "$work/preload.tar" "$out"
  find "$KIND_CACHE" -maxdepth 1 -name 'preload-*.tar' ! -name "${out##*/}" -delete
  rm -rf "$work"
  trap - EXIT
  echo "$out"
}

render() { # template -> stdout, the @NAME@ placeholders replaced
  sed -e "s#@KINDNET_IMAGE@#$KINDNET_REF#g" -e "s#@PROVISIONER_IMAGE@#$PROVISIONER_REF#g" -e "s#@HELPER_IMAGE@#$HELPER_REF#g" "$1"
}

# The node's files on top of its Debian root, staged with their exact modes and added as one tar:
# kind's base files (modes as kind's Dockerfile gives them), ours from images/kind/node, the
# binaries, /kind/version and the manifests. Files only: no directory of the root changes mode.
stage_node_files() { # bin kind-module -> stage dir
  local bin=$1 f="$2/images/base/files" st="$WORK/stage" rel b
  mkdir -p "$st"
  put() { # src dest mode
    mkdir -p "$st$(dirname "$2")"
    cp "$1" "$st$2"
    chmod "$3" "$st$2"
  }
  put "$f/usr/local/bin/entrypoint" /usr/local/bin/entrypoint 0755
  put "$f/usr/local/bin/clean-install" /usr/local/bin/clean-install 0755
  while IFS= read -r rel; do
    case $rel in kind/bin/*) put "$f/$rel" "/$rel" 0755 ;; *) put "$f/$rel" "/$rel" 0644 ;; esac
  done < <(cd "$f" && find kind etc -type f | sort)
  while IFS= read -r rel; do put "$here/node/$rel" "/$rel" 0644; done < <(cd "$here/node" && find . -type f | sed 's#^\./##' | sort)
  for b in kubelet kubeadm kubectl; do put "$bin/$b" "/usr/bin/$b" 0755; done
  for b in containerd containerd-shim-runc-v2 ctr crictl; do put "$bin/$b" "/usr/local/bin/$b" 0755; done
  render "$here/manifests/default-cni.yaml" >"$WORK/default-cni.yaml"
  render "$here/manifests/default-storage.yaml" >"$WORK/default-storage.yaml"
  put "$WORK/default-cni.yaml" /kind/manifests/default-cni.yaml 0644
  put "$WORK/default-storage.yaml" /kind/manifests/default-storage.yaml 0644
  printf '%s' "$K8S_VERSION" >"$WORK/version"
  put "$WORK/version" /kind/version 0644
  find "$st" -type d -exec chmod 0755 {} +
  echo "$st"
}

node_image() { # bin node-root-tarball preload-tarball kind-module
  local bin=$1 root=$2 pre=$3 kmod=$4 key base old st
  key=$( {
    echo "$K8S_VERSION $SELF_SHA ${root##*/} ${pre##*/} $kmod $KINDNET_REF $PROVISIONER_REF $HELPER_REF"
    sha256sum "$bin"/{kubelet,kubeadm,kubectl,containerd,containerd-shim-runc-v2,ctr,crictl}
    find "$here/node" "$here/manifests" -type f -print0 | sort -z | xargs -0 sha256sum
  } | sha256sum | cut -c1-32)
  if [ "$(image_label "$NODE_REF" "$INPUTS_LABEL")" = "$key" ]; then return; fi
  log "building $NODE_REF"
  base=$(import_root node "$root")
  old=$(image_id "$NODE_REF")
  st=$(stage_node_files "$bin" "$kmod")
  tar -C "$st" --numeric-owner --owner=0 --group=0 -cf "$WORK/node-files.tar" .
  NODE_CTR=$("${BUILDAH[@]}" from --pull-never --quiet "$base")
  "${BUILDAH[@]}" add --quiet "$NODE_CTR" "$WORK/node-files.tar" / >/dev/null
  # What kind's Dockerfile does in its RUN steps, against this root: systemd as a container's init
  # (no units that only make sense on a machine, journald not reading the host's kmsg), the node's
  # services enabled, the runtime spec containerd's CRI starts from (kind's mount hook, no rlimits).
  # Ours: the CNI plugins where containerd looks for them, and restrict_oom_score_adj (see README).
  "${BUILDAH[@]}" run "$NODE_CTR" -- sh -euc '
    chmod 0755 /kind /kind/bin
    find /lib/systemd/system/sysinit.target.wants/ -name systemd-tmpfiles-setup.service -delete
    rm -f /lib/systemd/system/multi-user.target.wants/* /etc/systemd/system/*.wants/* \
      /lib/systemd/system/local-fs.target.wants/* /lib/systemd/system/sockets.target.wants/*udev* \
      /lib/systemd/system/sockets.target.wants/*initctl* /lib/systemd/system/basic.target.wants/*
    echo ReadKMsg=no >>/etc/systemd/journald.conf
    ln -sf /usr/lib/systemd/systemd /sbin/init
    systemctl enable kubelet.service containerd.service undo-mount-hacks.service
    systemctl mask systemd-binfmt.service
    mkdir -p /etc/kubernetes/manifests /opt/cni/bin
    for p in /usr/lib/cni/*; do ln -sf "$p" /opt/cni/bin/; done
    sed -i "s/^\(\s*restrict_oom_score_adj\) = false/\1 = true/" /etc/containerd/config.toml
    grep -q "restrict_oom_score_adj = true" /etc/containerd/config.toml
    ctr oci spec | jq ".hooks.createContainer[.hooks.createContainer|length] |= . + {\"path\": \"/kind/bin/mount-product-files.sh\"}" \
      | jq "del(.process.rlimits)" >/etc/containerd/cri-base.json
    containerd --version
  ' >&2
  "${BUILDAH[@]}" add --quiet "$NODE_CTR" "$pre" / >/dev/null
  "${BUILDAH[@]}" config --env container=docker --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --entrypoint '["/usr/local/bin/entrypoint", "/sbin/init"]' --cmd '' --stop-signal SIGRTMIN+3 \
    --label "$INPUTS_LABEL=$key" --label "io.tpfleet.kind.kubernetes-version=$K8S_VERSION" "$NODE_CTR"
  "${BUILDAH[@]}" commit --quiet --rm "$NODE_CTR" "$NODE_REF" >/dev/null
  NODE_CTR=
  if [ -n "$old" ] && [ "$old" != "$(image_id "$NODE_REF")" ]; then "${BUILDAH[@]}" rmi "$old" >/dev/null 2>&1 || true; fi
}

cleanup() {
  if [ -n "${NODE_CTR:-}" ]; then "${BUILDAH[@]}" rm "$NODE_CTR" >/dev/null 2>&1 || true; fi
  if [ -n "${WORK:-}" ]; then rm -rf "$WORK"; fi
}

main() {
  local mode=${1:-build}
  case $mode in
    build | --images) ;;
    --kind-module) kind_module; return ;;
    *) echo "usage: images/kind/build.sh [--images | --kind-module]" >&2; exit 2 ;;
  esac
  ensure_host_packages
  exec 9>"$KIND_CACHE/.build.lock"
  flock 9
  WORK=$(mktemp -d "$KIND_CACHE/work.XXXXXX")
  trap cleanup EXIT
  local start=$SECONDS kmod bin netbase_tar node_tar rootfs_pid
  kmod=$(kind_module)
  # The Debian roots download and unpack (network, disk) while Go compiles (CPU): in parallel.
  { bash "$here/rootfs.sh" netbase >"$WORK/netbase.path" && bash "$here/rootfs.sh" node >"$WORK/node.path"; } &
  rootfs_pid=$!
  bin=$(bash "$REPO_ROOT/tools/k8s/build.sh" "${BINARIES[@]}")
  wait "$rootfs_pid"
  netbase_tar=$(cat "$WORK/netbase.path") node_tar=$(cat "$WORK/node.path")
  build_components "$bin" "$(import_root netbase "$netbase_tar")" "$kmod"
  if [ "$mode" = --images ]; then cut -f1,2 "$WORK/images.tsv"; return; fi
  local pre
  pre=$(preload "$bin")
  node_image "$bin" "$node_tar" "$pre" "$kmod"
  log "$NODE_REF ready ($((SECONDS - start)) s)"
  echo "$NODE_REF"
}

main "$@"
