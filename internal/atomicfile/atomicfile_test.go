package atomicfile

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestWriteFileReplacesWhole(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "out")
	if err := os.WriteFile(target, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(target, []byte("new"), 0o600); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(target)
	fi, _ := os.Stat(target)
	if string(b) != "new" || fi.Mode().Perm() != 0o600 {
		t.Fatalf("target = %q mode %v, want \"new\" 0600", b, fi.Mode())
	}
	assertOnly(t, dir, "out")
}

func TestAbortKeepsOldFile(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "out")
	os.WriteFile(target, []byte("good"), 0o644)
	f, err := Create(target, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	f.Write([]byte("half"))
	if !IsTemp(f.Name()) {
		t.Fatalf("temporary name %s is not recognisable as one", f.Name())
	}
	f.Abort()
	f.Abort() // deferred aborts after an explicit one are harmless
	if b, _ := os.ReadFile(target); string(b) != "good" {
		t.Fatalf("aborted write changed the target to %q", b)
	}
	assertOnly(t, dir, "out")
	if err := f.Commit(); err == nil {
		t.Fatal("Commit after Abort succeeded")
	}
}

func assertOnly(t *testing.T, dir string, names ...string) {
	t.Helper()
	entries, _ := os.ReadDir(dir)
	var got []string
	for _, e := range entries {
		got = append(got, e.Name())
	}
	if strings.Join(got, " ") != strings.Join(names, " ") {
		t.Fatalf("%s holds %v, want only %v", dir, got, names)
	}
}
