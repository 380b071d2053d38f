//go:build tools

// Keeps sigs.k8s.io/custom-metrics-apiserver in go.mod for
// `go build sigs.k8s.io/custom-metrics-apiserver/test-adapter`.
package tools

import _ "sigs.k8s.io/custom-metrics-apiserver/test-adapter"
