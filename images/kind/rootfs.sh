#!/usr/bin/env bash
# The Debian root filesystems of the kind node image and of the component images that need a
# userspace, made with debootstrap from this machine's Debian mirror (there is no registry here):
#
#   images/kind/rootfs.sh node      the node: systemd, iptables/nftables, iproute2, runc and the CNI
#                                   plugins from Debian, and what kind's entrypoint calls
#   images/kind/rootfs.sh netbase   a slim userspace for kube-proxy, the kindnet agent and the
#                                   local-path helper: iptables, nftables, iproute2, conntrack
#
# Prints the path of a tarball of the root, cached under $TPFLEET_CACHE/kind keyed by everything that
# goes into it (suite, mirror, package list, this script), so later runs take no time. Idempotent;
# concurrent callers of the same root wait for each other (lock per root).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

KIND_CACHE="$TPFLEET_CACHE/kind"
mkdir -p "$KIND_CACHE"

# What kind's own base image installs for the node (images/base/Dockerfile of the pinned kind
# module): systemd, the data path tools, and the helpers its entrypoint and kubeadm call. Left out:
# storage-test packages (nfs-common, open-iscsi, e2fsprogs) and fuse-overlayfs, which kind uses only
# on filesystems without overlay support. runc and the CNI plugins (ptp, host-local, portmap,
# loopback) come from Debian instead of kind's source builds: the same ones the local-real nodes run.
NODE_PACKAGES=systemd,conntrack,iptables,nftables,iproute2,ethtool,util-linux,mount,kmod,libseccomp2,pigz,bash,ca-certificates,curl,jq,procps,runc,containernetworking-plugins
NETBASE_PACKAGES=iptables,nftables,iproute2,conntrack

name=${1:?usage: images/kind/rootfs.sh node|netbase}
case $name in
  node) packages=$NODE_PACKAGES ;;
  netbase) packages=$NETBASE_PACKAGES ;;
  *) echo "usage: images/kind/rootfs.sh node|netbase" >&2; exit 2 ;;
esac
MIRROR=$(debian_mirror)
KEY=$( { echo "$name $DEBIAN_SUITE $MIRROR $packages"; cat "${BASH_SOURCE[0]}"; } | sha256sum | cut -c1-16)
TARBALL="$KIND_CACHE/rootfs-$name-$DEBIAN_SUITE-$KEY.tar"

# As debian:*-slim: no documentation, man pages or locales, no apt lists or caches, nothing in /tmp,
# /run or /var/log. Later apt installs in the image follow the same rules (dpkg path-excludes).
slim() { # root
  local r=${1:?root}
  cat >"$r/etc/dpkg/dpkg.cfg.d/tpfleet-slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
EOF
  find "$r/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
  rm -rf "${r:?}"/usr/share/{man,info,groff,lintian,locale}/* "${r:?}"/var/lib/apt/lists/* "${r:?}"/var/cache/apt/*.bin \
    "${r:?}"/var/cache/apt/archives/*.deb "${r:?}"/var/log/* "${r:?}"/dev/* "${r:?}"/run/* "${r:?}"/tmp/* "${r:?}"/root/.??* 2>/dev/null || true
}

make_tarball() {
  local work
  work=$(mktemp -d "$KIND_CACHE/rootfs-$name.XXXXXX")
  # shellcheck disable=SC2064 # expand now: the trap must remove this run's directory
  trap "rm -rf '$work'" EXIT
  log "debootstrap --variant=minbase $DEBIAN_SUITE with $packages (first build only; cached in $TARBALL)"
  local start=$SECONDS
  debootstrap --variant=minbase --include="$packages" "$DEBIAN_SUITE" "$work/root" "$MIRROR" >"$work/debootstrap.log" 2>&1 \
    || { tail -n 30 "$work/debootstrap.log" >&2; exit 1; }
  slim "$work/root"
  tar -C "$work/root" --numeric-owner --xattrs --xattrs-include='*' -cf "$work/root.tar" .
  mv "$work/root.tar" "$TARBALL"
  # Earlier keys of this root are of no further use.
  find "$KIND_CACHE" -maxdepth 1 -name "rootfs-$name-*.tar" ! -name "${TARBALL##*/}" -delete
  rm -rf "$work"
  trap - EXIT
  log "rootfs $name built in $((SECONDS - start)) s"
}

ensure_host_packages
exec 8>"$KIND_CACHE/.rootfs-$name.lock"
flock 8
[ -f "$TARBALL" ] || make_tarball
echo "$TARBALL"
