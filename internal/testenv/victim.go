package testenv

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// VictimDir makes, in a fresh temporary directory P, a directory P/name
// with a mode and time no unpacker would give (sticky 0700, mtime 2001)
// holding a file, and fails the test at its end if any of it changed: the
// directory's mode or mtime, the file's content or existence. It returns P,
// the host directory a hostile image points its symlinks at.
func VictimDir(t testing.TB, name string) string {
	t.Helper()
	parent := t.TempDir()
	dir := filepath.Join(parent, name)
	f := filepath.Join(dir, "host-file")
	mtime := time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC)
	mode := os.ModeDir | os.ModeSticky | 0o700
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f, []byte("host content\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(dir, mtime, mtime); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		fi, err := os.Lstat(dir)
		if err != nil {
			t.Errorf("host directory %s: %v", dir, err)
			return
		}
		if fi.Mode() != mode {
			t.Errorf("host directory %s: mode %v, was %v", dir, fi.Mode(), mode)
		}
		if !fi.ModTime().Equal(mtime) {
			t.Errorf("host directory %s: mtime %v, was %v", dir, fi.ModTime(), mtime)
		}
		if b, err := os.ReadFile(f); err != nil || string(b) != "host content\n" {
			t.Errorf("host file %s: %q, %v", f, b, err)
		}
	})
	return parent
}

// VictimFile writes a host file with content and fails the test at its
// end unless it is still there, unchanged.
func VictimFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if b, err := os.ReadFile(path); err != nil || string(b) != content {
			t.Errorf("host file %s: %q, %v; want it unchanged", path, b, err)
		}
	})
}
