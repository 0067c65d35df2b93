//go:build !unix

package baseline

import "time"

// CPUTime is not measured on this platform: always 0.
func CPUTime() time.Duration { return 0 }

// PageFaults is not counted on this platform.
func PageFaults() int64 { return 0 }

// FaultCost is not measured on this platform: always 0.
func FaultCost() float64 { return 0 }
