package health

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/nexcage/nexcage/internal/atomicfile"
)

func isTemp(name string) bool { return atomicfile.IsTemp(name) }

// tempTree makes dir with a leftover file and directory at the top, one
// below a subdirectory, and an ordinary file.
func tempTree(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{".b" + atomicfile.TempMarker + "2/x", "sub/.c" + atomicfile.TempMarker + "3"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for p, data := range map[string]string{
		".a" + atomicfile.TempMarker + "1":       "12345",
		".b" + atomicfile.TempMarker + "2/x/big": strings.Repeat("x", 2048),
		"keep":                                   "k",
	} {
		if err := os.WriteFile(filepath.Join(dir, p), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func checks(res []Result) []string {
	var out []string
	for _, r := range res {
		out = append(out, r.Status+" "+r.Check)
	}
	return out
}

func TestLeftoversNone(t *testing.T) {
	dir := t.TempDir()
	got := Leftovers(dir, isTemp, true, "T", "the store", Options{})
	want := []Result{{Status: OK, Check: "no leftovers of interrupted writes in the store", Target: "T"}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	// A directory that cannot be read has none either.
	got = Leftovers(filepath.Join(dir, "absent"), isTemp, false, "T", "the directory", Options{})
	if len(got) != 1 || got[0].Check != "no leftovers of interrupted writes in the directory" {
		t.Fatalf("got %+v", got)
	}
}

func TestLeftoversReport(t *testing.T) {
	dir := tempTree(t)
	a, b, c := ".a"+atomicfile.TempMarker+"1", ".b"+atomicfile.TempMarker+"2", filepath.Join("sub", ".c"+atomicfile.TempMarker+"3")

	// Only the top level, sorted; a match is not descended into.
	got := Leftovers(dir, isTemp, false, "T", "the directory", Options{})
	if want := []string{"warn leftover " + a, "warn leftover " + b}; !reflect.DeepEqual(checks(got), want) {
		t.Fatalf("shallow: got %q, want %q", checks(got), want)
	}
	if got[0].Cause != "temporary file of an interrupted write (5 B)" || got[1].Cause != "temporary directory of an interrupted write (2.0 KiB)" {
		t.Errorf("causes: %q, %q", got[0].Cause, got[1].Cause)
	}
	// What a repair does is a field: the library names no command.
	if got[0].Repair != "removes it" || got[0].Fix != "" || got[0].Advice("a repair") != "a repair removes it" || got[0].Target != "T" || got[0].Repaired {
		t.Errorf("warning: %+v", got[0])
	}

	// Deep: below subdirectories too.
	got = Leftovers(dir, isTemp, true, "T", "the store", Options{})
	if want := []string{"warn leftover " + a, "warn leftover " + b, "warn leftover " + c}; !reflect.DeepEqual(checks(got), want) {
		t.Fatalf("deep: got %q, want %q", checks(got), want)
	}

	// A symbolic link to the directory is followed.
	link := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(dir, link); err != nil {
		t.Fatal(err)
	}
	if got := Leftovers(link, isTemp, true, "T", "the store", Options{}); len(got) != 3 {
		t.Fatalf("through a link: got %q", checks(got))
	}
}

func TestLeftoversRepair(t *testing.T) {
	dir := tempTree(t)
	busy := filepath.Join(dir, ".a"+atomicfile.TempMarker+"1")
	opts := Options{Repair: true, InUse: func(p string) bool { return p == busy }}
	got := Leftovers(dir, isTemp, true, "T", "the store", opts)
	want := []string{
		"ok leftover .a" + atomicfile.TempMarker + "1: being written by a running process, left alone",
		"ok leftover .b" + atomicfile.TempMarker + "2",
		"ok leftover " + filepath.Join("sub", ".c"+atomicfile.TempMarker+"3"),
	}
	if !reflect.DeepEqual(checks(got), want) {
		t.Fatalf("got %q, want %q", checks(got), want)
	}
	if got[0].Repaired || got[0].Cause != "" || !got[1].Repaired || got[1].Fix != "removed it" || got[1].Cause == "" {
		t.Errorf("results: %+v", got)
	}
	var left []string
	filepath.WalkDir(dir, func(p string, _ os.DirEntry, _ error) error {
		rel, _ := filepath.Rel(dir, p)
		left = append(left, rel)
		return nil
	})
	if want := []string{".", ".a" + atomicfile.TempMarker + "1", "keep", "sub"}; !reflect.DeepEqual(left, want) {
		t.Errorf("left %q, want %q", left, want)
	}
}

// A leftover that cannot be removed fails, with the stage's fix by hand.
func TestLeftoverRemoveFails(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	os.WriteFile(file, nil, 0o644)
	// Below a regular file: removing it fails even for root.
	r := Leftover{Path: filepath.Join(file, "x"), Target: "T", Check: "partial upload x", Cause: "C", Fix: "F", ByHand: "remove it as root"}.Judge(Options{Repair: true})
	if r.Status != Fail || !strings.HasPrefix(r.Cause, "C; removing it failed: ") || r.Fix != "remove it as root" || r.Repaired {
		t.Fatalf("got %+v", r)
	}
}

func TestLeftoverJudge(t *testing.T) {
	l := Leftover{Path: filepath.Join(t.TempDir(), "gone"), Target: "T", Check: "partial upload x", Cause: "C", Busy: ": busy", Fix: "F", ByHand: "H"}
	if r := l.Judge(Options{InUse: func(string) bool { return true }, Repair: true}); r != (Result{Status: OK, Check: "partial upload x: busy", Target: "T"}) {
		t.Errorf("in use: %+v", r)
	}
	if r := l.Judge(Options{}); r != (Result{Status: Warn, Check: "partial upload x", Target: "T", Cause: "C", Fix: "F", Repair: "removes it"}) {
		t.Errorf("warning: %+v", r)
	}
	if r := l.Judge(Options{Repair: true}); r != (Result{Status: OK, Check: "partial upload x", Target: "T", Cause: "C", Fix: "removed it", Repaired: true}) {
		t.Errorf("repair: %+v", r)
	}
}
