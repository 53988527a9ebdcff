//go:build unix

package cache

import (
	"syscall"
	"time"
)

// cpuTime is the CPU time (user and system) this process has used. The
// benchmarks report it per operation: on a shared machine it is steadier
// than wall time, and it is what the cache costs its host.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
