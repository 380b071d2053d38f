//go:build tools

// Keeps github.com/kedacore/keda/v2 in go.mod for `go build github.com/kedacore/keda/v2/cmd/operator`.
package tools

import (
	_ "github.com/kedacore/keda/v2/cmd/adapter"
	_ "github.com/kedacore/keda/v2/cmd/operator"
)
