//go:build unix

package baseline

import (
	"syscall"
	"time"
)

// CPUTime is the CPU time (user and system, all threads) this process has
// used: beside wall time, what a benchmark cost when the machine is shared
// and the process waited for a core.
func CPUTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
