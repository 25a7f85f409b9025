package rootfs

import (
	"archive/tar"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/nexcage/nexcage/internal/errkind"
	"github.com/nexcage/nexcage/internal/limits"
	"github.com/nexcage/nexcage/progress"
)

// checkMetadata refuses a manifest, index or config blob over
// MaxMetadataSize before go-containerregistry reads it whole: by the size
// its descriptor claims (a registry serves no more than that), and in a
// layout by the size of the file itself, which may claim anything.
func (s *source) checkMetadata(d v1.Descriptor, what string) error {
	if d.Size > MaxMetadataSize {
		return limits.Errorf(nil, limits.MetadataSize, d.Size, MaxMetadataSize, "%s: %s %s is %s by its descriptor, more than %s, the most nexcage reads of a manifest or config: refusing it unread", s.ref, what, d.Digest, progress.HumanBytes(d.Size), progress.HumanBytes(MaxMetadataSize))
	}
	if s.layout == "" || d.Digest.Algorithm == "" || strings.ContainsAny(d.Digest.Algorithm+d.Digest.Hex, "/.") {
		return nil
	}
	fi, err := os.Stat(filepath.Join(s.layout, "blobs", d.Digest.Algorithm, d.Digest.Hex))
	if err != nil {
		return nil // the read that follows says what is missing
	}
	if fi.Size() > MaxMetadataSize {
		return limits.Errorf(nil, limits.MetadataSize, fi.Size(), MaxMetadataSize, "%s: %s %s is a %s file, more than %s, the most nexcage reads of a manifest or config: refusing it unread", s.ref, what, d.Digest, progress.HumanBytes(fi.Size()), progress.HumanBytes(MaxMetadataSize))
	}
	if fi.Size() != d.Size {
		return errkind.Errorf(ErrDigestMismatch, "%s: %s %s is %d bytes, its descriptor says %d: the layout is corrupt", s.ref, what, d.Digest, fi.Size(), d.Size)
	}
	return nil
}

// checkConfig checks the image's config blob before it is read.
func (s *source) checkConfig(img v1.Image) error {
	m, err := img.Manifest()
	if err != nil {
		return nil // the read that follows reports it
	}
	return s.checkMetadata(m.Config, "the image config")
}

// scanDockerArchive reads a docker-archive's member headers: no member
// may claim more than the archive file holds, which only a sparse member
// can (docker save writes none, and go-containerregistry would read it
// all, hashing or in memory), and no JSON member may be over
// MaxMetadataSize.
func scanDockerArchive(file string) error {
	f, err := os.Open(file)
	if err != nil {
		return nil // the archive reader reports it
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil
	}
	tr := tar.NewReader(f)
	var total int64
	for {
		hdr, err := tr.Next()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return nil // not a tar: the archive reader says so in its words
		}
		if strings.HasSuffix(hdr.Name, ".json") && hdr.Size > MaxMetadataSize {
			return limits.Errorf(nil, limits.MetadataSize, hdr.Size, MaxMetadataSize, "docker-archive %s: member %s is %s, more than %s, the most nexcage reads of a manifest or config: refusing it unread", file, quoteName(hdr.Name), progress.HumanBytes(hdr.Size), progress.HumanBytes(MaxMetadataSize))
		}
		if total += hdr.Size; total > fi.Size() {
			return archiveClaims(file, "docker-archive", hdr.Name, total, fi.Size())
		}
	}
}

// archiveClaims is the refusal of an archive whose members claim more
// bytes than its file holds: a sparse member, a few bytes that unpack to
// gigabytes.
func archiveClaims(file, kind, member string, total, size int64) error {
	return limits.Errorf(nil, limits.ArchiveSize, total, size, "%s %s: its members up to %s claim %s, more than the %s the archive file holds (a sparse member, which image archives never have): refusing it", kind, file, quoteName(member), progress.HumanBytes(total), progress.HumanBytes(size))
}
