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

// PageFaults is the number of minor page faults (a page touched for the
// first time, or again after the runtime gave it back) this process has
// taken. On some virtual machines each costs microseconds, enough to
// dominate a benchmark whose heap grows.
func PageFaults() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Minflt
}

// FaultCost is what one first touch of a fresh page costs this machine,
// in microseconds: the mean over touching 16 MiB of newly mapped memory.
// Bare metal pays well under a microsecond; a virtual machine whose host
// backs guest memory lazily can pay ten times that, and then a benchmark
// whose heap grows measures the host as much as the code.
func FaultCost() float64 {
	const size = 16 << 20
	page := syscall.Getpagesize()
	b, err := syscall.Mmap(-1, 0, size, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		return 0
	}
	defer syscall.Munmap(b)
	start := time.Now()
	for i := 0; i < size; i += page {
		b[i] = 1
	}
	return float64(time.Since(start).Nanoseconds()) / 1e3 / float64(size/page)
}
