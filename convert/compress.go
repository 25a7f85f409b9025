package convert

import (
	"fmt"
	"hash"
	"io"
	"runtime"

	"github.com/klauspost/pgzip"
	"github.com/ulikunitz/xz"

	"github.com/nexcage/nexcage/internal/zframe"
	"github.com/nexcage/nexcage/tartree"
	"github.com/nexcage/nexcage/template"
)

// checkLevel validates a level for c (0 means the default).
func checkLevel(c template.Compression, level int) error {
	lo, hi := c.Levels()
	if level != 0 && (level < lo || level > hi) {
		return fmt.Errorf("Level %d is out of range for %s: use %d to %d", level, c, lo, hi)
	}
	return nil
}

// compressor wraps w, and hashes what it writes to w into sum. Output must
// depend only on the input and the options, never on the machine: zstd
// compresses slices of the tar cut as internal/zframe says as independent
// frames on all cores, and gzip's parallel blocks have a fixed size.
func compressor(w io.Writer, sum hash.Hash, c template.Compression, level int) (io.WriteCloser, error) {
	if level == 0 {
		level = c.DefaultLevel()
	}
	workers := runtime.GOMAXPROCS(0)
	if c != template.Zstd {
		w = io.MultiWriter(w, sum)
	}
	switch c {
	case template.Zstd:
		return newFrameWriter(w, sum, level, workers)
	case template.Gzip:
		zw, err := pgzip.NewWriterLevel(w, level)
		if err != nil {
			return nil, err
		}
		if err := zw.SetConcurrency(1<<20, max(workers, 2)); err != nil {
			return nil, err
		}
		return zw, nil
	case template.XZ:
		cfg := xz.WriterConfig{DictCap: 1 << (18 + level)}
		return cfg.NewWriter(w)
	}
	return nil, fmt.Errorf("unknown compression %q", c)
}

// frameWriter compresses frames in parallel and writes them in order, cut
// where internal/zframe says, reusing frames compressed ahead of time.
type frameWriter struct {
	w       io.Writer
	sum     hash.Hash // of what is written to w, hashed beside the writes
	enc     *zframe.Encoder
	buf     []byte
	pending chan chan []byte // results in submission order
	done    chan error       // the writer goroutine's outcome
	err     error
	// reused counts the raw bytes whose frames were compressed ahead.
	reused int64
}

func newFrameWriter(w io.Writer, sum hash.Hash, level, workers int) (*frameWriter, error) {
	enc, err := zframe.NewEncoder(level)
	if err != nil {
		return nil, err
	}
	fw := &frameWriter{
		w: w, sum: sum, enc: enc,
		pending: make(chan chan []byte, workers),
		done:    make(chan error, 1),
	}
	fw.buf = zframe.Buffer()
	go fw.drain(fw.pending)
	return fw, nil
}

// drain writes finished frames in order; after a write error it keeps
// receiving so that no compressing goroutine blocks forever. It takes the
// channel as an argument: Close clears the field, possibly before this
// goroutine has even started.
func (fw *frameWriter) drain(pending chan chan []byte) {
	// The hash runs beside the writes: once every frame is precompressed,
	// writing and hashing the template are what is left.
	hashed := make(chan []byte, cap(pending))
	hashDone := make(chan struct{})
	go func() {
		for out := range hashed {
			if fw.sum != nil {
				fw.sum.Write(out)
			}
			zframe.Release(out)
		}
		close(hashDone)
	}()
	var err error
	for res := range pending {
		out := <-res
		if err == nil {
			_, err = fw.w.Write(out)
		}
		hashed <- out
	}
	close(hashed)
	<-hashDone
	fw.done <- err
}

// cut ends the current frame here.
func (fw *frameWriter) cut() {
	if len(fw.buf) == 0 {
		return
	}
	in := fw.buf
	res := make(chan []byte, 1)
	fw.pending <- res // blocks when workers frames are in flight: bounded memory
	go func() {
		out := fw.enc.Frame(in)
		zframe.PutBuffer(in)
		res <- out
	}()
	fw.buf = zframe.Buffer()
}

// reuse queues c's frames for the next size raw bytes, which are then not
// written. It declines frames made with other settings.
func (fw *frameWriter) reuse(c *tartree.Compressed, size int64) (bool, error) {
	if c == nil || c.Key != fw.enc.Key || int64(len(c.Frames)) != (size+zframe.FrameSize-1)/zframe.FrameSize {
		return false, nil
	}
	fw.cut()
	for i := range c.Frames {
		b, err := zframe.ReadFrame(c, i)
		if err != nil {
			return false, err
		}
		res := make(chan []byte, 1)
		res <- b
		fw.pending <- res
	}
	fw.reused += size
	return true, nil
}

func (fw *frameWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		room := min(zframe.FrameSize-len(fw.buf), len(p))
		fw.buf = append(fw.buf, p[:room]...)
		p = p[room:]
		if len(fw.buf) == zframe.FrameSize {
			fw.cut()
		}
	}
	return n, nil
}

// Close compresses what is left and waits for every frame to be written.
func (fw *frameWriter) Close() error {
	if fw.pending == nil {
		return fw.err
	}
	fw.cut()
	zframe.PutBuffer(fw.buf)
	fw.buf = nil
	close(fw.pending)
	fw.pending = nil
	fw.err = <-fw.done
	return fw.err
}
