package pipeline_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/nexcage/nexcage/convert"
	"github.com/nexcage/nexcage/internal/testbundle"
	"github.com/nexcage/nexcage/internal/testimage"
	"github.com/nexcage/nexcage/pipeline"
	"github.com/nexcage/nexcage/progress"
	"github.com/nexcage/nexcage/rootfs"
)

// layerReads counts the layers flattening reads, by their progress label
// ("layer I/N digest"), and the builds that reused a cached chain.
type layerReads struct {
	*testbundle.ChainReuses
	mu    sync.Mutex
	reads map[string]int
}

func (l *layerReads) Bytes(label string, total int64) progress.Counter {
	l.mu.Lock()
	if strings.HasPrefix(label, "layer ") {
		l.reads[strings.Fields(label)[1]]++
	}
	l.mu.Unlock()
	return l.Reporter.Bytes(label, total)
}

// TestBuildAllFlattensASharedBaseOnce: two images on one base layer built
// two at a time (Jobs 2) read the base layer once: one job flattens it and
// caches the chain while the other waits for the chain's lock, then
// reuses it. Both templates are the bytes of cold builds.
func TestBuildAllFlattensASharedBaseOnce(t *testing.T) {
	var big strings.Builder
	for i := 0; big.Len() < 12<<20; i++ {
		fmt.Fprintf(&big, "line %d of the shared base layer\n", i*7919%1000003)
	}
	base := []testimage.Entry{testimage.Dir("etc", 0o755), testimage.File("etc/os-release", 0o644, "ID=base\nVERSION_ID=1\n"), testimage.File("usr/lib/big", 0o644, big.String())}
	dir := t.TempDir()
	var images []string
	for _, name := range []string{"one", "two"} {
		img, err := testimage.Layers(v1.Config{Env: []string{"PATH=/bin"}}, testimage.Gzip, base, []testimage.Entry{testimage.File("app/"+name, 0o644, name)})
		if err != nil {
			t.Fatal(err)
		}
		layout := filepath.Join(dir, name)
		if err := testimage.WriteLayout(layout, name, testimage.Case{Name: name, Image: img}); err != nil {
			t.Fatal(err)
		}
		images = append(images, "oci:"+layout+":"+name)
	}
	store := newStore(t)
	for _, image := range images {
		ref, _ := rootfs.ParseRef(image)
		if _, err := store.Pull(context.Background(), ref, rootfs.PullOptions{SourceOptions: rootfs.SourceOptions{Platform: amd64}}); err != nil {
			t.Fatal(err)
		}
	}

	rec := &layerReads{ChainReuses: testbundle.NewChainReuses(), reads: map[string]int{}}
	out := t.TempDir()
	opts := pipeline.BuildOptions{Jobs: 2, Progress: rec, Source: rootfs.SourceOptions{Platform: amd64}, Convert: convert.Options{Output: out + "/", Name: "t"}}
	for _, r := range pipeline.BuildAll(context.Background(), store, images, opts) {
		if r.Err != nil {
			t.Fatalf("%s: %v", r.Image, r.Err)
		}
	}
	if rec.reads["1/2"] != 1 || rec.reads["2/2"] != 2 || rec.N() != 1 {
		t.Errorf("layer reads %v, %d build(s) reused a cached chain; want the base (1/2) read once, each top layer (2/2) once, one reuse", rec.reads, rec.N())
	}

	// A build that reuses the chain records the use Prune's --older-than
	// reads: the entry's mtime.
	chains, err := filepath.Glob(filepath.Join(store.Dir, "cache", "chains", "*"))
	if err != nil || len(chains) != 1 {
		t.Fatalf("cached chains %v (%v), want the base's alone", chains, err)
	}
	long := time.Now().Add(-1000 * time.Hour)
	os.Chtimes(chains[0], long, long)
	build(t, store, images[0], pipeline.BuildOptions{Force: true, Convert: convert.Options{Output: out + "/", Name: "t"}})
	if fi, err := os.Stat(chains[0]); err != nil || time.Since(fi.ModTime()) > time.Hour {
		t.Errorf("a build reusing the chain did not record its use: %v, %v", fi.ModTime(), err)
	}

	// The templates are the bytes of cold builds, each in a store of its own.
	for i, image := range images {
		cold := t.TempDir()
		r := build(t, newStore(t), image, pipeline.BuildOptions{Convert: convert.Options{Output: cold + "/", Name: "t"}})
		warm := filepath.Join(out, filepath.Base(r.Result.Template))
		a, err1 := os.ReadFile(r.Result.Template)
		b, err2 := os.ReadFile(warm)
		if err1 != nil || err2 != nil || !bytes.Equal(a, b) {
			t.Errorf("image %d: the template built with Jobs 2 differs from a cold build (%v, %v)", i, err1, err2)
		}
	}
}
