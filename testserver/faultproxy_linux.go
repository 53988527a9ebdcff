package testserver

import (
	"net"
	"syscall"
)

// relistenFunc changes ln's backlog by calling listen(2) again on its
// socket, which Linux allows on a listening socket.
func relistenFunc(ln *net.TCPListener) func(int) error {
	raw, err := ln.SyscallConn()
	if err != nil {
		return nil
	}
	return func(backlog int) error {
		var lerr error
		if err := raw.Control(func(fd uintptr) { lerr = syscall.Listen(int(fd), backlog) }); err != nil {
			return err
		}
		return lerr
	}
}
