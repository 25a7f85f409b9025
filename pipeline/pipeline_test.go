package pipeline_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nexcage/nexcage/convert"
	"github.com/nexcage/nexcage/health"
	"github.com/nexcage/nexcage/internal/testenv"
	"github.com/nexcage/nexcage/internal/testimage"
	"github.com/nexcage/nexcage/pipeline"
	"github.com/nexcage/nexcage/rootfs"
)

func TestMain(m *testing.M) { testenv.Main(m) }

var amd64 = rootfs.Platform{OS: "linux", Architecture: "amd64"}

var (
	layoutOnce sync.Once
	layoutDir  string
	layoutErr  error
)

// alpineLayout is an OCI layout holding the real Alpine minirootfs as
// oci:DIR:app, written once for every test (tests only read it).
func alpineLayout(t testing.TB) string {
	t.Helper()
	layoutOnce.Do(func() {
		var dir string
		if dir, layoutErr = os.MkdirTemp("", "pipeline-test-"); layoutErr != nil {
			return
		}
		testenv.AtExit(func() { os.RemoveAll(dir) })
		layoutDir = filepath.Join(dir, "layout")
		layoutErr = testimage.WriteAlpineLayout(layoutDir, "app")
	})
	if layoutErr != nil {
		t.Fatal(layoutErr)
	}
	return "oci:" + layoutDir + ":app"
}

func newStore(t testing.TB) *rootfs.Store {
	t.Helper()
	s, err := rootfs.OpenStore(filepath.Join(t.TempDir(), "store"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func build(t testing.TB, store *rootfs.Store, image string, opts pipeline.BuildOptions) *pipeline.BuildResult {
	t.Helper()
	opts.Source.Platform = amd64
	r, err := pipeline.Build(context.Background(), store, image, opts)
	if err != nil {
		t.Fatalf("Build(%s): %v", image, err)
	}
	return r
}

// The streaming path (layers flattened in memory) and the staged one
// (unpack, then convert the bundle) write the same bytes and name.
func TestBuildStreamingEqualsStaged(t *testing.T) {
	image := alpineLayout(t)
	store := newStore(t)
	var templates [2][]byte
	var names [2]string
	for i, staged := range []bool{false, true} {
		r := build(t, store, image, pipeline.BuildOptions{Staged: staged, Convert: convert.Options{Output: t.TempDir() + "/"}})
		if r.UpToDate || r.Result == nil {
			t.Fatalf("staged=%v: first build is up to date (%v) or has no result", staged, r.UpToDate)
		}
		if r.Stages["flatten"] <= 0 || r.Stages["write"] <= 0 {
			t.Errorf("staged=%v: stages %v lack flatten or write", staged, r.Stages)
		}
		b, err := os.ReadFile(r.Result.Template)
		if err != nil {
			t.Fatal(err)
		}
		templates[i], names[i] = b, filepath.Base(r.Result.Template)
	}
	if names[0] != names[1] {
		t.Errorf("streaming wrote %s, staged %s", names[0], names[1])
	}
	if !bytes.Equal(templates[0], templates[1]) {
		t.Errorf("streaming and staged templates differ: %d and %d bytes", len(templates[0]), len(templates[1]))
	}
}

// A second build of the same image and options writes nothing (the
// template keeps its mtime); Force writes it again.
func TestBuildUpToDate(t *testing.T) {
	image := alpineLayout(t)
	store := newStore(t)
	out := t.TempDir() + "/"
	first := build(t, store, image, pipeline.BuildOptions{Convert: convert.Options{Output: out}})
	old := time.Now().Add(-time.Hour).Truncate(time.Second)
	if err := os.Chtimes(first.Result.Template, old, old); err != nil {
		t.Fatal(err)
	}
	again := build(t, store, image, pipeline.BuildOptions{Convert: convert.Options{Output: out}})
	if !again.UpToDate {
		t.Fatal("the second build is not up to date")
	}
	if again.Result == nil || again.Result.Template != first.Result.Template {
		t.Fatalf("up to date result names %v, want %s", again.Result, first.Result.Template)
	}
	fi, err := os.Stat(first.Result.Template)
	if err != nil {
		t.Fatal(err)
	}
	if !fi.ModTime().Equal(old) {
		t.Errorf("an up-to-date build rewrote the template: mtime %v, want %v", fi.ModTime(), old)
	}
	forced := build(t, store, image, pipeline.BuildOptions{Force: true, Convert: convert.Options{Output: out}})
	if forced.UpToDate {
		t.Error("Force: still up to date")
	}
	if fi, err := os.Stat(first.Result.Template); err != nil || fi.ModTime().Equal(old) {
		t.Errorf("Force did not rewrite the template (%v)", err)
	}
}

// Under PullNever an image the store lacks is a typed error, and nothing
// is written: no template, no store entry.
func TestBuildPullNeverOnEmptyStore(t *testing.T) {
	image := alpineLayout(t)
	store := newStore(t)
	out := t.TempDir()
	for _, staged := range []bool{false, true} {
		_, err := pipeline.Build(context.Background(), store, image, pipeline.BuildOptions{
			Pull: rootfs.PullNever, Staged: staged, Source: rootfs.SourceOptions{Platform: amd64}, Convert: convert.Options{Output: out + "/"},
		})
		var ns *rootfs.NotStoredError
		if !errors.As(err, &ns) || !errors.Is(err, rootfs.ErrNotFound) {
			t.Fatalf("staged=%v: err = %v (%T), want a *rootfs.NotStoredError", staged, err, err)
		}
		if ns.Store != store.Dir || ns.Platform != amd64 || ns.Ref.Tag != "app" {
			t.Errorf("staged=%v: the error says %+v", staged, ns)
		}
		if strings.Contains(err.Error(), "--") {
			t.Errorf("a library error names a flag: %v", err)
		}
	}
	if ents, _ := os.ReadDir(out); len(ents) != 0 {
		t.Errorf("a refused build wrote %d entries in the output", len(ents))
	}
	if imgs, err := store.List(); err != nil || len(imgs) != 0 {
		t.Errorf("a refused build stored %v (%v)", imgs, err)
	}
	// Once stored, PullNever builds from the store.
	ref, _ := rootfs.ParseRef(image)
	if _, err := store.Pull(context.Background(), ref, rootfs.PullOptions{SourceOptions: rootfs.SourceOptions{Platform: amd64}}); err != nil {
		t.Fatal(err)
	}
	build(t, store, image, pipeline.BuildOptions{Pull: rootfs.PullNever, Convert: convert.Options{Output: out + "/"}})
}

func TestBuildBadReference(t *testing.T) {
	_, err := pipeline.Build(context.Background(), newStore(t), "UPPER/Case", pipeline.BuildOptions{})
	var re *pipeline.RefError
	if !errors.As(err, &re) || re.Image != "UPPER/Case" {
		t.Fatalf("err = %v (%T), want a *pipeline.RefError", err, err)
	}
}

// One failure does not stop the others; each result is its image's.
func TestBuildAll(t *testing.T) {
	image := alpineLayout(t)
	missing := "oci:" + filepath.Join(t.TempDir(), "none") + ":app"
	out := t.TempDir() + "/"
	rs := pipeline.BuildAll(context.Background(), newStore(t), []string{missing, image}, pipeline.BuildOptions{
		Jobs: 2, Source: rootfs.SourceOptions{Platform: amd64}, Convert: convert.Options{Output: out},
	})
	if len(rs) != 2 {
		t.Fatalf("%d results for 2 images", len(rs))
	}
	if rs[0].Err == nil || !errors.Is(rs[0].Err, rootfs.ErrNotFound) {
		t.Errorf("missing image: err = %v, want rootfs.ErrNotFound", rs[0].Err)
	}
	if rs[1].Err != nil || rs[1].Result == nil || filepath.Dir(rs[1].Result.Template) != filepath.Clean(out) {
		t.Errorf("good image: %+v", rs[1])
	}
	if !strings.HasPrefix(rs[1].Image, "oci:/") {
		t.Errorf("result names %q, not the canonical reference", rs[1].Image)
	}
}

// Check knows a template by its name and finds a fresh one sound; a
// target that is not there is a failed check, not an error.
func TestCheck(t *testing.T) {
	r := build(t, newStore(t), alpineLayout(t), pipeline.BuildOptions{Convert: convert.Options{Output: t.TempDir() + "/"}})
	ctx := context.Background()
	rs, err := pipeline.Check(ctx, r.Result.Template, pipeline.CheckOptions{})
	if err != nil || len(rs) == 0 {
		t.Fatalf("Check: %d results, %v", len(rs), err)
	}
	for _, c := range rs {
		if c.Status == health.Fail {
			t.Errorf("a fresh template fails: %+v", c)
		}
	}
	gone := filepath.Join(t.TempDir(), "gone.tar.zst.d")
	rs, err = pipeline.Check(ctx, gone, pipeline.CheckOptions{})
	if err != nil || len(rs) != 1 || rs[0].Status != health.Fail || !strings.Contains(rs[0].Cause, "does not exist") {
		t.Fatalf("Check(%s) = %+v, %v", gone, rs, err)
	}
}

func TestIsTemplate(t *testing.T) {
	for s, want := range map[string]bool{
		"local:vztmpl/a.tar.zst":   true,
		"t/alpine_1_amd64.tar.zst": true,
		"x.tar.gz":                 true,
		"alpine:3.20":              false,
		"docker://alpine":          false,
		"oci:dir:app":              false,
	} {
		if got := pipeline.IsTemplate(s); got != want {
			t.Errorf("IsTemplate(%q) = %v, want %v", s, got, want)
		}
	}
}
