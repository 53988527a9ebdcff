//go:build linux

package testserver

import (
	"bytes"
	"os"
	"strconv"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// sysProcAttr runs a server as the account, and kills it if this process
// dies without stopping it (a test binary killed by -timeout, say), so no
// server outlives its test run.
func sysProcAttr(a account) *syscall.SysProcAttr {
	attr := &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if a.set {
		attr.Credential = &syscall.Credential{Uid: a.uid, Gid: a.gid}
	}
	return attr
}

// subreaperMu serializes killTree, which toggles a process-wide attribute.
var subreaperMu sync.Mutex

// killTree SIGKILLs a server and every process it started, and reaps them
// all, so a killed postmaster leaves neither running backends (which would
// keep its shared memory in use and stop a restart) nor zombies.
//
// Children of a killed process are normally re-parented to PID 1, which in
// many containers never reaps them. For the duration of the kill this process
// becomes a child subreaper, so the orphans are re-parented to it and can be
// reaped by PID. The postmaster is stopped first so that the set of its
// children cannot change while it is read.
func killTree(p *process) {
	if p.exited() {
		return
	}
	subreaperMu.Lock()
	defer subreaperMu.Unlock()

	var on int32
	if _, _, errno := syscall.Syscall(syscall.SYS_PRCTL, unix.PR_GET_CHILD_SUBREAPER, uintptr(unsafe.Pointer(&on)), 0); errno == 0 && on == 0 {
		if unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == nil {
			defer unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
		}
	}
	var children []int
	if p.signal(syscall.SIGSTOP) == nil {
		children = childrenOf(p.pid())
	}
	p.kill()
	for _, pid := range children {
		_ = syscall.Kill(pid, syscall.SIGKILL)
		for {
			// ECHILD means it went to another reaper; nothing to do then.
			if _, err := syscall.Wait4(pid, nil, 0, nil); err != syscall.EINTR {
				break
			}
		}
	}
}

// childrenOf lists the processes whose parent is ppid, from /proc.
func childrenOf(ppid int) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// The format is "pid (comm) state ppid ...", and comm may hold
		// spaces and parentheses, so parse from the last ')'.
		i := bytes.LastIndexByte(stat, ')')
		if i < 0 {
			continue
		}
		fields := bytes.Fields(stat[i+1:])
		if len(fields) < 2 {
			continue
		}
		if parent, err := strconv.Atoi(string(fields[1])); err == nil && parent == ppid {
			pids = append(pids, pid)
		}
	}
	return pids
}
