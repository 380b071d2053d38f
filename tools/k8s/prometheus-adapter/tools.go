//go:build tools

// Keeps sigs.k8s.io/prometheus-adapter in go.mod for `go build sigs.k8s.io/prometheus-adapter/cmd/adapter`.
package tools

import _ "sigs.k8s.io/prometheus-adapter/cmd/adapter"
