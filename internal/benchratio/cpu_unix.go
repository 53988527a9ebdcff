//go:build unix

package benchratio

import (
	"syscall"
	"time"
)

// CPUTime is the CPU time (user and system) this process has used, or 0
// where it cannot be read. On a shared machine it is steadier than wall
// time, and it is what the code measured costs its host.
func CPUTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
