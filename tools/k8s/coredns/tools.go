//go:build tools

// Keeps github.com/coredns/coredns in go.mod for `go build github.com/coredns/coredns`.
package tools

import _ "github.com/coredns/coredns"
