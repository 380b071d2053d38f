# Shared by gomod.sh and build.sh (sourced, not run). Keeps every Go download and build
# artefact under the tpfleet cache so reruns are instant and the repo stays clean.
TPFLEET_CACHE=${TPFLEET_CACHE:-$HOME/.cache/tpfleet}
export GOMODCACHE="$TPFLEET_CACHE/go/mod"
export GOCACHE="$TPFLEET_CACHE/go/build"
export GOPROXY=${GOPROXY:-https://proxy.golang.org,direct}
export CGO_ENABLED=0
export GOTOOLCHAIN=local
# -mod=readonly (the default): a go.mod/go.sum that does not match fails the build instead of
# being rewritten in the checkout; regenerate them with gomod.sh.
# Binary name -> main package. Add kube-controller-manager, kube-scheduler, kubelet, ... here
# (and to go.mod through gomod.sh); build.sh builds only the names it is asked for. etcd comes
# from the same module graph, at the version this Kubernetes release requires (v3.7.x for 1.37),
# so the pair is always one upstream tested together (Debian's etcd 3.4 is too old for it).
# kwok and helm live in their own modules with their own k8s.io pins: give each a sibling tools
# module (tools/k8s/<name>/go.mod) rather than forcing them into this graph.
declare -A TOOL_PKG=(
  [kube-apiserver]=k8s.io/kubernetes/cmd/kube-apiserver
  [kube-controller-manager]=k8s.io/kubernetes/cmd/kube-controller-manager
  [kube-scheduler]=k8s.io/kubernetes/cmd/kube-scheduler
  [kubelet]=k8s.io/kubernetes/cmd/kubelet
  [kubectl]=k8s.io/kubernetes/cmd/kubectl
  [kubeadm]=k8s.io/kubernetes/cmd/kubeadm
  [kube-proxy]=k8s.io/kubernetes/cmd/kube-proxy
  [etcd]=go.etcd.io/etcd/server/v3
)
TOOL_PACKAGES=("${TOOL_PKG[@]}")
