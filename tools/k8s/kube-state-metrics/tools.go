//go:build tools

// Keeps k8s.io/kube-state-metrics/v2 in go.mod for `go build k8s.io/kube-state-metrics/v2`: the
// dashboard's replica panels read its kube_horizontalpodautoscaler_status_* series.
package tools

import _ "k8s.io/kube-state-metrics/v2"
