package testenv

import (
	"fmt"
	"testing"
	"time"
)

// FuzzInputTime is the most one fuzz input may take: far above what any
// body needs on a small input, far below what would stall the fuzzer.
// Under the race detector (make test runs the seeds so) it is ten times
// that.
var FuzzInputTime = Slowdown(time.Second)

// Slowdown scales a time bound for the race detector.
func Slowdown(d time.Duration) time.Duration {
	if RaceEnabled {
		return 10 * d
	}
	return d
}

// Timed bounds one fuzz input's run: call it first in the body as
// defer testenv.Timed(t)(). An input slower than FuzzInputTime fails, so
// the fuzzer records it as a seed to fix instead of silently crawling at
// a few executions a second; one that never ends crashes the worker after
// 30 times that, which the fuzzer records too.
func Timed(t testing.TB) func() {
	start := time.Now()
	watchdog := time.AfterFunc(30*FuzzInputTime, func() {
		panic(fmt.Sprintf("one fuzz input has run for %s: the code under test has a blow-up", 30*FuzzInputTime))
	})
	return func() {
		watchdog.Stop()
		if took := time.Since(start); took > FuzzInputTime {
			t.Fatalf("this input took %s, more than %s: unbounded work on a small input", took.Round(time.Millisecond), FuzzInputTime)
		}
	}
}

// Refused reports whether the code under test refused a fuzz input
// (err is not nil), and fails the test when the refusal has no message:
// whoever wrote the input is told why it was refused.
func Refused(t testing.TB, err error) bool {
	t.Helper()
	if err != nil && err.Error() == "" {
		t.Fatal("empty error message")
	}
	return err != nil
}
