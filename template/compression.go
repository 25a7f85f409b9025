package template

import (
	"errors"
	"strings"

	"github.com/nexcage/nexcage/internal/errkind"
)

// Compression is a template compression PVE reads (proxmox.md §1).
type Compression string

// The compressions PVE's pct create decompresses, by the file's suffix.
const (
	Zstd Compression = "zstd"
	Gzip Compression = "gzip"
	XZ   Compression = "xz"
)

// ErrCompression marks a compression name that is not one PVE reads.
var ErrCompression = errors.New("unknown compression")

// Suffix is the template file suffix PVE recognises for c: .tar.zst,
// .tar.gz or .tar.xz (.tar.zst for anything else).
func (c Compression) Suffix() string {
	switch c {
	case Gzip:
		return ".tar.gz"
	case XZ:
		return ".tar.xz"
	}
	return ".tar.zst"
}

// DefaultLevel is the level the zstd, gzip and xz commands use when none
// is given.
func (c Compression) DefaultLevel() int {
	switch c {
	case Gzip:
		return 6
	case XZ:
		return 6
	}
	return 3
}

// Levels is the range of compression levels c takes.
func (c Compression) Levels() (lo, hi int) {
	if c == Zstd {
		return 1, 22
	}
	return 1, 9
}

// ParseCompression accepts zstd (or zst), gzip (or gz) and xz, in any
// case; other names are an ErrCompression.
func ParseCompression(s string) (Compression, error) {
	switch Compression(strings.ToLower(s)) {
	case Zstd, "zst":
		return Zstd, nil
	case Gzip, "gz":
		return Gzip, nil
	case XZ:
		return XZ, nil
	}
	return "", errkind.Errorf(ErrCompression, "compression %q is not one PVE reads: use zstd, gzip or xz", s)
}

// CompressionFromName infers the compression from a template file name's
// suffix, in any case, and .tgz as gzip, so that a check can say what a
// file is. A name nexcage writes or PVE accepts ends in exactly
// c.Suffix(): an upper-case suffix or .tgz gives ok, but not that.
func CompressionFromName(name string) (c Compression, ok bool) {
	lower := strings.ToLower(name)
	for _, c := range []Compression{Zstd, Gzip, XZ} {
		if strings.HasSuffix(lower, c.Suffix()) {
			return c, true
		}
	}
	if strings.HasSuffix(lower, ".tgz") {
		return Gzip, true
	}
	return "", false
}
