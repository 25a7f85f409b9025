//go:build race

package testenv

// RaceEnabled says the race detector is on: code runs 5 to 20 times
// slower, and time bounds must allow for it.
const RaceEnabled = true
