package convert

import (
	"archive/tar"
	"context"
	"io"
	"time"

	"github.com/nexcage/nexcage/tartree"
)

// RefWriteTar is WriteTar as archive/tar's Writer serialises the same
// members: the reference the writer's own serialisation must match byte
// for byte.
func RefWriteTar(ctx context.Context, w io.Writer, t *tartree.Tree, clamp time.Time) error {
	tw := tar.NewWriter(w)
	links := linker{first: map[uint64]string{}}
	err := t.Walk(func(p string, n *tartree.Node) error {
		hdr := links.header(p, n, clamp, nil)
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if hdr.Typeflag != tar.TypeReg || hdr.Size == 0 {
			return nil
		}
		rc, err := n.Open()
		if err != nil {
			return err
		}
		defer rc.Close()
		_, err = io.Copy(tw, rc)
		return err
	})
	if err != nil {
		return err
	}
	return tw.Close()
}
