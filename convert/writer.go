package convert

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"time"

	"github.com/nexcage/nexcage/internal/tartree"
	"github.com/nexcage/nexcage/internal/zframe"
)

// WriteTar serialises a tree as a template archive: PAX, members "./"-
// prefixed with "./" first, depth-first in bytewise name order (what
// `tar --sort=name -C rootfs -cf - .` writes), numeric owners, the first
// member of a hard link group carrying the content, xattrs as
// SCHILY.xattr records. mtimes later than clamp (when non-zero) are clamped.
func WriteTar(ctx context.Context, w io.Writer, t *tartree.Tree, clamp time.Time) error {
	return writeTar(ctx, w, nil, t, clamp)
}

// framer is a compressor that cuts frames where the archive asks: around
// large files' contents, whose frames it may already have.
type framer interface {
	cut()
	reuse(c *tartree.Compressed, size int64) (bool, error)
}

// writeTar is WriteTar telling fr, the compressor below w, where large
// files' contents begin and end.
func writeTar(ctx context.Context, w io.Writer, fr framer, t *tartree.Tree, clamp time.Time) error {
	tw := tar.NewWriter(w)
	first := map[uint64]string{} // inode -> member name that carries the content
	buf := make([]byte, 1<<20)
	err := t.Walk(func(p string, n *tartree.Node) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		name := "./"
		if p != "." {
			name = "./" + p
			if n.Type == tar.TypeDir {
				name += "/"
			}
		}
		hdr := &tar.Header{
			Typeflag: n.Type,
			Name:     name,
			Linkname: n.Linkname,
			Mode:     n.Mode,
			Uid:      n.UID,
			Gid:      n.GID,
			ModTime:  n.ModTime,
			Devmajor: n.Devmajor,
			Devminor: n.Devminor,
			Format:   tar.FormatPAX,
		}
		if !clamp.IsZero() && hdr.ModTime.After(clamp) {
			hdr.ModTime = clamp
		}
		if len(n.Xattrs) > 0 {
			hdr.PAXRecords = make(map[string]string, len(n.Xattrs))
			for k, v := range n.Xattrs {
				hdr.PAXRecords["SCHILY.xattr."+k] = v
			}
		}
		if n.Type == tar.TypeReg {
			if n.Inode != 0 {
				if target, ok := first[n.Inode]; ok {
					hdr.Typeflag, hdr.Linkname = tar.TypeLink, target
					return tw.WriteHeader(hdr)
				}
				first[n.Inode] = name
			}
			hdr.Size = n.Size
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		if n.Type != tar.TypeReg || n.Size == 0 {
			return nil
		}
		if fr != nil && zframe.OwnFrames(n.Size) {
			return copyFramed(tw, fr, n, name, buf)
		}
		return copyContent(tw, n, name, buf)
	})
	if err != nil {
		return err
	}
	return tw.Close()
}

// copyFramed writes a large file's content as frames of its own, reusing
// the ones compressed ahead: the tar writer is then fed zeros, which fr
// drops, only to keep its count.
func copyFramed(tw *tar.Writer, fr framer, n *tartree.Node, name string, buf []byte) error {
	fr.cut()
	reused, err := fr.reuse(n.Compressed, n.Size)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	if reused {
		clear(buf)
		for left := n.Size; left > 0; {
			k := min(left, int64(len(buf)))
			if _, err := tw.Write(buf[:k]); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			left -= k
		}
	} else if err := copyContent(tw, n, name, buf); err != nil {
		return err
	}
	fr.cut()
	return nil
}

// copyContent writes exactly n.Size bytes: a file that changed size since
// it was listed would otherwise corrupt the archive.
func copyContent(tw *tar.Writer, n *tartree.Node, name string, buf []byte) error {
	rc, err := n.Open()
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	defer rc.Close()
	written, err := io.CopyBuffer(tw, io.LimitReader(rc, n.Size), buf)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	if written != n.Size {
		return fmt.Errorf("%s: the file shrank from %d to %d bytes while it was being read: is something changing the rootfs?", name, n.Size, written)
	}
	return nil
}
