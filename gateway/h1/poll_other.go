//go:build !unix

package h1

import (
	"net"
	"syscall"
)

func rawConn(net.Conn) syscall.RawConn { return nil }

// alive cannot probe a connection here; a request on a closed one fails
// as it would with http.Transport.
func alive(syscall.RawConn) bool { return true }
