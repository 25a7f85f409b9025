package convert

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"time"

	"github.com/nexcage/nexcage/internal/zframe"
	"github.com/nexcage/nexcage/tartree"
)

// WriteTar serialises a tree as a template archive: PAX, members "./"-
// prefixed with "./" first, depth-first in bytewise name order (what
// `tar --sort=name -C rootfs -cf - .` writes), numeric owners, the first
// member of a hard link group carrying the content, xattrs as
// SCHILY.xattr records. mtimes later than clamp (when non-zero) are clamped.
func WriteTar(ctx context.Context, w io.Writer, t *tartree.Tree, clamp time.Time) error {
	return writeTar(ctx, w, nil, nil, t, clamp)
}

// framer is a compressor that cuts frames where the archive asks (see
// internal/zframe), and takes frames compressed ahead for the size bytes
// that follow a cut, which are then not written to it.
type framer interface {
	cut()
	reuse(c *tartree.Compressed, size int64) (bool, error)
}

// writeTar is WriteTar telling fr, the compressor below w, where the
// archive is cut into frames (see internal/zframe), and reusing the frames
// compressed ahead: large files' contents, and runs of members that turn
// out to be exactly the members here. The bytes of reused frames are not
// written to w; skipped is told how many there were.
func writeTar(ctx context.Context, w io.Writer, fr framer, skipped func(int64), t *tartree.Tree, clamp time.Time) error {
	var members []member
	t.Walk(func(p string, n *tartree.Node) error {
		members = append(members, member{p, n})
		return nil
	})
	links := linker{first: map[uint64]string{}}
	buf := make([]byte, 1<<20)
	var encoded []byte // a member's header, the buffer reused
	// Members before reusedTo are in a run whose frames were queued; the
	// content of the last one follows the run when it stops before it.
	reusedTo, contentAfterRun, endInRun := 0, false, false
	afterLarge := false
	for i, m := range members {
		if err := ctx.Err(); err != nil {
			return err
		}
		if fr != nil && (i == 0 || afterLarge || zframe.CutBefore(m.path)) {
			fr.cut()
			if i >= reusedTo {
				r, err := reuseRun(fr, members, i, t.Runs[m.path], &links, clamp)
				if err != nil {
					return err
				}
				if r != nil {
					skipped(r.Raw)
					reusedTo, contentAfterRun, endInRun = i+r.Count, r.End == tartree.BeforeContent, r.End == tartree.EndOfArchive
				}
			}
		}
		afterLarge = false
		if i < reusedTo {
			// Its header, and its content unless the run stops before
			// it, are in the run's frames: only the link bookkeeping is
			// left to do.
			links.link(m.path, m.node, nil)
			if i == reusedTo-1 && contentAfterRun {
				if err := copyFramed(w, fr, skipped, m.node, tartree.MemberName(m.path, m.node), buf); err != nil {
					return err
				}
				afterLarge = true
			}
			continue
		}
		hdr := links.header(m.path, m.node, clamp, nil)
		var err error
		if encoded, err = tartree.AppendHeader(encoded[:0], hdr); err != nil {
			return fmt.Errorf("%s: %w", hdr.Name, err)
		}
		if _, err := w.Write(encoded); err != nil {
			return err
		}
		if hdr.Typeflag != tar.TypeReg || hdr.Size == 0 {
			continue
		}
		if fr != nil && zframe.OwnFrames(hdr.Size) {
			err = copyFramed(w, fr, skipped, m.node, hdr.Name, buf)
			afterLarge = true
		} else {
			err = copyContent(w, m.node, hdr.Name, buf)
		}
		if err != nil {
			return err
		}
	}
	if endInRun {
		return nil
	}
	_, err := w.Write(zeros[:1024]) // tar's two end-of-archive blocks
	return err
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
	return tartree.Header(p, n, clamp, l.link(p, n, pending))
}

// link returns the member n's content is already in, or "" when this
// member carries it, and records which that is.
func (l *linker) link(p string, n *tartree.Node, pending map[uint64]string) string {
	linkTo := ""
	// As GNU tar: regular files and symlinks are linked, fifos and
	// devices are not (see Node.Inode).
	if (n.Type == tar.TypeReg || n.Type == tar.TypeSymlink) && n.Inode != 0 {
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
	return linkTo
}

// reuseRun looks for a run compressed ahead that holds exactly the members
// from members[i] on: the same headers, contents read from the same
// places, and a cut after it here too. It queues the first that does and
// returns it, or nil.
func reuseRun(fr framer, members []member, i int, runs []*tartree.Run, links *linker, clamp time.Time) (*tartree.Run, error) {
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
		if err != nil {
			return nil, err
		}
		if reused {
			return r, nil
		}
	}
	return nil, nil
}

func runHolds(r *tartree.Run, ms []member, links *linker, clamp time.Time) bool {
	h := sha256.New()
	pending := map[uint64]string{}
	sources := r.Sources
	beforeContent := false
	var b []byte
	for j, m := range ms {
		hdr := links.header(m.path, m.node, clamp, pending)
		var err error
		if b, err = tartree.AppendHeader(b[:0], hdr); err != nil {
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

// zeros is tar padding.
var zeros [1024]byte

// copyFramed writes a large file's content and padding as frames of their
// own, reusing the ones compressed ahead.
func copyFramed(w io.Writer, fr framer, skipped func(int64), n *tartree.Node, name string, buf []byte) error {
	fr.cut()
	size := n.Size + zframe.Pad(n.Size)
	reused, err := fr.reuse(n.Compressed, size)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	if reused {
		skipped(size)
	} else if err := copyContent(w, n, name, buf); err != nil {
		return err
	}
	fr.cut()
	return nil
}

// copyContent writes exactly n.Size bytes and the padding after them: a
// file that changed size since it was listed would otherwise corrupt the
// archive.
func copyContent(w io.Writer, n *tartree.Node, name string, buf []byte) error {
	rc, err := n.Open()
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	defer rc.Close()
	written, err := io.CopyBuffer(w, io.LimitReader(rc, n.Size), buf)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	if written != n.Size {
		return fmt.Errorf("%s: the file shrank from %d to %d bytes while it was being read: is something changing the rootfs?", name, n.Size, written)
	}
	_, err = w.Write(zeros[:zframe.Pad(n.Size)])
	return err
}
