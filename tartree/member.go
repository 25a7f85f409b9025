package tartree

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"time"
)

// MemberName is the archive name of the node at tree path p: "./" for the
// root, "./"+p otherwise, with a trailing slash for directories.
func MemberName(p string, n *Node) string {
	if p == "." {
		return "./"
	}
	if n.Type == tar.TypeDir {
		return "./" + p + "/"
	}
	return "./" + p
}

// Header is the template member header of the node at p. mtimes later
// than clamp (when non-zero) are clamped. A hard link (linkTo not empty)
// carries the metadata of its group and no content.
func Header(p string, n *Node, clamp time.Time, linkTo string) *tar.Header {
	hdr := &tar.Header{
		Typeflag: n.Type,
		Name:     MemberName(p, n),
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
	switch {
	case linkTo != "":
		hdr.Typeflag, hdr.Linkname = tar.TypeLink, linkTo
	case n.Type == tar.TypeReg:
		hdr.Size = n.Size
	}
	return hdr
}

// AppendHeader appends to dst the bytes a tar.Writer writes for hdr (its
// PAX records included), which depend on hdr alone. Passing the last
// result back as dst[:0] saves growing a buffer for every member.
func AppendHeader(dst []byte, hdr *tar.Header) ([]byte, error) {
	b := bytes.NewBuffer(dst)
	if err := tar.NewWriter(b).WriteHeader(hdr); err != nil {
		return dst, err
	}
	return b.Bytes(), nil
}

// Run is a stretch of the archive compressed ahead of time, from a frame
// cut to a frame cut: Count members whose encoded headers hash to Headers,
// the content-carrying ones read from Sources, in order. Raw is its length
// in the archive. It was compressed into Frames under Key.
type Run struct {
	Compressed
	Count   int
	Headers [sha256.Size]byte
	Sources []Section
	Raw     int64
	// End is how the run ends: where the archive is cut after it.
	End RunEnd
}

// RunEnd is what follows a run in the archive it was prepared for.
type RunEnd int

const (
	// BeforeCut: a member before which the archive is always cut.
	BeforeCut RunEnd = iota
	// BeforeContent: the last member is a file whose content has frames
	// of its own, which the run stops before.
	BeforeContent
	// EndOfArchive: the archive's end-of-archive blocks, which the run
	// holds.
	EndOfArchive
)
