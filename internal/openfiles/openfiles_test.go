package openfiles

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// A file another process holds open is in use, and so is its directory;
// a file nobody holds is not.
func TestInUse(t *testing.T) {
	if _, err := os.Stat("/proc/self/fd"); err != nil {
		t.Skip("no /proc: the scan is Linux's")
	}
	dir := t.TempDir()
	held := filepath.Join(dir, "held")
	free := filepath.Join(dir, "free")
	for _, p := range []string{held, free} {
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// Our own descriptors do not count (the scan skips this process), so
	// another process holds the file: sleep with it as stdin.
	f, err := os.Open(held)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command("sleep", "30")
	cmd.Stdin = f
	if err := cmd.Start(); err != nil {
		t.Skip("cannot start sleep:", err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	var s Set
	if !s.InUse(held) {
		t.Errorf("%s is held open by pid %d but not reported in use", held, cmd.Process.Pid)
	}
	if !s.InUse(dir) {
		t.Errorf("%s holds an open file but is not reported in use", dir)
	}
	if s.InUse(free) {
		t.Errorf("%s is open nowhere but reported in use", free)
	}
}
