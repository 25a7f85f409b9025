package convert

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/nexcage/nexcage/internal/testenv"
	"github.com/nexcage/nexcage/tartree"
)

// FuzzWriteTar writes trees with odd names, modes and ids: no panic, the
// bytes archive/tar would write, and the archive reads back with every
// member ./-prefixed.
func FuzzWriteTar(f *testing.F) {
	f.Add("a/b/c", "x y", "café/日本", int64(0o4755), 100000, 65534, "target")
	f.Add("..", ".", "", int64(-1), -5, 0, "")
	f.Fuzz(func(t *testing.T, p1, p2, p3 string, mode int64, uid, gid int, link string) {
		defer testenv.Timed(t)()
		tree := tartree.New()
		for i, p := range []string{p1, p2, p3} {
			n := &tartree.Node{Type: tar.TypeReg, Mode: mode & 0o7777, UID: uid, GID: gid, ModTime: time.Unix(1, 0), Size: int64(len(p)), Open: func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(p)), nil }}
			if i == 1 {
				n = &tartree.Node{Type: tar.TypeSymlink, Linkname: link, Mode: 0o777}
			}
			tree.Put(p, n)
		}
		var buf bytes.Buffer
		if err := WriteTar(context.Background(), &buf, tree, time.Time{}); testenv.Refused(t, err) {
			return
		}
		var ref bytes.Buffer
		if err := RefWriteTar(context.Background(), &ref, tree, time.Time{}); err != nil || !bytes.Equal(buf.Bytes(), ref.Bytes()) {
			t.Fatalf("the archive differs from archive/tar's (%v)", err)
		}
		// An unreadable archive fails the test.
		for h := range testenv.TarMembers(t, &buf) {
			if !strings.HasPrefix(h.Name, "./") {
				t.Fatalf("member %q is not ./-prefixed", h.Name)
			}
		}
	})
}
