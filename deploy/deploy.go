// Package deploy holds deployment files (gateway routes, manifests) and
// builds the defaults into the binary, so that `mercato up` needs no files
// beside it.
package deploy

import "embed"

//go:embed gateway/*.yaml
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
