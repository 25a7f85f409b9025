package rootfs

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"

	"github.com/nexcage/nexcage/internal/errkind"
	"github.com/nexcage/nexcage/internal/limits"
	"github.com/nexcage/nexcage/internal/saferoot"
	"github.com/nexcage/nexcage/progress"
)

// validBlobDigest refuses a digest that could not name a blob file: the
// store and manifests are attacker-written, and an unchecked digest
// such as "sha256:../../dev/zero" would be joined into a path.
func validBlobDigest(d digest.Digest) error {
	switch d.Algorithm() {
	case digest.SHA256, digest.SHA512:
	default:
		return errkind.Errorf(errCorruptBlob, "invalid blob digest %q: only sha256 and sha512 are supported", string(d))
	}
	if err := d.Validate(); err != nil {
		return errkind.Errorf(errCorruptBlob, "invalid blob digest %q: %v", string(d), err)
	}
	return nil
}

// openBlobFile opens a blob of the store without following a symlink
// anywhere under the store directory and without blocking on a FIFO, and
// requires a regular file. size < 0 accepts any size (the caller bounds
// its read); otherwise the file must be exactly size bytes.
func (s *Store) openBlobFile(d digest.Digest, size int64) (*os.File, error) {
	if err := validBlobDigest(d); err != nil {
		return nil, err
	}
	root, err := saferoot.Open(s.Dir)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	f, fi, err := root.OpenRegular("blobs/" + d.Algorithm().String() + "/" + d.Encoded())
	switch {
	case errors.Is(err, unix.ELOOP):
		return nil, errkind.Errorf(errCorruptBlob, "blob %s in the store %s is a symlink, not a file", d, s.Dir)
	case errors.Is(err, saferoot.ErrNotRegular):
		return nil, errkind.Errorf(errCorruptBlob, "blob %s in the store %s is not a regular file (%s)", d, s.Dir, fi.Mode().Type())
	case err != nil:
		return nil, err
	}
	if size >= 0 && fi.Size() != size {
		f.Close()
		return nil, errkind.Errorf(errCorruptBlob, "blob %s in the store %s is %d bytes, not the %d its descriptor says", d, s.Dir, fi.Size(), size)
	}
	return f, nil
}

// OpenBlob opens the blob a descriptor names, checked as openBlobFile
// does, and reads no more than the descriptor's size: a blob that grows
// while it is read is an error, not an endless stream.
func (s *Store) OpenBlob(d digest.Digest, size int64) (io.ReadCloser, error) {
	if size < 0 {
		return nil, errkind.Errorf(errCorruptBlob, "blob %s has a negative size %d", d, size)
	}
	f, err := s.openBlobFile(d, size)
	if err != nil {
		return nil, err
	}
	return &sizedBlob{f: f, r: io.LimitReader(f, size+1), size: size, d: d}, nil
}

type sizedBlob struct {
	f    *os.File
	r    io.Reader
	n    int64
	size int64
	d    digest.Digest
}

func (b *sizedBlob) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	b.n += int64(n)
	if b.n > b.size {
		return n - int(b.n-b.size), errkind.Errorf(errCorruptBlob, "blob %s is longer than its %d bytes", b.d, b.size)
	}
	return n, err
}

func (b *sizedBlob) Close() error { return b.f.Close() }

// readBlob reads a metadata blob (manifest, config) of at most max bytes.
func (s *Store) readBlob(d digest.Digest, size, max int64, what string) ([]byte, error) {
	f, err := s.openBlobFile(d, -1)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	// The cap first: it is what a user can raise, and a sparse file can
	// claim terabytes whatever its descriptor says.
	if fi.Size() > max {
		return nil, limits.Errorf(nil, limits.MetadataSize, fi.Size(), max, "%s is %s, more than %s, the most nexcage reads of a manifest, config or other metadata: refusing it unread", what, progress.HumanBytes(fi.Size()), progress.HumanBytes(max))
	}
	if size >= 0 && fi.Size() != size {
		return nil, errkind.Errorf(errCorruptBlob, "blob %s in the store %s is %d bytes, not the %d its descriptor says", d, s.Dir, fi.Size(), size)
	}
	return limits.ReadAll(f, max, what)
}

// blobMissing words an open error: a missing blob asks for a pull, any
// other failure (a hostile digest, a symlink, a FIFO) says what it is.
func blobMissing(err error, what string, s *Store) error {
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%s is missing from the store %s: pull the image again", what, s.Dir)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// shortDigest is a digest's first 12 hex digits for progress labels,
// whole when shorter (a hostile "sha256:ab" is not validated yet there,
// and a stored image may record no source digest at all).
func shortDigest(d digest.Digest) string {
	// Not d.Encoded(): it panics on a string without an algorithm.
	e := string(d)
	if _, hex, ok := strings.Cut(e, ":"); ok {
		e = hex
	}
	if len(e) > 12 {
		return e[:12]
	}
	return e
}
