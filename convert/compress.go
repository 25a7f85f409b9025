package convert

import (
	"fmt"
	"io"
	"runtime"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/klauspost/pgzip"
	"github.com/ulikunitz/xz"
)

// Compression is a template compression PVE reads (proxmox.md §1).
type Compression string

const (
	Zstd Compression = "zstd"
	Gzip Compression = "gzip"
	XZ   Compression = "xz"
)

// Suffix is the template file suffix PVE recognises for c.
func (c Compression) Suffix() string {
	switch c {
	case Gzip:
		return ".tar.gz"
	case XZ:
		return ".tar.xz"
	}
	return ".tar.zst"
}

// DefaultLevel is what `zstd`, `gzip` and `xz` use without a level flag.
func (c Compression) DefaultLevel() int {
	switch c {
	case Gzip:
		return 6
	case XZ:
		return 6
	}
	return 3
}

// ParseCompression accepts zstd, gzip and xz.
func ParseCompression(s string) (Compression, error) {
	switch Compression(strings.ToLower(s)) {
	case Zstd, "zst":
		return Zstd, nil
	case Gzip, "gz":
		return Gzip, nil
	case XZ:
		return XZ, nil
	}
	return "", fmt.Errorf("compression %q is not one PVE reads: use zstd, gzip or xz", s)
}

// CompressionFromName infers the compression from a template file name.
func CompressionFromName(name string) (Compression, bool) {
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

// checkLevel validates a level for c (0 means the default).
func checkLevel(c Compression, level int) error {
	lo, hi := 1, 9
	if c == Zstd {
		hi = 22
	}
	if level != 0 && (level < lo || level > hi) {
		return fmt.Errorf("--level %d is out of range for %s: use %d to %d", level, c, lo, hi)
	}
	return nil
}

// compressor wraps w. Output must depend only on the input and the options,
// never on the machine: zstd always runs its block-parallel mode with at
// least two workers (the split into jobs depends on the window, not on the
// worker count), and gzip's parallel blocks have a fixed size.
func compressor(w io.Writer, c Compression, level int) (io.WriteCloser, error) {
	if level == 0 {
		level = c.DefaultLevel()
	}
	workers := max(runtime.GOMAXPROCS(0), 2)
	switch c {
	case Zstd:
		return zstd.NewWriter(w,
			zstd.WithEncoderLevel(zstd.EncoderLevelFromZstd(level)),
			zstd.WithEncoderConcurrency(workers),
			zstd.WithConcurrentBlocks(true),
			zstd.WithEncoderCRC(true))
	case Gzip:
		zw, err := pgzip.NewWriterLevel(w, level)
		if err != nil {
			return nil, err
		}
		if err := zw.SetConcurrency(1<<20, workers); err != nil {
			return nil, err
		}
		return zw, nil
	case XZ:
		cfg := xz.WriterConfig{DictCap: 1 << (18 + level)}
		return cfg.NewWriter(w)
	}
	return nil, fmt.Errorf("unknown compression %q", c)
}
