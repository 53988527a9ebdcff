//go:build unix && !linux

package testserver

import "syscall"

// sysProcAttr runs a server as the account.
func sysProcAttr(a account) *syscall.SysProcAttr {
	if !a.set {
		return nil
	}
	return &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: a.uid, Gid: a.gid}}
}

// killTree SIGKILLs a server and reaps it. Here, unlike on Linux, the
// children of a killed postmaster are left to notice its death and exit on
// their own, which they do within milliseconds.
func killTree(p *process) { p.kill() }

// childrenOf returns nil: there is no /proc to read here.
func childrenOf(int) []int { return nil }
