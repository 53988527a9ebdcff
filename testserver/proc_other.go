//go:build !unix

package testserver

import "syscall"

// sysProcAttr returns nil: running as another user is not supported here.
func sysProcAttr(account) *syscall.SysProcAttr { return nil }

// killTree kills a server and reaps it.
func killTree(p *process) { p.kill() }

// childrenOf returns nil: there is no /proc to read here.
func childrenOf(int) []int { return nil }
