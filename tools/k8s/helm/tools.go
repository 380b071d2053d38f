//go:build tools

// Keeps helm.sh/helm/v4 in go.mod for `go build helm.sh/helm/v4/cmd/helm`.
package tools

import _ "helm.sh/helm/v4/cmd/helm"
