//go:build !unix

package h1

import "net"

// alive cannot probe a connection here; a request on a closed one fails
// as it would with http.Transport.
func alive(net.Conn) bool { return true }
