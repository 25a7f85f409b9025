package rootfs

import (
	"context"
	"testing"
)

// BenchmarkFlatten reads Alpine's layer into a tree: MB/s of the
// uncompressed layer.
func BenchmarkFlatten(b *testing.B) {
	s := newStore(b)
	img := pullCase(b, s, corpusCase(b, "alpine-amd64"))
	b.SetBytes(8089600) // the minirootfs tar's size
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		f, err := s.Flatten(context.Background(), img, FlattenOptions{})
		if err != nil {
			b.Fatal(err)
		}
		f.Close()
	}
}

// BenchmarkUnpack is the staged reference path, for comparison.
func BenchmarkUnpack(b *testing.B) {
	s := newStore(b)
	img := pullCase(b, s, corpusCase(b, "alpine-amd64"))
	b.SetBytes(8089600)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		dir := b.TempDir()
		if _, err := s.Unpack(context.Background(), img, dir+"/b", UnpackOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}
