package convert_test

import (
	"context"
	"os"
	"testing"

	"github.com/nexcage/nexcage/convert"
	"github.com/nexcage/nexcage/internal/testbundle"
	"github.com/nexcage/nexcage/internal/testimage"
	"github.com/nexcage/nexcage/rootfs"
)

func cases(t testing.TB) []testimage.Case {
	t.Helper()
	return testbundle.Cases(t)
}

func corpusCase(t testing.TB, name string) testimage.Case {
	t.Helper()
	return testbundle.Case(t, name)
}

// storeCase puts a case in a fresh store and returns the stored image.
func storeCase(t testing.TB, c testimage.Case) (*rootfs.Store, rootfs.Image) {
	t.Helper()
	return testbundle.Store(t, c, c.Name)
}

// unpack stores a case and unpacks it into a fresh bundle, the way
// `nexcage unpack` would.
func unpack(t testing.TB, c testimage.Case, rootless bool) *convert.Bundle {
	t.Helper()
	b, err := convert.LoadBundle(testbundle.Unpack(t, c, rootfs.UnpackOptions{Rootless: rootless}))
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
