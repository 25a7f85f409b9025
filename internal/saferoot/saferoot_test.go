package saferoot

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// mapLookup is a tree given as path -> "dir", "file" or "-> target".
func mapLookup(m map[string]string) Lookup {
	return func(p string) (Kind, string, error) {
		v, ok := m[p]
		switch {
		case !ok:
			return Missing, "", nil
		case v == "dir":
			return Dir, "", nil
		case strings.HasPrefix(v, "-> "):
			return Symlink, v[3:], nil
		}
		return Other, "", nil
	}
}

func TestResolve(t *testing.T) {
	tree := mapLookup(map[string]string{
		"etc":        "dir",
		"etc/passwd": "-> /etc/real",
		"etc/real":   "file",
		"var":        "dir",
		"var/run":    "-> ../run",
		"run":        "dir",
		"up":         "-> ../../host",
		"abs":        "-> /tmp",
		"loop":       "-> loop",
		"gone":       "-> nonexist/../../x",
	})
	for _, tc := range []struct {
		in, want string
		clamp    bool
		err      error
	}{
		{in: "etc/passwd", want: "etc/real"},
		{in: "/var/run/x", want: "run/x"},
		{in: "abs/y", want: "tmp/y"}, // absolute: from the root, not the host
		{in: "up", err: ErrEscape},   // climbs above the root
		{in: "up/z", want: "host/z", clamp: true},
		{in: "gone", err: ErrEscape}, // ".." past a missing directory still counts
		{in: "loop", err: ErrLoop},
		{in: "new/../etc/passwd", want: "etc/real"}, // lookups resume after ".." leaves the missing part
		{in: ".", want: "."},
	} {
		var missing []string
		got, err := Resolve(tc.in, tree, Options{Clamp: tc.clamp, Missing: func(p string) error { missing = append(missing, p); return nil }})
		if tc.err != nil {
			if !errors.Is(err, tc.err) {
				t.Errorf("Resolve(%q) = %q, %v; want %v", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("Resolve(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
		if tc.in == "new/../etc/passwd" && len(missing) != 0 {
			t.Errorf("Resolve(%q) reported %v missing, though the result has no missing part", tc.in, missing)
		}
	}
	var missing []string
	if got, err := Resolve("abs/a/b", tree, Options{Missing: func(p string) error { missing = append(missing, p); return nil }}); err != nil || got != "tmp/a/b" ||
		strings.Join(missing, " ") != "tmp tmp/a tmp/a/b" {
		t.Errorf("Resolve(abs/a/b) = %q, %v, missing %v", got, err, missing)
	}
	if _, err := Resolve("etc/nope", tree, Options{}); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a missing path without Missing: %v, want ErrNotExist", err)
	}
}

// hostDir is a directory outside the root whose metadata must not change.
func hostDir(t *testing.T) (string, func()) {
	t.Helper()
	victim := filepath.Join(t.TempDir(), "victim")
	if err := os.Mkdir(victim, 0o700); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(victim, "f"), []byte("host"), 0o600)
	mtime := time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC)
	os.Chtimes(victim, mtime, mtime)
	os.Chmod(victim, os.ModeSticky|0o700)
	return victim, func() {
		t.Helper()
		fi, err := os.Stat(victim)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != os.ModeDir|os.ModeSticky|0o700 || !fi.ModTime().Equal(mtime) {
			t.Errorf("the host directory changed: %v %v", fi.Mode(), fi.ModTime())
		}
		if b, err := os.ReadFile(filepath.Join(victim, "f")); err != nil || string(b) != "host" {
			t.Errorf("the host file changed: %q %v", b, err)
		}
	}
}

func TestRootNeverFollowsSymlinksOut(t *testing.T) {
	t.Run("openat2", testRootNeverFollowsSymlinksOut)
	// Kernels before 5.6 (or a seccomp filter) have no openat2.
	t.Run("walk", func(t *testing.T) {
		useOpenat2 = false
		defer func() { useOpenat2 = true }()
		testRootNeverFollowsSymlinksOut(t)
	})
}

func testRootNeverFollowsSymlinksOut(t *testing.T) {
	victim, unchanged := hostDir(t)
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "real/sub"), 0o700)
	os.Symlink(victim, filepath.Join(dir, "x")) // absolute, to the host
	os.Symlink("../"+filepath.Base(victim), filepath.Join(dir, "y"))
	r, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	epoch := []unix.Timespec{{}, {}}
	for _, p := range []string{"x", "y"} {
		if err := r.SetDir(p, 0o755, epoch); err == nil {
			t.Errorf("SetDir(%s) followed a symlink", p)
		}
		if err := r.Utimes(p+"/f", epoch); err == nil {
			t.Errorf("Utimes(%s/f) went through a symlink", p)
		}
		if ok, err := r.RemoveFile(p+"/f", func(*unix.Stat_t) bool { return true }); ok || err == nil {
			t.Errorf("RemoveFile(%s/f) = %v, %v: went through a symlink", p, ok, err)
		}
		if _, err := r.OpenFile(p+"/f", unix.O_RDONLY); err == nil {
			t.Errorf("OpenFile(%s/f) went through a symlink", p)
		}
	}
	if err := r.SetDir("real/sub", 0o755, epoch); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(filepath.Join(dir, "real/sub")); fi.Mode().Perm() != 0o755 || fi.ModTime().Unix() != 0 {
		t.Errorf("SetDir on a real directory: %v %v", fi.Mode(), fi.ModTime())
	}
	unchanged()
}

func TestReadFileStaysInRoot(t *testing.T) {
	host := filepath.Join(t.TempDir(), "passwd")
	os.WriteFile(host, []byte("host:x:4242:4242::/host:/bin/sh\n"), 0o644)
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "etc"), 0o755)
	os.WriteFile(filepath.Join(dir, "etc/real"), []byte("inside\n"), 0o644)
	os.Symlink("/etc/real", filepath.Join(dir, "etc/passwd"))
	os.Symlink(host, filepath.Join(dir, "etc/group"))
	os.Symlink("../../../../.."+host, filepath.Join(dir, "etc/shadow"))
	unix.Mkfifo(filepath.Join(dir, "etc/fifo"), 0o644)
	r, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if b, err := r.ReadFile("/etc/passwd", 1<<20); err != nil || string(b) != "inside\n" {
		t.Errorf("an absolute symlink inside the root: %q, %v", b, err)
	}
	for _, p := range []string{"etc/group", "etc/shadow"} {
		if b, err := r.ReadFile(p, 1<<20); err == nil || strings.Contains(string(b), "4242") {
			t.Errorf("ReadFile(%s) read the host's file: %q, %v", p, b, err)
		}
	}
	done := make(chan error, 1)
	go func() { _, err := r.ReadFile("etc/fifo", 1<<20); done <- err }()
	select {
	case err := <-done:
		if err == nil {
			t.Error("a FIFO was read as a file")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("reading a FIFO hung")
	}
	if _, err := r.ReadFile("etc/real", 3); err == nil {
		t.Error("the size limit was not applied")
	}
}

func TestResolveWithoutMissingFailsAtOnce(t *testing.T) {
	tree := mapLookup(map[string]string{"etc": "dir"})
	// The kernel fails "nope/../etc" at "nope"; so does a lookup-only
	// resolution, while an extractor's (with Missing) goes on as text.
	if _, err := Resolve("nope/../etc", tree, Options{}); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("nope/../etc: %v, want ErrNotExist", err)
	}
	if got, err := Resolve("nope/../etc", tree, Options{Missing: func(string) error { return nil }}); err != nil || got != "etc" {
		t.Errorf("nope/../etc with Missing: %q, %v", got, err)
	}
	long := mapLookup(map[string]string{"l": "-> " + strings.Repeat("a/", 3000)})
	if _, err := Resolve("l", long, Options{Missing: func(string) error { return nil }}); !errors.Is(err, ErrTooLong) {
		t.Errorf("a symlink target over PATH_MAX: %v, want ErrTooLong", err)
	}
}

// FuzzResolve: whatever the symlinks say, the result is a clean path
// inside the root (no "..", no leading "/", no empty component), and
// Missing is called only with prefixes of it.
func FuzzResolve(f *testing.F) {
	f.Add("a=../../x;b=/a/c;c=b", "b/c/../d", true)
	f.Add("l=nonexist/../../../tmp", "l/x", false)
	f.Add("a=a", "a", false)
	f.Fuzz(func(t *testing.T, links, p string, clamp bool) {
		tree := map[string]string{}
		for _, l := range strings.Split(links, ";") {
			if name, target, ok := strings.Cut(l, "="); ok && name != "" && !strings.ContainsAny(name, "/") && name != "." && name != ".." {
				tree[name] = "-> " + target
			}
		}
		tree["d"] = "dir"
		var missing []string
		got, err := Resolve(p, mapLookup(tree), Options{Clamp: clamp, Missing: func(m string) error { missing = append(missing, m); return nil }})
		if err != nil {
			if clamp && errors.Is(err, ErrEscape) {
				t.Fatalf("clamped resolution refused an escape: %q", p)
			}
			return
		}
		if got == "." {
			return
		}
		for _, c := range strings.Split(got, "/") {
			if c == "" || c == "." || c == ".." {
				t.Fatalf("Resolve(%q) = %q: not a clean path in the root", p, got)
			}
		}
		for _, m := range missing {
			if got != m && !strings.HasPrefix(got, m+"/") {
				t.Fatalf("Missing(%q) for a result %q", m, got)
			}
		}
	})
}
