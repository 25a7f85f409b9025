package convert_test

import (
	"context"
	"testing"

	"github.com/nexcage/nexcage/convert"
	"github.com/nexcage/nexcage/internal/testbundle"
	"github.com/nexcage/nexcage/internal/testimage"
	"github.com/nexcage/nexcage/rootfs"
)

// Convert reads the corpus and files as every stage's tests do.
var (
	cases      = testbundle.Cases
	corpusCase = testbundle.Case
	readFile   = testbundle.ReadFile
	entries    = testbundle.DirNames // a directory's names
)

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
