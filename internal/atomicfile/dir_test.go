package atomicfile

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDirCommitsWholeTree: a tree appears at its target only when
// committed, mode 0700, with its missing parents made.
func TestDirCommitsWholeTree(t *testing.T) {
	target := filepath.Join(t.TempDir(), "a", "b", "bundle")
	d, err := NewDir(target, false)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Create(); err != nil {
		t.Fatal(err)
	}
	if !IsTemp(d.Path) || filepath.Dir(d.Path) != filepath.Dir(target) {
		t.Fatalf("temporary tree %s is not a marked name beside %s", d.Path, target)
	}
	if fi, err := os.Stat(d.Path); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("temporary tree: %v, mode %v; want 0700", err, fi.Mode())
	}
	os.WriteFile(filepath.Join(d.Path, "config.json"), []byte("{}"), 0o644)
	if _, err := os.Lstat(target); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("target exists before Commit: %v", err)
	}
	if err := d.Commit(); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(target, "config.json")); err != nil || string(b) != "{}" {
		t.Fatalf("committed tree: %q, %v", b, err)
	}
	if err := d.Abort(errors.New("late")); err == nil || !dirExists(target) {
		t.Fatal("Abort after Commit removed the tree or dropped the error")
	}
	assertOnly(t, filepath.Dir(target), "bundle")
}

// TestDirAbortRemovesEverything: a failure leaves neither the temporary
// tree nor the parents Create made, and the error names the target.
func TestDirAbortRemovesEverything(t *testing.T) {
	root := t.TempDir()
	target := filepath.Join(root, "new", "bundle")
	d, err := NewDir(target, false)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Create(); err != nil {
		t.Fatal(err)
	}
	// A read-only directory in the tree, as a rootless rootfs holds.
	ro := filepath.Join(d.Path, "rootfs", "proc")
	os.MkdirAll(filepath.Join(ro, "x"), 0o755)
	os.Chmod(ro, 0o555)
	err = d.Abort(&os.PathError{Op: "write", Path: filepath.Join(d.Path, "rootfs", "f"), Err: os.ErrPermission})
	if want := "write " + filepath.Join(target, "rootfs", "f"); err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("error %v, want it to start %q", err, want)
	}
	if !errors.Is(err, os.ErrPermission) {
		t.Errorf("errors.Is(%v, ErrPermission) is false after Abort", err)
	}
	assertOnly(t, root)
}

// TestDirRefusesExistingWithoutForce: a non-empty directory or a file at
// the target is refused (ErrExists) and left alone; Force replaces a
// directory whole, an empty one needs no Force.
func TestDirRefusesExistingWithoutForce(t *testing.T) {
	root := t.TempDir()
	full := filepath.Join(root, "full")
	os.MkdirAll(filepath.Join(full, "sub"), 0o755)
	os.WriteFile(filepath.Join(full, "old"), []byte("old"), 0o644)
	file := filepath.Join(root, "file")
	os.WriteFile(file, []byte("x"), 0o644)
	for _, target := range []string{full, file} {
		if _, err := NewDir(target, false); !errors.Is(err, ErrExists) || !strings.Contains(err.Error(), target) {
			t.Errorf("NewDir(%s): %v, want ErrExists naming it", target, err)
		}
	}
	if _, err := NewDir(file, true); !errors.Is(err, ErrExists) {
		t.Errorf("NewDir(file, force): %v, want ErrExists: a file is never replaced", err)
	}
	empty := filepath.Join(root, "empty")
	os.Mkdir(empty, 0o755)
	if _, err := NewDir(empty, false); err != nil {
		t.Errorf("empty directory refused: %v", err)
	}

	d, err := NewDir(full, true)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Create(); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(d.Path, "new"), []byte("new"), 0o644)
	if err := d.Commit(); err != nil {
		t.Fatal(err)
	}
	assertOnly(t, full, "new")
	assertOnly(t, root, "empty", "file", "full")
}

// TestDirCrashLeavesMarkedTree: a process killed while filling the tree
// leaves only a name carrying TempMarker, which check --repair removes;
// the target is untouched.
func TestDirCrashLeavesMarkedTree(t *testing.T) {
	root := t.TempDir()
	target := filepath.Join(root, "bundle")
	d, err := NewDir(target, false)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Create(); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(d.Path, "half"), nil, 0o644)
	// No Commit, no Abort: what a SIGKILL leaves.
	entries, _ := os.ReadDir(root)
	if len(entries) != 1 || !IsTemp(entries[0].Name()) || !strings.Contains(entries[0].Name(), "bundle") {
		t.Fatalf("after a crash the directory holds %v, want one marked name for bundle", entries)
	}
	if dirExists(target) {
		t.Error("a crash left a partial target")
	}
}

func dirExists(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}

// TestDirCleanupOnlyOnFailure: the deferred Cleanup removes the tree
// when the function fails and leaves a committed one alone.
func TestDirCleanupOnlyOnFailure(t *testing.T) {
	root := t.TempDir()
	build := func(name string, fail bool) (err error) {
		d, err := NewDir(filepath.Join(root, name), false)
		if err != nil {
			return err
		}
		if err := d.Create(); err != nil {
			return err
		}
		defer d.Cleanup(&err)
		os.WriteFile(filepath.Join(d.Path, "f"), nil, 0o644)
		if fail {
			return errors.New("failed in " + d.Path)
		}
		return d.Commit()
	}
	if err := build("bad", true); err == nil || err.Error() != "failed in "+filepath.Join(root, "bad") {
		t.Errorf("error %v, want it to name the target", err)
	}
	if err := build("good", false); err != nil {
		t.Fatal(err)
	}
	assertOnly(t, root, "good")
}
