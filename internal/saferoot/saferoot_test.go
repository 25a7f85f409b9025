package saferoot

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nexcage/nexcage/internal/limits"

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
		got, _, err := Resolve(tc.in, tree, Options[string]{Clamp: tc.clamp, Missing: record(&missing)})
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
	if got, _, err := Resolve("abs/a/b", tree, Options[string]{Missing: record(&missing)}); err != nil || got != "tmp/a/b" ||
		strings.Join(missing, " ") != "tmp tmp/a tmp/a/b" {
		t.Errorf("Resolve(abs/a/b) = %q, %v, missing %v", got, err, missing)
	}
	if _, _, err := Resolve("etc/nope", tree, Options[string]{}); !errors.Is(err, fs.ErrNotExist) {
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
		if err := r.Mkdir(p+"/new", 0o700); err == nil {
			t.Errorf("Mkdir(%s/new) went through a symlink", p)
		}
	}
	if err := r.Mkdir("real/made", 0o700); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Lstat(filepath.Join(dir, "real/made")); err != nil || !fi.IsDir() {
		t.Errorf("Mkdir(real/made): %v", err)
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
	// Stat resolves as ReadFile does and names what it found.
	if p, st, err := r.Stat("/etc/passwd"); err != nil || p != "etc/real" || st.Size != 7 {
		t.Errorf("Stat(/etc/passwd) = %q, size %d, %v; want etc/real, 7", p, st.Size, err)
	}
	if p, _, err := r.Stat("etc/shadow"); err == nil && p != "etc/shadow" && !strings.HasPrefix(p, "etc/") {
		t.Errorf("Stat(etc/shadow) resolved out of the root to %q", p)
	}
}

// TestRefusal: the one wording of a resolver refusal, for every caller
// (unpack, flatten, generate), keeps its kind and its limit.
func TestRefusal(t *testing.T) {
	kind := errors.New("hostile")
	tree := mapLookup(map[string]string{"up": "-> ../..", "loop": "-> loop", "long": "-> " + strings.Repeat("a/", PathMax/2)})
	for _, tc := range []struct {
		in, want string
		limit    string
	}{
		{"up/x", `entry "up/x" is written through a symlink that points outside the root`, ""},
		{"loop/x", `entry "loop/x": too many levels of symbolic links`, limits.SymlinkHops},
		{"long/x", `entry "long/x" is written through a symlink to a 4096-byte target, more than Linux's limit of 4095 bytes`, limits.PathLength},
	} {
		_, _, err := Resolve(tc.in, tree, Options[string]{})
		err = Refusal(kind, fmt.Sprintf("entry %q", tc.in), err)
		if err == nil || err.Error() != tc.want || !errors.Is(err, kind) {
			t.Errorf("Refusal for %s: %v; want %q of kind %v", tc.in, err, tc.want, kind)
		}
		if le, over := limits.As(err); over != (tc.limit != "") || (over && le.Limit != tc.limit) {
			t.Errorf("Refusal for %s: limit %v (%v), want %q", tc.in, le, over, tc.limit)
		}
	}
	if err := Refusal(kind, "x", nil); err != nil {
		t.Errorf("Refusal(nil) = %v", err)
	}
	other := fs.ErrPermission
	if err := Refusal(kind, "x", other); err != other {
		t.Errorf("Refusal of another error = %v, want it unchanged", err)
	}
}

func TestResolveWithoutMissingFailsAtOnce(t *testing.T) {
	tree := mapLookup(map[string]string{"etc": "dir"})
	// The kernel fails "nope/../etc" at "nope"; so does a lookup-only
	// resolution, while an extractor's (with Missing) goes on as text.
	if _, _, err := Resolve("nope/../etc", tree, Options[string]{}); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("nope/../etc: %v, want ErrNotExist", err)
	}
	if got, _, err := Resolve("nope/../etc", tree, Options[string]{Missing: record(new([]string))}); err != nil || got != "etc" {
		t.Errorf("nope/../etc with Missing: %q, %v", got, err)
	}
	long := mapLookup(map[string]string{"l": "-> " + strings.Repeat("a/", 3000)})
	if _, _, err := Resolve("l", long, Options[string]{Missing: record(new([]string))}); !errors.Is(err, ErrTooLong) {
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
		got, _, err := Resolve(p, mapLookup(tree), Options[string]{Clamp: clamp, Missing: record(&missing)})
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

// record is a Missing for a Lookup walker that notes each path it is
// asked to make.
func record(missing *[]string) func(dir, name string) (string, error) {
	return func(dir, name string) (string, error) {
		p := Join(dir, name)
		*missing = append(*missing, p)
		return p, nil
	}
}

func TestResolveBoundsItsWork(t *testing.T) {
	chain := map[string]string{"c0": "dir"}
	for i := 1; i <= MaxHops+1; i++ {
		chain[fmt.Sprintf("c%d", i)] = fmt.Sprintf("-> c%d", i-1)
	}
	// Each target is legal; followed in turn they name 6000 bytes.
	growing := map[string]string{"b": "dir",
		"l1": "-> b/" + strings.Repeat("b/", 1500), "l2": "-> l1/" + strings.Repeat("b/", 1500)}
	for _, tc := range []struct {
		name, path string
		tree       map[string]string
		limit      string
		err        error
	}{
		{"41 links in a chain", "c41/x", chain, limits.SymlinkHops, ErrLoop},
		{"40 links in a chain", "c40/x", chain, "", nil},
		{"links resolving past PATH_MAX", "l2/x", growing, limits.PathLength, ErrPathTooLong},
		{"a target over PATH_MAX", "l", map[string]string{"l": "-> " + strings.Repeat("a/", 3000)}, limits.PathLength, ErrTooLong},
		// PATH_MAX counts the NUL, and the root's "/" in front.
		{"a missing path of 4095 bytes", strings.Repeat("d/", 2047) + "d", nil, limits.PathLength, ErrPathTooLong},
		{"a missing path of 4094 bytes", strings.Repeat("d/", 2046) + "dd", nil, "", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := Resolve(tc.path, mapLookup(tc.tree), Options[string]{Missing: record(new([]string))})
			if tc.err == nil {
				if err != nil {
					t.Fatalf("Resolve: %v", err)
				}
				return
			}
			le, ok := limits.As(err)
			if !errors.Is(err, tc.err) || !ok || le.Limit != tc.limit || le.Value <= le.Max {
				t.Fatalf("Resolve: %#v, want a limits.Error on %s wrapping %v, its value over its max", err, tc.limit, tc.err)
			}
		})
	}
}

// node is a tree of handles: a directory's entries, or a symlink's target.
type node struct {
	kids   map[string]*node
	target string // a symlink's
	file   bool
}

// countingWalker walks nodes and counts Child calls.
type countingWalker struct {
	root  *node
	calls int
}

func (w *countingWalker) Root() *node { return w.root }

func (w *countingWalker) Child(dir *node, name string) (*node, Kind, string, error) {
	w.calls++
	n := dir.kids[name]
	switch {
	case n == nil:
		return nil, Missing, "", nil
	case n.kids != nil:
		return n, Dir, "", nil
	case n.file:
		return n, Other, "", nil
	}
	return n, Symlink, n.target, nil
}

// TestResolveWalksHandles: each component costs one Child call on its
// parent's handle (a lookup from the root for every prefix made 1000
// directories deep cost 1000² per path), ".." returns to the parent's
// handle, and Missing is given the handle it made for the one above.
func TestResolveWalksHandles(t *testing.T) {
	root := &node{kids: map[string]*node{}}
	n := root
	for range 1000 {
		next := &node{kids: map[string]*node{}}
		n.kids["d"] = next
		n = next
	}
	deep := n
	deep.kids["up"] = &node{target: "../d"}
	deep.kids["f"] = &node{file: true}
	w := &countingWalker{root: root}
	p := strings.Repeat("d/", 1000) + "up/x/y"
	var made []*node
	got, h, err := Resolve(p, Walker[*node](w), Options[*node]{Missing: func(dir *node, name string) (*node, error) {
		c := &node{kids: map[string]*node{}}
		dir.kids[name] = c
		made = append(made, c)
		return c, nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	if want := strings.Repeat("d/", 1000) + "x/y"; got != want {
		t.Errorf("Resolve = %q…, want %q…", got[len(got)-20:], want[len(want)-20:])
	}
	// 1000 directories, the link, "d" after its "..", then x (missing).
	if w.calls != 1003 {
		t.Errorf("%d Child calls for a path of 1003 components", w.calls)
	}
	if len(made) != 2 || deep.kids["x"] != made[0] || made[0].kids["y"] != made[1] || h != made[1] {
		t.Errorf("Missing did not make x/y below the deep directory, each from the one before")
	}
	// Below a file nothing exists, without asking the walker.
	w.calls = 0
	if _, _, err := Resolve(strings.Repeat("d/", 1000)+"f/z", Walker[*node](w), Options[*node]{}); !errors.Is(err, fs.ErrNotExist) || w.calls != 1001 {
		t.Errorf("a path below a file: %v after %d calls", err, w.calls)
	}
}
