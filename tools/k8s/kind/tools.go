//go:build tools

// Keeps sigs.k8s.io/kind in go.mod for `go build sigs.k8s.io/kind`.
package tools

import _ "sigs.k8s.io/kind"
