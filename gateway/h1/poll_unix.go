//go:build unix

package h1

import (
	"errors"
	"net"
	"syscall"
)

// rawConn is nc's file descriptor access, nil when it has none.
func rawConn(nc net.Conn) syscall.RawConn {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return nil
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return raw
}

// alive reports whether an idle connection is still open at the other
// end: a peek that would block finds no EOF and no stray bytes waiting.
func alive(raw syscall.RawConn) bool {
	if raw == nil {
		return true
	}
	open := false
	var buf [1]byte
	err := raw.Read(func(fd uintptr) bool {
		_, _, err := syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		open = errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EWOULDBLOCK)
		return true // never wait: this is a probe
	})
	return err == nil && open
}
