//go:build race

package main

// raceEnabled: the race detector is on (the processes a test runs are this
// binary, so they carry its shadow memory too).
const raceEnabled = true
