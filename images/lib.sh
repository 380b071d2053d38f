# shellcheck shell=bash disable=SC2034 # the variables are for the scripts that source this
# Shared by images/base.sh and images/build.sh: paths, logging, host packages, and the one way this
# repo calls buildah. Sourced, never run.
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TPFLEET_CACHE=${TPFLEET_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tpfleet}
IMAGES_CACHE="$TPFLEET_CACHE/images"
mkdir -p "$IMAGES_CACHE"

# One Node version for the repo: scripts/bootstrap.sh pins it, the base image follows it.
NODE_VERSION=$(sed -n 's/^TPFLEET_NODE_VERSION=//p' "$REPO_ROOT/scripts/bootstrap.sh")
# The npm that Node $NODE_VERSION bundles (its CHANGELOG: "deps: upgrade npm to 11.19.0" in 24.20.0).
NPM_VERSION=11.19.0
DEBIAN_SUITE=bookworm
BASE_REF="localhost/tpfleet-base/node:${NODE_VERSION}-${DEBIAN_SUITE}-slim"

log() { printf '[images] %s\n' "$*" >&2; }

# Host tools: buildah builds, debootstrap makes the base rootfs, getcap (libcap2-bin) lets the tests
# read file capabilities. Installed only when missing, like scripts/bootstrap.sh does.
ensure_host_packages() {
  local missing=() p
  for p in buildah debootstrap libcap2-bin; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "$(id -u)" -eq 0 ] || { log "missing Debian packages (${missing[*]}); install them as root"; exit 1; }
  log "installing Debian packages: ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# Storage driver: overlay is the fast one (layer diffs without copying) and works on this VM's ext4
# root. It cannot stack on an overlayfs root (a CI job inside a container), where vfs is the
# fallback: slower and bigger, but it works everywhere. Decided from the filesystem under the
# graph root, so a machine always picks the same driver (buildah refuses to switch on a used store).
storage_driver() {
  local root=/var/lib/containers/storage fs
  mkdir -p "$root"
  fs=$(stat -f -c %T "$root")
  if [ "$fs" = overlayfs ]; then echo vfs; else echo overlay; fi
}
BUILDAH=(buildah --storage-driver "$(storage_driver)")

# Isolation for RUN steps: chroot. It needs no OCI runtime (Debian's buildah only recommends
# runc/crun and we install without recommends), no CNI/netavark network plugins (RUN shares the
# host network, which apt in the build stage needs), and works as root in a VM or a container.
# The build only runs our own Dockerfile, so the weaker isolation costs nothing here.
export BUILDAH_ISOLATION=chroot

# Debian mirror of this machine (the image's apt uses the same one): the first URIs:/deb line that
# is not the security archive, else deb.debian.org.
debian_mirror() {
  local m
  m=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null \
    | sed -n -e 's/^URIs:[[:space:]]*\([^[:space:]]*\).*/\1/p' -e 's/^deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\?\([^[:space:]]*\).*/\2/p' \
    | grep -E '/debian/?$' | head -n1 || true)
  echo "${m:-http://deb.debian.org/debian}"
}

# Full image id of a reference, empty when it is not in storage.
image_id() { local id; id=$("${BUILDAH[@]}" images --noheading --no-trunc --format '{{.ID}}' "$1" 2>/dev/null || true); echo "${id#sha256:}"; }

# A label of an image, empty when the image or label is missing.
image_label() {
  "${BUILDAH[@]}" inspect --type image --format "{{index .OCIv1.Config.Labels \"$2\"}}" "$1" 2>/dev/null || true
}
