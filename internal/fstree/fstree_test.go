package fstree

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nexcage/nexcage/internal/testenv"
)

func mkTree(t *testing.T) string {
	t.Helper()
	d := t.TempDir()
	testenv.Must(t, os.MkdirAll(filepath.Join(d, "a/b"), 0o755))
	testenv.Must(t, os.WriteFile(filepath.Join(d, "a/f"), []byte("one"), 0o640))
	testenv.Must(t, os.Link(filepath.Join(d, "a/f"), filepath.Join(d, "a/b/g")))
	testenv.Must(t, os.Symlink("../f", filepath.Join(d, "a/b/l")))
	return d
}

func TestEqualTreesHaveNoDiff(t *testing.T) {
	a, err := Snapshot(mkTree(t), Options{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := Snapshot(mkTree(t), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if d := Diff(a, b); len(d) != 0 {
		t.Fatalf("identical trees differ: %v", d)
	}
	if got := a["a/f"].Group; len(got) != 1 || got[0] != "a/b/g" {
		t.Fatalf("hard link group of a/f = %v, want [a/b/g]", got)
	}
}

func TestDiffFindsEachKindOfChange(t *testing.T) {
	want, _ := Snapshot(mkTree(t), Options{})
	d := mkTree(t)
	os.Chmod(filepath.Join(d, "a/f"), 0o600)
	os.Remove(filepath.Join(d, "a/b/g"))
	os.WriteFile(filepath.Join(d, "a/b/g"), []byte("one"), 0o640)
	os.Remove(filepath.Join(d, "a/b/l"))
	os.Symlink("f", filepath.Join(d, "a/b/l"))
	os.WriteFile(filepath.Join(d, "extra"), nil, 0o644)
	got, _ := Snapshot(d, Options{})
	diff := strings.Join(Diff(want, got), "\n")
	for _, w := range []string{"a/f: mode", "a/f: hardlinks", "a/b/l: link", "extra: unexpected"} {
		if !strings.Contains(diff, w) {
			t.Errorf("diff lacks %q:\n%s", w, diff)
		}
	}
}
