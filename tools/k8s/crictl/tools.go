//go:build tools

// Keeps sigs.k8s.io/cri-tools in go.mod for `go build sigs.k8s.io/cri-tools/cmd/crictl`.
package tools

import _ "sigs.k8s.io/cri-tools/cmd/crictl"
