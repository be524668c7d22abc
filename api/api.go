// Package api holds mercato's contracts: the protobuf messages and RPC services
// that bounded contexts use to talk to each other. The .proto files live under
// api/<context>/v1 and the generated Go code under api/gen.
//
// Services import only api/gen, never each other.
package api

//go:generate sh -c "cd .. && go tool buf generate"
