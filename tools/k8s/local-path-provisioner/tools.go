//go:build tools

// Keeps github.com/rancher/local-path-provisioner in go.mod for `go build github.com/rancher/local-path-provisioner`.
package tools

import _ "github.com/rancher/local-path-provisioner"
