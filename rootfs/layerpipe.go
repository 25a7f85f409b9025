package rootfs

import (
	"cmp"
	"context"
	"io"
	"sync"
)

// layerPipeSize is how far a layer's download may run ahead of its reader.
const layerPipeSize = 4 << 20

// layerPipe is io.Pipe with a buffer, from a layer's download to the
// goroutine inflating it. Through io.Pipe the inflate waited, every 32 KiB,
// for the download to read the socket, hash and store the next piece: the
// inflate is the longest chain of a build, and every wait lengthened it.
// The buffer is allocated at the first write and dropped once drained
// after the writer closes, so only layers being downloaded or read hold
// one.
type layerPipe struct {
	mu       sync.Mutex
	readable sync.Cond
	writable sync.Cond
	ring     []byte
	start, n int
	werr     error // the writer closed: io.EOF, or why it stopped
	rerr     error // the reader closed
	// started closes at the first write or any close; finished when the
	// reader closes.
	started, finished chan struct{}
}

func newLayerPipe() *layerPipe {
	p := &layerPipe{started: make(chan struct{}), finished: make(chan struct{})}
	p.readable.L, p.writable.L = &p.mu, &p.mu
	return p
}

// markStarted must be called with mu held.
func (p *layerPipe) markStarted() {
	select {
	case <-p.started:
	default:
		close(p.started)
	}
}

// waitStarted returns once the download has begun (or ended).
func (p *layerPipe) waitStarted(ctx context.Context) error {
	select {
	case <-p.started:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// consumed is closed once the reader is done with the pipe.
func (p *layerPipe) consumed() <-chan struct{} { return p.finished }

// Write blocks while the buffer is full; it fails once the reader closed.
func (p *layerPipe) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.markStarted()
	written := 0
	for len(b) > 0 {
		for p.rerr == nil && p.werr == nil && p.n == len(p.ring) && p.ring != nil {
			p.writable.Wait()
		}
		switch {
		case p.rerr != nil:
			return written, p.rerr
		case p.werr != nil:
			return written, io.ErrClosedPipe
		case p.ring == nil:
			p.ring = make([]byte, layerPipeSize)
		}
		end := (p.start + p.n) % len(p.ring)
		k := min(len(b), len(p.ring)-p.n, len(p.ring)-end)
		copy(p.ring[end:end+k], b[:k])
		p.n += k
		b = b[k:]
		written += k
		p.readable.Signal()
	}
	return written, nil
}

// Read returns buffered bytes, then the writer's error (io.EOF for a
// clean close).
func (p *layerPipe) Read(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for p.n == 0 && p.werr == nil && p.rerr == nil {
		p.readable.Wait()
	}
	if p.rerr != nil {
		return 0, io.ErrClosedPipe
	}
	if p.n == 0 {
		p.ring = nil
		return 0, p.werr
	}
	k := min(len(b), p.n, len(p.ring)-p.start)
	copy(b, p.ring[p.start:p.start+k])
	p.start = (p.start + k) % len(p.ring)
	p.n -= k
	p.writable.Signal()
	return k, nil
}

// CloseWrite ends the stream: the reader gets err after the buffered
// bytes, or io.EOF when err is nil.
func (p *layerPipe) CloseWrite(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	firstClose(&p.werr, err, io.EOF)
	p.markStarted()
	p.readable.Broadcast()
}

// CloseWithError stops the reader's side: pending and later writes fail
// with err, and the buffer is dropped.
func (p *layerPipe) CloseWithError(err error) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if firstClose(&p.rerr, err, io.ErrClosedPipe) {
		close(p.finished)
	}
	p.markStarted()
	p.ring, p.n = nil, 0
	p.writable.Broadcast()
	p.readable.Broadcast()
	return nil
}

// firstClose records why a side of the pipe closed, err or def when err
// is nil, unless it closed before: the first close wins. It reports
// whether this close was the first.
func firstClose(why *error, err, def error) bool {
	if *why != nil {
		return false
	}
	*why = cmp.Or(err, def)
	return true
}

// Close is the reader's close.
func (p *layerPipe) Close() error { return p.CloseWithError(nil) }
