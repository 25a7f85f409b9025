package testenv

import (
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// CheckLeaks fails the test if, when it ends, the process has more open
// file descriptors than now, or anything is left in the temporary
// directory: every success and failure path must close what it opened and
// remove what it created. The test gets a TMPDIR of its own, so other
// packages' tests running at the same time do not count. Call it first
// thing in a test; not for parallel tests.
func CheckLeaks(t *testing.T) {
	t.Helper()
	tmp, err := os.MkdirTemp("", "leakcheck-")
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("TMPDIR", tmp)
	// The runtime opens its network poller's descriptors on first use and
	// keeps them: open them now so they are not counted as a leak.
	if l, err := net.Listen("tcp", "127.0.0.1:0"); err == nil {
		l.Close()
	}
	fds, temps := openFDs(t), nexcageTemps()
	t.Cleanup(func() {
		if now := openFDs(t); now > fds {
			t.Errorf("%d file descriptor(s) leaked (%d open before, %d after)", now-fds, fds, now)
		}
		for _, d := range nexcageTemps() {
			if !slices.Contains(temps, d) {
				t.Errorf("temporary file left behind: %s", d)
			}
		}
		os.RemoveAll(tmp)
	})
}

func openFDs(t testing.TB) int {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("cannot count open files without /proc: %v", err)
	}
	return len(entries)
}

// nexcageTemps lists the temporary directory, minus the directories of
// the test framework itself (t.TempDir).
func nexcageTemps() []string {
	entries, _ := os.ReadDir(os.TempDir())
	var out []string
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), "Test") {
			out = append(out, filepath.Join(os.TempDir(), e.Name()))
		}
	}
	return out
}
