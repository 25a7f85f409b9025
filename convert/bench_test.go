package convert_test

import (
	"archive/tar"
	"context"
	"io"
	"testing"
	"time"

	"github.com/nexcage/nexcage/convert"
	"github.com/nexcage/nexcage/rootfs"
	"github.com/nexcage/nexcage/tartree"
)

// benchTree flattens Alpine once; the benchmarks then time the writer.
func benchTree(b *testing.B) (*tartree.Tree, int64) {
	b.Helper()
	s, img := storeCase(b, corpusCase(b, "alpine-amd64"))
	f, err := s.Flatten(context.Background(), img, rootfs.FlattenOptions{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { f.Close() })
	var total int64
	f.Tree.Walk(func(_ string, n *tartree.Node) error {
		if n.Type == tar.TypeReg {
			total += n.Size
		}
		return nil
	})
	return f.Tree, total
}

// BenchmarkWriteTar is the tar writer alone: MB/s of file content.
func BenchmarkWriteTar(b *testing.B) {
	tree, total := benchTree(b)
	b.SetBytes(total)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := convert.WriteTar(context.Background(), io.Discard, tree, time.Time{}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkWriteTemplate is the writer with zstd, as build runs it.
func BenchmarkWriteTemplate(b *testing.B) {
	tree, total := benchTree(b)
	spec := unpack(b, corpusCase(b, "alpine-amd64"), false).Spec
	dir := b.TempDir()
	b.SetBytes(total)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := convert.Write(context.Background(), tree, spec, convert.Options{Output: dir + "/"}); err != nil {
			b.Fatal(err)
		}
	}
}
