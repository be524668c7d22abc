// Package deploy holds deployment files (gateway routes, resilience
// policies, manifests) and builds the defaults into the binary, so that
// `mercato up` needs no files beside it.
package deploy

import "embed"

//go:embed gateway/*.yaml resilience.yaml
var files embed.FS

// GatewayRoutes returns the gateway's default route file.
func GatewayRoutes() []byte {
	b, err := files.ReadFile("gateway/routes.yaml")
	if err != nil {
		// The file is embedded at build time; reading it cannot fail.
		panic(err)
	}
	return b
}

// Resilience returns the default resilience policies of calls between
// services and to the payment provider (platform/resilience).
func Resilience() []byte {
	b, err := files.ReadFile("resilience.yaml")
	if err != nil {
		// The file is embedded at build time; reading it cannot fail.
		panic(err)
	}
	return b
}
