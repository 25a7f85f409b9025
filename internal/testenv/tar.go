package testenv

import (
	"archive/tar"
	"io"
	"iter"
	"testing"
)

// TarMembers reads r as a tar archive: each member's header, in archive
// order, and its body (read it before the next member, or not at all). A
// malformed archive fails the test.
func TarMembers(t testing.TB, r io.Reader) iter.Seq2[*tar.Header, io.Reader] {
	return func(yield func(*tar.Header, io.Reader) bool) {
		tr := tar.NewReader(r)
		for {
			h, err := tr.Next()
			if err == io.EOF {
				return
			}
			if err != nil {
				t.Fatalf("tar: %v", err)
			}
			if !yield(h, tr) {
				return
			}
		}
	}
}
