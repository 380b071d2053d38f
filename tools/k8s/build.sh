#!/usr/bin/env bash
# Builds the real Kubernetes binaries the tests run, from the Go modules pinned in go.mod,
# into $TPFLEET_CACHE/k8s-<version>/bin. Usage: build.sh [name ...] (default: kube-apiserver etcd).
# Prints the bin directory on stdout. Already-built binaries are reused, so reruns are instant;
# GOCACHE/GOMODCACHE live under the same cache, so adding a binary later only compiles what is new.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"
# shellcheck source=env.sh
source "$here/env.sh"
bin="$TPFLEET_CACHE/k8s-$K8S_VERSION/bin"
mkdir -p "$bin"
[ $# -gt 0 ] || set -- kube-apiserver etcd
command -v go >/dev/null || { echo "build.sh: go is not installed (need Go >= $(sed -n 's/^go //p' "$here/go.mod"))" >&2; exit 1; }

# One build of each binary at a time: a test file that needs a binary another process is building
# waits for that build, then finds it present. The lock is per binary, not per cache, so a build
# running in the background at idle priority (e2e/testenv/prebuild.ts) never holds up a test that
# needs another binary. Go's build and module caches are safe to share between concurrent builds.
lock() { exec 9>"$bin/.lock-$1"; flock 9; }
unlock() { exec 9>&-; }
# Module builds carry no version stamp (upstream's Makefile injects it), so /version would say
# v0.0.0-master. Stamp the release like hack/lib/version.sh does; etcd ignores these symbols.
version_ldflags() {
  local minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
  local p
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    printf -- '-X %s.gitVersion=%s -X %s.gitMajor=1 -X %s.gitMinor=%s -X %s.gitTreeState=clean ' \
      "$p" "$K8S_VERSION" "$p" "$p" "$minor" "$p"
  done
}

# Sibling tools modules (tools/k8s/<name>/go.mod + a one-line `package` file naming the main
# package) carry their own k8s.io pins (kwok, helm, the custom-metrics adapter). Their binary is
# rebuilt when that go.mod changes (stamp <name>.gomod beside it), so a version bump is picked up.
# A tool with a `module` file (one word: another sibling's directory) builds from that module:
# containerd's shim and ctr share containerd's go.mod, with no copy to keep in step.
# An optional `tags` file (one line of comma-separated Go build tags) trims what a tool compiles
# in: Prometheus keeps only Kubernetes service discovery (remove_all_sd,enable_kubernetes_sd).
build_sibling() {
  local name=$1 dir="$here/$1" pkg tags=""
  pkg=$(tr -d '[:space:]' <"$dir/package")
  if [ -f "$dir/tags" ]; then tags=$(tr -d '[:space:]' <"$dir/tags"); fi
  if [ -f "$dir/module" ]; then dir="$here/$(tr -d '[:space:]' <"$dir/module")"; fi
  # The stamp is go.mod plus the tags line (only when there are tags, so the stamps of the
  # tag-less tools stay as they were), so changing either rebuilds.
  stamp() { cat "$dir/go.mod"; if [ -n "$tags" ]; then echo "tags=$tags"; fi; }
  if [ -x "$bin/$name" ] && cmp -s <(stamp) "$bin/$name.gomod"; then return 0; fi
  echo "build.sh: building $name ($pkg, module tools/k8s/$name) into $bin" >&2
  local start=$SECONDS
  (cd "$dir" && go build -trimpath -tags="$tags" -ldflags="-s -w" -o "$bin/.$name.tmp" "$pkg")
  mv "$bin/.$name.tmp" "$bin/$name"
  stamp >"$bin/$name.gomod"
  echo "build.sh: built $name in $((SECONDS - start))s" >&2
}

cd "$here"
for name in "$@"; do
  if [ -f "$here/$name/package" ] && { [ -f "$here/$name/go.mod" ] || [ -f "$here/$name/module" ]; }; then
    lock "$name"; build_sibling "$name"; unlock; continue
  fi
  pkg=${TOOL_PKG[$name]:-}
  [ -n "$pkg" ] || { echo "build.sh: unknown binary '$name' (known: ${!TOOL_PKG[*]} and tools/k8s/*/package)" >&2; exit 2; }
  lock "$name"
  if [ -x "$bin/$name" ]; then unlock; continue; fi
  echo "build.sh: building $name ($pkg, k8s $K8S_VERSION) into $bin" >&2
  start=$SECONDS
  # -trimpath and -s -w keep the binaries small and the cache reproducible; CGO is off (env.sh)
  # so no C toolchain is needed. Write to a temp name first: an interrupted build never leaves
  # a half-written binary that the next run would trust.
  go build -trimpath -ldflags="-s -w $(version_ldflags)" -o "$bin/.$name.tmp" "$pkg"
  mv "$bin/.$name.tmp" "$bin/$name"
  echo "build.sh: built $name in $((SECONDS - start))s" >&2
  unlock
done
echo "$bin"
