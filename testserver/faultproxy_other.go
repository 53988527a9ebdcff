//go:build !linux

package testserver

import "net"

// relistenFunc returns nil: only Linux is known to drop SYNs while a
// re-listened socket's accept queue is full.
func relistenFunc(*net.TCPListener) func(int) error { return nil }
