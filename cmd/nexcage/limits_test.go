package main

import (
	"runtime/debug"
	"testing"
)

// The soft memory limit is what keeps build --jobs under the 150 MiB
// goal; GOMEMLIMIT and GOGC from the environment still win.
func TestSetRuntimeLimits(t *testing.T) {
	oldLimit, oldGC := debug.SetMemoryLimit(-1), debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetMemoryLimit(oldLimit); debug.SetGCPercent(oldGC) })

	t.Setenv("GOMEMLIMIT", "")
	t.Setenv("GOGC", "")
	setRuntimeLimits()
	if got := debug.SetMemoryLimit(-1); got != memoryLimit {
		t.Errorf("memory limit %d, want %d", got, memoryLimit)
	}
	if got := debug.SetGCPercent(100); got != 50 {
		t.Errorf("GC percent %d, want 50", got)
	}

	debug.SetMemoryLimit(1 << 40)
	t.Setenv("GOMEMLIMIT", "1TiB")
	t.Setenv("GOGC", "100")
	setRuntimeLimits()
	if got := debug.SetMemoryLimit(-1); got != 1<<40 {
		t.Errorf("GOMEMLIMIT set: the limit became %d", got)
	}
	if got := debug.SetGCPercent(100); got != 100 {
		t.Errorf("GOGC set: GC percent became %d", got)
	}
}
