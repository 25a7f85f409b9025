package convert

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
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

// framer is a compressor that cuts frames where the archive asks (see
// internal/zframe), and takes frames compressed ahead for the bytes that
// follow a cut.
type framer interface {
	cut()
	reuse(c *tartree.Compressed, size int64) (bool, error)
}

// writeTar is WriteTar telling fr, the compressor below w, where the
// archive is cut into frames (see internal/zframe), and reusing the frames
// compressed ahead: large files' contents, and runs of members that turn
// out to be exactly the members here.
func writeTar(ctx context.Context, w io.Writer, fr framer, t *tartree.Tree, clamp time.Time) error {
	tw := tar.NewWriter(w)
	var members []member
	t.Walk(func(p string, n *tartree.Node) error {
		members = append(members, member{p, n})
		return nil
	})
	links := linker{first: map[uint64]string{}}
	buf := make([]byte, 1<<20)
	// Members before reusedTo are in a run whose frames were queued: the
	// writer still feeds their bytes, which fr drops, only for its count.
	reusedTo := 0
	afterLarge := false
	for i, m := range members {
		if err := ctx.Err(); err != nil {
			return err
		}
		if fr != nil && (i == 0 || afterLarge || zframe.CutBefore(m.path)) {
			if err := tw.Flush(); err != nil {
				return err
			}
			fr.cut()
			if i >= reusedTo {
				k, err := reuseRun(fr, members, i, t.Runs[m.path], &links, clamp)
				if err != nil {
					return err
				}
				reusedTo = i + k
			}
		}
		afterLarge = false
		hdr := links.header(m.path, m.node, clamp, nil)
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("%s: %w", hdr.Name, err)
		}
		if hdr.Typeflag != tar.TypeReg || hdr.Size == 0 {
			continue
		}
		var err error
		switch {
		case fr != nil && zframe.OwnFrames(hdr.Size):
			err = copyFramed(tw, fr, m.node, hdr.Name, buf)
			afterLarge = true
		case i < reusedTo:
			err = writeDropped(tw, hdr.Size)
		default:
			err = copyContent(tw, m.node, hdr.Name, buf)
		}
		if err != nil {
			return err
		}
	}
	return tw.Close()
}

type member struct {
	path string
	node *tartree.Node
}

// linker gives each hard link group's first member the content and makes
// the others links to it.
type linker struct{ first map[uint64]string }

// header is the member header of n at p. With pending set, the members
// seen are recorded there instead, for a look ahead.
func (l *linker) header(p string, n *tartree.Node, clamp time.Time, pending map[uint64]string) *tar.Header {
	linkTo := ""
	if n.Type == tar.TypeReg && n.Inode != 0 {
		if target, ok := l.first[n.Inode]; ok {
			linkTo = target
		} else if target, ok := pending[n.Inode]; ok {
			linkTo = target
		} else if pending != nil {
			pending[n.Inode] = tartree.MemberName(p, n)
		} else {
			l.first[n.Inode] = tartree.MemberName(p, n)
		}
	}
	return tartree.Header(p, n, clamp, linkTo)
}

// reuseRun looks for a run compressed ahead that holds exactly the members
// from members[i] on: the same headers, contents read from the same
// places, and a cut after it here too. It queues the first that does and
// returns how many members it holds, or 0.
func reuseRun(fr framer, members []member, i int, runs []*tartree.Run, links *linker, clamp time.Time) (int, error) {
	for _, r := range runs {
		end := i + r.Count
		switch {
		case end > len(members):
			continue
		case r.End == tartree.BeforeCut && (end == len(members) || !zframe.CutBefore(members[end].path)):
			continue
		case r.End == tartree.EndOfArchive && end != len(members):
			continue
		}
		if !runHolds(r, members[i:end], links, clamp) {
			continue
		}
		reused, err := fr.reuse(&r.Compressed, r.Raw)
		if err != nil || reused {
			return r.Count, err
		}
	}
	return 0, nil
}

func runHolds(r *tartree.Run, ms []member, links *linker, clamp time.Time) bool {
	h := sha256.New()
	pending := map[uint64]string{}
	sources := r.Sources
	beforeContent := false
	for j, m := range ms {
		hdr := links.header(m.path, m.node, clamp, pending)
		b, err := tartree.EncodeHeader(hdr)
		if err != nil {
			return false
		}
		h.Write(b)
		if hdr.Typeflag != tar.TypeReg || hdr.Size == 0 {
			continue
		}
		if zframe.OwnFrames(hdr.Size) {
			// Its content has frames of its own: only the last member
			// of a run that stops before them may be one.
			if j != len(ms)-1 || r.End != tartree.BeforeContent {
				return false
			}
			beforeContent = true
			continue
		}
		if len(sources) == 0 || sources[0] != m.node.Source {
			return false
		}
		sources = sources[1:]
	}
	// A run that stops before content must stop where this archive does.
	return beforeContent == (r.End == tartree.BeforeContent) && len(sources) == 0 && bytes.Equal(h.Sum(nil), r.Headers[:])
}

// zeros stand for content whose frames were queued: fr drops them.
var zeros [64 << 10]byte

// writeDropped feeds size bytes of content whose frames were queued.
func writeDropped(tw *tar.Writer, size int64) error {
	for left := size; left > 0; {
		k := min(left, int64(len(zeros)))
		if _, err := tw.Write(zeros[:k]); err != nil {
			return err
		}
		left -= k
	}
	return nil
}

// copyFramed writes a large file's content as frames of its own, reusing
// the ones compressed ahead: the tar writer is then fed zeros, which fr
// drops, only to keep its count.
func copyFramed(tw *tar.Writer, fr framer, n *tartree.Node, name string, buf []byte) error {
	fr.cut()
	reused, err := fr.reuse(n.Compressed, n.Size+zframe.Pad(n.Size))
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	if reused {
		err = writeDropped(tw, n.Size)
	} else {
		err = copyContent(tw, n, name, buf)
	}
	if err == nil {
		err = tw.Flush() // the padding ends the content's last frame
	}
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
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
