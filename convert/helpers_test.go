package convert_test

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/nexcage/nexcage/convert"
	"github.com/nexcage/nexcage/internal/testimage"
	"github.com/nexcage/nexcage/rootfs"
)

var (
	corpusOnce sync.Once
	corpus     []testimage.Case
	corpusErr  error
)

func cases(t testing.TB) []testimage.Case {
	t.Helper()
	corpusOnce.Do(func() { corpus, corpusErr = testimage.Corpus() })
	if corpusErr != nil {
		t.Fatal(corpusErr)
	}
	return corpus
}

func corpusCase(t testing.TB, name string) testimage.Case {
	t.Helper()
	for _, c := range cases(t) {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no corpus case %q", name)
	return testimage.Case{}
}

// unpack stores a case and unpacks it into a fresh bundle, the way
// `nexcage unpack` would.
func unpack(t testing.TB, c testimage.Case, rootless bool) *convert.Bundle {
	t.Helper()
	dir := t.TempDir()
	if err := testimage.WriteLayout(filepath.Join(dir, "layout"), c.Name, c); err != nil {
		t.Fatal(err)
	}
	s, err := rootfs.OpenStore(filepath.Join(dir, "store"))
	if err != nil {
		t.Fatal(err)
	}
	ref, err := rootfs.ParseRef("oci:" + filepath.Join(dir, "layout") + ":" + c.Name)
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
	res, err := s.Unpack(context.Background(), img, filepath.Join(dir, "bundle"), rootfs.UnpackOptions{Rootless: rootless})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rootfs.RemoveBundle(res.Bundle) })
	b, err := convert.LoadBundle(res.Bundle)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// convertTo converts a bundle into dir and returns the result.
func convertTo(t testing.TB, b *convert.Bundle, dir string, opts convert.Options) *convert.Result {
	t.Helper()
	opts.Output = dir + "/"
	res, err := convert.Convert(context.Background(), b, opts)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func readFile(t testing.TB, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// entries lists a directory's names.
func entries(t testing.TB, dir string) []string {
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
