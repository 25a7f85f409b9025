package pipeline_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/nexcage/nexcage/convert"
	"github.com/nexcage/nexcage/internal/testbundle"
	"github.com/nexcage/nexcage/internal/testimage"
	"github.com/nexcage/nexcage/pipeline"
)

// TestBuildSharedBaseChainCache: build, pulling each image as it flattens
// it, reuses the base another image left in the store, and gives the
// bytes of a build into an empty store; so does a rebuild after only the
// top layer changed.
func TestBuildSharedBaseChainCache(t *testing.T) {
	cfg := v1.Config{Env: []string{"PATH=/usr/bin:/bin"}}
	var base []testimage.Entry
	base = append(base, testimage.Dir("etc/", 0o755), testimage.File("etc/passwd", 0o644, "root:x:0:0::/root:/bin/sh\n"),
		testimage.File("big", 0o644, strings.Repeat("nexcage ", 1<<18)), testimage.Dir("lib/", 0o755))
	for i := range 1200 {
		base = append(base, testimage.File(fmt.Sprintf("lib/f%04d", i), 0o644, strings.Repeat("y", i)))
	}
	layout := filepath.Join(t.TempDir(), "layout")
	images := []struct {
		tag    string
		layers [][]testimage.Entry
		reuse  int64
	}{
		{"a", [][]testimage.Entry{base, {testimage.File("app", 0o644, "a\n")}}, 0},
		{"b", [][]testimage.Entry{base, {testimage.Whiteout("lib/f0003"), testimage.Hardlink("big-link", "big"), testimage.File("lib/f0600", 0o644, "new\n")}}, 1},
		{"c", [][]testimage.Entry{base, {testimage.File("mid", 0o644, "m\n")}, {testimage.File("top", 0o644, "1\n")}}, 1},
		{"c2", [][]testimage.Entry{base, {testimage.File("mid", 0o644, "m\n")}, {testimage.File("top", 0o644, "2\n")}}, 1},
		{"base-only", [][]testimage.Entry{base}, 1}, // every layer cached: none is read
	}
	shared := newStore(t)
	for _, im := range images {
		img, err := testimage.Layers(cfg, testimage.Gzip, im.layers...)
		if err != nil {
			t.Fatal(err)
		}
		if err := testimage.WriteLayout(layout, im.tag, testimage.Case{Name: im.tag, Image: img}); err != nil {
			t.Fatal(err)
		}
		ref := "oci:" + layout + ":" + im.tag
		rep := testbundle.NewChainReuses()
		cached := build(t, shared, ref, pipeline.BuildOptions{Progress: rep, Convert: convert.Options{Output: t.TempDir() + "/"}})
		cold := build(t, newStore(t), ref, pipeline.BuildOptions{Convert: convert.Options{Output: t.TempDir() + "/"}})
		a, err := os.ReadFile(cached.Result.Template)
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(cold.Result.Template)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a, b) {
			t.Errorf("%s: the build in the shared store gives %d bytes that differ from the cold build's %d", im.tag, len(a), len(b))
		}
		if rep.N() != im.reuse {
			t.Errorf("%s: %d builds reused a cached chain, want %d", im.tag, rep.N(), im.reuse)
		}
	}
	entries, err := shared.CacheEntries()
	if err != nil || len(entries) != 2 {
		t.Errorf("%d cache entries (%v), want 2: the base, and c's two lower layers", len(entries), err)
	}
}
