//go:build tools

// Keeps github.com/prometheus/prometheus in go.mod for `go build github.com/prometheus/prometheus/cmd/prometheus`.
package tools

import _ "github.com/prometheus/prometheus/cmd/prometheus"
