// Package testbundle puts testimage corpus cases through a rootfs store
// for tests: it stores a case the way `nexcage pull` does and unpacks it
// the way `nexcage unpack` does.
//
// It lives apart from testimage because it needs rootfs, whose own tests
// import testimage.
package testbundle

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/nexcage/nexcage/internal/testimage"
	"github.com/nexcage/nexcage/progress"
	"github.com/nexcage/nexcage/rootfs"
)

var corpus = sync.OnceValues(testimage.Corpus)

// Cases returns every corpus case, built once per test binary.
func Cases(t testing.TB) []testimage.Case {
	t.Helper()
	cases, err := corpus()
	if err != nil {
		t.Fatal(err)
	}
	return cases
}

// Case returns the corpus case called name.
func Case(t testing.TB, name string) testimage.Case {
	t.Helper()
	for _, c := range Cases(t) {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no corpus case %q", name)
	return testimage.Case{}
}

// ReadFile reads p, failing t when it cannot.
func ReadFile(t testing.TB, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// DirNames lists the names in dir, none when it does not exist.
func DirNames(t testing.TB, dir string) []string {
	t.Helper()
	des, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var out []string
	for _, d := range des {
		out = append(out, d.Name())
	}
	return out
}

// Store opens a fresh store and pulls c into it (see Pull). It returns
// the store and the stored image.
func Store(t testing.TB, c testimage.Case, tag string) (*rootfs.Store, rootfs.Image) {
	t.Helper()
	s, err := rootfs.OpenStore(filepath.Join(t.TempDir(), "store"))
	if err != nil {
		t.Fatal(err)
	}
	return s, Pull(t, s, c, tag)
}

// Pull writes c to an OCI layout tagged tag in a fresh directory and
// pulls it into s, as `nexcage pull` does, for the platform its image
// config names (linux/amd64 for an index or an image that names none).
// Several cases pulled into one store share it as a template factory's
// builds do. It returns the stored image.
func Pull(t testing.TB, s *rootfs.Store, c testimage.Case, tag string) rootfs.Image {
	t.Helper()
	layout := filepath.Join(t.TempDir(), "layout")
	if err := testimage.WriteLayout(layout, tag, c); err != nil {
		t.Fatal(err)
	}
	ref, err := rootfs.ParseRef("oci:" + layout + ":" + tag)
	if err != nil {
		t.Fatal(err)
	}
	plat := rootfs.Platform{OS: "linux", Architecture: "amd64"}
	if c.Image != nil {
		if cfg, err := c.Image.ConfigFile(); err == nil && cfg.Architecture != "" {
			plat = rootfs.Platform{OS: cfg.OS, Architecture: cfg.Architecture, Variant: cfg.Variant}
		}
	}
	img, err := s.Pull(context.Background(), ref, rootfs.PullOptions{SourceOptions: rootfs.SourceOptions{Platform: plat}})
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// ChainReuses passes every report on to its Reporter and counts the
// builds that reused a chain of lower layers an earlier build cached
// (rootfs's step "reusing the N lowest layers ...").
type ChainReuses struct {
	progress.Reporter
	n atomic.Int64
}

// NewChainReuses counts reuses and discards the reports.
func NewChainReuses() *ChainReuses { return &ChainReuses{Reporter: progress.Discard} }

func (c *ChainReuses) Step(format string, args ...any) {
	if strings.HasPrefix(format, "reusing the") {
		c.n.Add(1)
	}
	c.Reporter.Step(format, args...)
}

// N is how many builds reused a cached chain so far.
func (c *ChainReuses) N() int64 { return c.n.Load() }

// Unpack stores c under its name and unpacks it with opts into a fresh
// bundle, which is removed when the test ends. It returns the bundle
// directory.
func Unpack(t testing.TB, c testimage.Case, opts rootfs.UnpackOptions) string {
	t.Helper()
	s, img := Store(t, c, c.Name)
	res, err := s.Unpack(context.Background(), img, filepath.Join(t.TempDir(), "bundle"), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rootfs.RemoveBundle(res.Bundle) })
	return res.Bundle
}
