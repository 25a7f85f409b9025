package testenv

import (
	"flag"
	"fmt"
	"os"
	"sync"
	"testing"

	"go.uber.org/goleak"
)

// Main runs a package's tests with a temporary directory of their own and
// fails the run if anything is left in it afterwards (a test binary, a
// spill file, a half-written bundle) or if a goroutine outlives the tests.
// Every package's TestMain calls it, so no test run leaves files behind in
// the machine's TMPDIR.
func Main(m *testing.M) { os.Exit(RunMain(m)) }

// RunMain is Main for a TestMain that must do more around the run (one
// that hands m to testscript); it returns the exit code.
func RunMain(m interface{ Run() int }) int {
	tmp, err := os.MkdirTemp("", "nexcage-tests-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "testenv:", err)
		return 1
	}
	// Like /tmp: tests run commands as other users, who write here too.
	if err := os.Chmod(tmp, 0o1777); err != nil {
		fmt.Fprintln(os.Stderr, "testenv:", err)
		return 1
	}
	defer os.RemoveAll(tmp)
	os.Setenv("TMPDIR", tmp)
	shortMinimise()

	code := m.Run()
	for _, cleanup := range mainCleanups {
		cleanup()
	}
	if code != 0 {
		return code
	}
	if err := goleak.Find(); err != nil {
		fmt.Fprintf(os.Stderr, "goroutines leaked: %v\n", err)
		return 1
	}
	left, _ := os.ReadDir(tmp)
	for _, e := range left {
		fmt.Fprintf(os.Stderr, "temporary file left behind by the tests: %s\n", e.Name())
		code = 1
	}
	return code
}

var (
	mainCleanupsMu sync.Mutex
	mainCleanups   []func()
)

// AtExit registers f to run once all of the package's tests have ended,
// before Main checks the temporary directory: for what tests share for the
// whole run (a binary built once).
func AtExit(f func()) {
	mainCleanupsMu.Lock()
	defer mainCleanupsMu.Unlock()
	mainCleanups = append(mainCleanups, f)
}

// shortMinimise caps how long the fuzzer minimises each new input at a
// second, unless -fuzzminimizetime says otherwise. Its default, a minute
// per input during which no execution is counted, made a 60 s run of
// FuzzFlatten (inputs are tar streams of a few KiB) spend it all
// minimising the first inputs it found: 0 execs/s, nothing explored.
func shortMinimise() {
	if !flag.Parsed() {
		flag.Parse()
	}
	fuzz := flag.Lookup("test.fuzz")
	if fuzz == nil || fuzz.Value.String() == "" {
		return
	}
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == "test.fuzzminimizetime" })
	if !set {
		flag.Set("test.fuzzminimizetime", "1s")
	}
}
