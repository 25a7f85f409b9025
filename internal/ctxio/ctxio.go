// Package ctxio holds the small io wrappers the stages share: a reader
// that stops on a cancelled context, and byte counters.
package ctxio

import (
	"context"
	"io"
)

// Reader stops a copy promptly on Ctrl-C (a cancelled Ctx) even when R is
// a large file or a slow network stream.
type Reader struct {
	Ctx context.Context
	R   io.Reader
}

// Read fails with the context's error once it is done.
func (c Reader) Read(p []byte) (int, error) {
	if err := c.Ctx.Err(); err != nil {
		return 0, err
	}
	return c.R.Read(p)
}

// CountingReader counts in N the bytes read from R.
type CountingReader struct {
	R io.Reader
	N int64
}

func (c *CountingReader) Read(p []byte) (int, error) {
	n, err := c.R.Read(p)
	c.N += int64(n)
	return n, err
}

// CountingWriter counts in N the bytes written to W.
type CountingWriter struct {
	W io.Writer
	N int64
}

func (c *CountingWriter) Write(b []byte) (int, error) {
	n, err := c.W.Write(b)
	c.N += int64(n)
	return n, err
}
