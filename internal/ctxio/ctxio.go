// Package ctxio holds the small io wrappers the stages share: a reader
// that stops on a cancelled context, and a byte counter.
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

// Counter counts the bytes written to it, and discards them: the other
// side of an io.TeeReader or io.MultiWriter whose bytes are counted.
type Counter struct {
	N int64
}

func (c *Counter) Write(b []byte) (int, error) {
	c.N += int64(len(b))
	return len(b), nil
}
