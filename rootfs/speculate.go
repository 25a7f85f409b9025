package rootfs

import (
	"archive/tar"
	"path"
	"strings"
	"time"

	"github.com/nexcage/nexcage/internal/zframe"
	"github.com/nexcage/nexcage/tartree"
)

// speculator compresses runs of a layer's members (see internal/zframe)
// while the layer is read, betting that the template will hold them just
// as the layer does: in the layer's order, with the same headers and
// contents. That holds for every member no upper layer touches when the
// layer lists its members in archive order, as image builders write them;
// the template writer checks each run and compresses what it cannot use.
type speculator struct {
	pre   *zframe.Precompressor
	clamp time.Time
	wait  bool

	run       *zframe.RunWriter // nil between a failed run and the next cut
	first     string            // the tree path of run's first member
	prevLarge bool              // the last member's content has frames of its own
	last      string            // the last member's path, to check the order
	stopped   bool              // the layer is not in archive order
	files     map[string]*tartree.Node
	runs      map[string][]*tartree.Run
	header    []byte // the last member's, its buffer reused
}

// newSpeculator returns nil when nothing is precompressed. The lowest
// layer's runs wait for buffers like large files do: it is the bulk of
// most images and nothing below it can change its members. An upper
// layer's runs hold only where it adds a subtree of its own, so they use
// buffers that happen to be free and never hold up the read.
func newSpeculator(pre *zframe.Precompressor, clamp time.Time, lowest bool) *speculator {
	if pre == nil {
		return nil
	}
	return &speculator{pre: pre, clamp: clamp, wait: lowest, files: map[string]*tartree.Node{}, runs: map[string][]*tartree.Run{}}
}

// member adds the entry hdr, whose cleaned name is clean, to the current
// run; spill is where a regular file's content goes otherwise. It returns
// the run the content and its padding go to, or nil, and where the content
// is to be read from: the run itself when it Holds, so that the content
// need not be spilled too.
func (s *speculator) member(hdr *tar.Header, clean string, spill tartree.Section) (*zframe.RunWriter, tartree.Section) {
	run := s.add(hdr, clean)
	if run == nil {
		return nil, spill
	}
	src := spill
	if run.Holds() {
		src = run.Section()
	}
	run.Content(src)
	return run, src
}

// add adds the entry to the current run, and returns the run when the
// entry's content goes to it too.
func (s *speculator) add(hdr *tar.Header, clean string) *zframe.RunWriter {
	if s == nil || s.stopped || strings.HasPrefix(path.Base(clean), ".wh.") {
		return nil // whiteouts are no member of the template
	}
	if s.last != "" && !archiveOrder(s.last, clean) {
		s.abort()
		s.stopped = true
		return nil
	}
	s.last = clean
	var n *tartree.Node
	linkTo := ""
	switch hdr.Typeflag {
	case tar.TypeLink:
		target, err := cleanEntryName(hdr.Linkname)
		if n = s.files[target]; err != nil || n == nil {
			s.abort() // a link to another layer's file: not this layer's to guess
			s.prevLarge = false
			return nil
		}
		linkTo = "./" + target
	case tar.TypeReg, tar.TypeRegA:
		n = nodeFor(hdr)
		n.Type, n.Size = tar.TypeReg, hdr.Size
		s.files[clean] = n
	default:
		n = nodeFor(hdr)
		if hdr.Typeflag == tar.TypeSymlink {
			s.files[clean] = n // hard links to symlinks stay links too
		}
	}
	large := linkTo == "" && n.Type == tar.TypeReg && zframe.OwnFrames(n.Size)
	switch {
	case clean == "." && !s.wait:
		// The archive starts with the root, then the lowest layer's
		// members: an upper layer's root is followed by its own only
		// when nothing is below it, and images of many layers each
		// starting with "./" would compress all of them for nothing.
		s.end(tartree.BeforeCut)
	case clean == "." || zframe.CutBefore(clean) || s.prevLarge:
		s.end(tartree.BeforeCut)
		s.run, s.first = s.pre.Run(s.wait), clean
	}
	s.prevLarge = large
	if s.run == nil {
		return nil
	}
	var err error
	s.header, err = tartree.AppendHeader(s.header[:0], tartree.Header(clean, n, s.clamp, linkTo))
	if err != nil {
		s.abort()
		return nil
	}
	s.run.Header(s.header)
	if large {
		s.end(tartree.BeforeContent)
		return nil
	}
	if linkTo != "" || n.Type != tar.TypeReg || n.Size == 0 {
		return nil
	}
	return s.run
}

// end closes the current run, keeping it unless it gave up.
func (s *speculator) end(how tartree.RunEnd) {
	if s == nil || s.run == nil {
		return
	}
	if r := s.run.End(how); r != nil {
		s.runs[s.first] = append(s.runs[s.first], r)
	}
	s.run = nil
}

func (s *speculator) abort() {
	if s.run != nil {
		s.run.Abort()
		s.run = nil
	}
}

// finish ends the layer: its last run holds the end of the archive, which
// is right when no upper layer adds members after it.
func (s *speculator) finish() map[string][]*tartree.Run {
	if s == nil {
		return nil
	}
	s.end(tartree.EndOfArchive)
	return s.runs
}

// archiveOrder reports whether path a comes before b in a template:
// depth first, names compared bytewise, a directory before its contents.
// That is bytewise order with '/' below every other byte.
func archiveOrder(a, b string) bool {
	if a == "." || b == "." {
		return a == "." && b != "."
	}
	for i := 0; i < len(a) && i < len(b); i++ {
		ca, cb := a[i], b[i]
		if ca == cb {
			continue
		}
		if ca == '/' {
			return true
		}
		if cb == '/' {
			return false
		}
		return ca < cb
	}
	return len(a) < len(b)
}
