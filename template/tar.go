package template

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// ErrEmpty is returned by NewTarReader and OpenTar for an empty file.
var ErrEmpty = errors.New("the template is empty")

// ErrUnknownFormat is returned by NewTarReader and OpenTar for content
// that is neither a zstd, gzip or xz stream nor a plain tar.
var ErrUnknownFormat = errors.New("neither a zstd, gzip or xz compressed tar nor a plain tar")

// FormatError is a stream whose first bytes say Compression but whose
// header the decompressor refuses.
type FormatError struct {
	Compression Compression
	Err         error
}

// Error says which compression the header claimed and why it was refused.
func (e *FormatError) Error() string { return fmt.Sprintf("not valid %s (%v)", e.Compression, e.Err) }

// Unwrap returns the decompressor's error.
func (e *FormatError) Unwrap() error { return e.Err }

// Decompress returns the tar stream inside r, which is compressed with c,
// or a plain tar when c is "". It reads r as it is read, no further; the
// compression's own checksums (zstd frames, gzip's trailer) are checked
// only when the stream is read to its end. Errors are the decompressor's
// own. Close releases the decompressor, not r.
func Decompress(r io.Reader, c Compression) (io.ReadCloser, error) {
	switch c {
	case "":
		return io.NopCloser(r), nil
	case Gzip:
		return gzip.NewReader(r)
	case XZ:
		zr, err := xz.NewReader(r)
		if err != nil {
			return nil, err
		}
		return io.NopCloser(zr), nil
	case Zstd:
		// One goroutine: templates are read beside other work, and the
		// frames are decoded as fast as the tar is consumed.
		zr, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, err
		}
		return zstdReadCloser{zr}, nil
	}
	return nil, fmt.Errorf("compression %q: %w", c, ErrCompression)
}

type zstdReadCloser struct{ *zstd.Decoder }

func (z zstdReadCloser) Close() error { z.Decoder.Close(); return nil }

// detect tells the compression from a stream's first bytes (512 of them,
// or all there are): the file's name may lie.
func detect(head []byte) (Compression, error) {
	switch {
	case bytes.HasPrefix(head, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		return Zstd, nil
	case bytes.HasPrefix(head, []byte{0x1f, 0x8b}):
		return Gzip, nil
	case bytes.HasPrefix(head, []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}):
		return XZ, nil
	case len(head) == 512 && bytes.HasPrefix(head[257:], []byte("ustar")):
		return "", nil
	case len(head) == 0:
		return "", ErrEmpty
	}
	return "", ErrUnknownFormat
}

// NewTarReader returns the tar stream of a template read from r, whose
// compression (zstd, gzip, xz or none) it tells from the content rather
// than from a name, and that compression ("" for a plain tar). It reads r
// ahead through a buffer. Errors: ErrEmpty, ErrUnknownFormat, or a
// *FormatError when the decompressor refuses the stream's header.
func NewTarReader(r io.Reader) (io.ReadCloser, Compression, error) {
	br := bufio.NewReaderSize(r, 1<<20)
	head, _ := br.Peek(512)
	c, err := detect(head)
	if err != nil {
		return nil, "", err
	}
	zr, err := Decompress(br, c)
	if err != nil {
		return nil, c, &FormatError{Compression: c, Err: err}
	}
	return zr, c, nil
}

// OpenTar opens a template file and returns its tar stream and its
// compression, as NewTarReader tells them from the content. Closing the
// stream closes the file.
func OpenTar(file string) (io.ReadCloser, Compression, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, "", err
	}
	zr, c, err := NewTarReader(f)
	if err != nil {
		f.Close()
		return nil, c, err
	}
	return &fileTar{ReadCloser: zr, f: f}, c, nil
}

type fileTar struct {
	io.ReadCloser
	f *os.File
}

func (t *fileTar) Close() error {
	err := t.ReadCloser.Close()
	if ferr := t.f.Close(); err == nil {
		err = ferr
	}
	return err
}
