# Shared by gomod.sh and build.sh (sourced, not run). Keeps every Go download and build
# artefact under the tpfleet cache so reruns are instant and the repo stays clean.
TPFLEET_CACHE=${TPFLEET_CACHE:-$HOME/.cache/tpfleet}
export GOMODCACHE="$TPFLEET_CACHE/go/mod"
export GOCACHE="$TPFLEET_CACHE/go/build"
export GOPROXY=${GOPROXY:-https://proxy.golang.org,direct}
export GOFLAGS=-mod=mod
export CGO_ENABLED=0
export GOTOOLCHAIN=local
# Binary name -> main package. Add kube-controller-manager, kube-scheduler, kubelet, ... here
# (and to go.mod through gomod.sh); build.sh builds only the names it is asked for.
declare -A TOOL_PKG=(
  [kube-apiserver]=k8s.io/kubernetes/cmd/kube-apiserver
  [kube-controller-manager]=k8s.io/kubernetes/cmd/kube-controller-manager
  [kube-scheduler]=k8s.io/kubernetes/cmd/kube-scheduler
  [kubelet]=k8s.io/kubernetes/cmd/kubelet
  [etcd]=go.etcd.io/etcd/server/v3
)
TOOL_PACKAGES=("${TOOL_PKG[@]}")
