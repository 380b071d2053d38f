//go:build tools

// Keeps sigs.k8s.io/kwok in go.mod for `go build sigs.k8s.io/kwok/cmd/kwok`.
package tools

import _ "sigs.k8s.io/kwok/cmd/kwok"
