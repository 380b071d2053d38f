#!/usr/bin/env bash
# Builds tpfleet's container images with buildah from the repo's Dockerfile (the one users build
# with docker) and exports each to a docker-archive tarball that `ctr -n k8s.io images import` and
# `kind load image-archive` take.
#
#   images/build.sh [operator|node ...]    default: both; stdout: one `ref<TAB>archive` line per target
#   images/build.sh --context-files        the files that enter the build context (for the tests)
#   images/build.sh --storage-driver       the buildah storage driver this machine uses
#
# A target is rebuilt only when its inputs changed: the Dockerfile, .dockerignore, the base image and
# every file of the build context (hashed; the hash is an image label and sits next to the archive).
# An image missing from buildah's storage but with a current archive is restored from the archive.
# Runs are serialised with a lock, so two test suites can call it at once. Logs go to stderr.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

INPUTS_LABEL=io.tpfleet.inputs
VERSION=$(sed -n 's/^  "version": "\(.*\)",$/\1/p' package.json)

# The build context as git pathspecs derived from .dockerignore (allowlist form, see its header):
# `!path` lines are the pathspecs, the other patterns exclusions (with everything beneath them).
# Files git ignores inside the context (node_modules, the addon's build, *.log) are dockerignored too.
context_files() {
  local specs=() line
  while IFS= read -r line || [ -n "$line" ]; do
    line=${line%%#*}; line=${line%"${line##*[![:space:]]}"}
    case $line in
      '' | '*') ;;
      '!'*) specs+=("${line#!}") ;;
      *) specs+=(":(exclude,glob)$line" ":(exclude,glob)$line/**") ;;
    esac
  done <.dockerignore
  git ls-files --cached --others --exclude-standard -- "${specs[@]}" | while IFS= read -r f; do
    if [ -f "$f" ]; then printf '%s\n' "$f"; fi # a deleted file can still be in the index
  done
}

input_hash() { # target base-key
  {
    printf '%s %s %s\n' "$1" "$2" "$VERSION"
    cat Dockerfile .dockerignore
    context_files | tr '\n' '\0' | xargs -0 -r sha256sum
  } | sha256sum | cut -c1-32
}

# The CA bundle this machine's npm trusts (npm's cafile, else NODE_EXTRA_CA_CERTS), handed to the
# build as the Dockerfile's optional npm-ca secret: here the npm registry is reached through a
# TLS-inspecting proxy. Empty when the machine has none. Secrets never enter a layer.
npm_ca_file() {
  local f
  f=$(npm config get cafile 2>/dev/null || true)
  { [ -n "$f" ] && [ "$f" != null ] && [ -f "$f" ]; } || f=${NODE_EXTRA_CA_CERTS:-}
  if [ -n "$f" ] && [ -f "$f" ]; then echo "$f"; fi
}

build_target() { # target base-key
  local t=$1 ref="localhost/tpfleet/tpfleet-$1:dev" archive="$IMAGES_CACHE/tpfleet-$1.tar" want start old
  want=$(input_hash "$t" "$2")
  start=$SECONDS
  if [ "$(image_label "$ref" "$INPUTS_LABEL")" != "$want" ]; then
    old=$(image_id "$ref")
    if [ -f "$archive" ] && [ "$(cat "$archive.inputs" 2>/dev/null)" = "$want" ]; then
      log "restoring $ref from $archive"
      "${BUILDAH[@]}" pull --quiet "docker-archive:$archive" >/dev/null
    else
      log "building $ref (target $t)"
      local secret=() ca
      ca=$(npm_ca_file)
      [ -z "$ca" ] || secret=(--secret "id=npm-ca,src=$ca")
      # --layers: unchanged steps (apt, npm ci, the addon) come from buildah's layer cache.
      # --force-rm: no working container is left behind when a step fails.
      "${BUILDAH[@]}" bud --layers --force-rm --isolation chroot --target "$t" -f Dockerfile \
        --build-arg "NODE_IMAGE=$BASE_REF" --build-arg "VERSION=$VERSION" \
        "${secret[@]}" --label "$INPUTS_LABEL=$want" -t "$ref" . >&2
    fi
    # The image this one replaced, now untagged: removed with the layers only it used, so
    # storage does not grow by an image per source change. Fails harmlessly if still in use.
    if [ -n "$old" ] && [ "$old" != "$(image_id "$ref")" ]; then "${BUILDAH[@]}" rmi "$old" >/dev/null 2>&1 || true; fi
  fi
  if [ ! -f "$archive" ] || [ "$(cat "$archive.inputs" 2>/dev/null)" != "$want" ]; then
    rm -f "$archive" "$archive.inputs" "$archive.tmp"
    "${BUILDAH[@]}" push --quiet "$ref" "docker-archive:$archive.tmp:$ref" >/dev/null
    mv "$archive.tmp" "$archive"
    echo "$want" >"$archive.inputs"
  fi
  log "$ref ready ($((SECONDS - start)) s)"
  printf '%s\t%s\n' "$ref" "$archive"
}

main() {
  case ${1:-} in
    --context-files) context_files; return ;;
    --storage-driver) storage_driver; return ;; # so callers of buildah use the same store
  esac
  local targets=("$@") t base_key
  [ ${#targets[@]} -gt 0 ] || targets=(operator node)
  for t in "${targets[@]}"; do
    case $t in operator | node) ;; *) echo "usage: images/build.sh [operator|node ...] | --context-files | --storage-driver" >&2; exit 2 ;; esac
  done
  exec 9>"$IMAGES_CACHE/.build.lock"
  flock 9
  bash "$REPO_ROOT/images/base.sh" >/dev/null
  base_key=$(image_label "$BASE_REF" io.tpfleet.base-key)
  for t in "${targets[@]}"; do build_target "$t" "$base_key"; done
}

main "$@"
