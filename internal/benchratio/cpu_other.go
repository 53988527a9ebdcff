//go:build !unix

package benchratio

import "time"

// CPUTime is the CPU time this process has used: 0 here, where it is not
// read.
func CPUTime() time.Duration { return 0 }
