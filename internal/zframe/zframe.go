// Package zframe fixes how a zstd template is cut into frames, so that the
// compressed bytes of a large file depend on that file's content alone.
//
// A template is a sequence of independent zstd frames (concatenated frames
// are one valid zstd stream, as pzstd writes). The tar stream is cut:
//   - before and after the content of every regular file of at least
//     ContentThreshold bytes, and inside that content every FrameSize bytes
//     from its start;
//   - elsewhere every FrameSize bytes.
//
// So a large file's frames can be compressed as soon as its bytes are
// known, long before the archive around it is: build compresses them while
// the layers are still downloading and decompressing, on the cores that
// would otherwise wait, and the writer later copies them in place. Output
// is the same bytes whichever path compressed a frame.
package zframe

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"sync"

	"github.com/klauspost/compress/zstd"

	"github.com/nexcage/nexcage/internal/tartree"
)

// FrameSize is the most tar bytes one frame holds: large enough that
// splitting costs well under 1% of ratio, small enough that a few frames
// in flight per core keep memory flat whatever the rootfs size.
const FrameSize = 4 << 20

// ContentThreshold is the size from which a file's content gets frames of
// its own. Files this size hold two fifths of a Debian rootfs's bytes, and
// cutting around them costs no ratio (measured on the make bench image:
// 0.2% smaller than fixed 4 MiB slices). Cutting around every file from
// 256 KiB costs 3.5%, and from 64 KiB 8.7%: the small files between them
// end up in tiny frames.
const ContentThreshold = 1 << 20

// OwnFrames reports whether a regular file of size bytes gets frames of
// its own.
func OwnFrames(size int64) bool { return size >= ContentThreshold }

// Key names the settings that determine a frame's bytes; frames compressed
// under another key are not reused.
func Key(level int) string { return fmt.Sprintf("zstd-%d-%d", level, FrameSize) }

var (
	encodersMu sync.Mutex
	encoders   = map[int]*zstd.Encoder{}
	outputs    sync.Pool
	inputs     sync.Pool
)

// Buffer returns an empty buffer of FrameSize capacity for a frame's input;
// PutBuffer takes it back. The layer reader and the template writer run
// one after the other and share these.
func Buffer() []byte {
	if b, ok := inputs.Get().([]byte); ok {
		return b[:0]
	}
	return make([]byte, 0, FrameSize)
}

// PutBuffer returns a buffer from Buffer.
func PutBuffer(b []byte) {
	if cap(b) == FrameSize {
		inputs.Put(b[:0]) //nolint:staticcheck // a slice header per frame is noise
	}
}

// encoder is the one encoder configuration every frame is compressed with:
// the same input gives the same frame whoever compresses it. One encoder
// per level serves the whole process (EncodeAll is safe for concurrent
// use), so the layer reader and the template writer share its state.
func encoder(level int) (*zstd.Encoder, error) {
	encodersMu.Lock()
	defer encodersMu.Unlock()
	if enc := encoders[level]; enc != nil {
		return enc, nil
	}
	enc, err := zstd.NewWriter(nil,
		zstd.WithEncoderLevel(zstd.EncoderLevelFromZstd(level)),
		zstd.WithEncoderConcurrency(runtime.GOMAXPROCS(0)),
		// A frame never refers back past its own start, so a window
		// larger than a frame is memory for nothing.
		zstd.WithWindowSize(FrameSize),
		zstd.WithEncoderCRC(true))
	if err != nil {
		return nil, err
	}
	encoders[level] = enc
	return enc, nil
}

// Encoder compresses frames at one level.
type Encoder struct {
	enc *zstd.Encoder
	Key string
}

// NewEncoder returns the encoder for level.
func NewEncoder(level int) (*Encoder, error) {
	enc, err := encoder(level)
	if err != nil {
		return nil, err
	}
	return &Encoder{enc: enc, Key: Key(level)}, nil
}

// Frame compresses in as one frame, into a buffer Release takes back.
func (e *Encoder) Frame(in []byte) []byte {
	out, _ := outputs.Get().([]byte)
	if need := e.enc.MaxEncodedSize(len(in)); cap(out) < need {
		out = make([]byte, 0, max(need, e.enc.MaxEncodedSize(FrameSize)))
	}
	return e.enc.EncodeAll(in, out[:0])
}

// Release returns a frame's buffer for reuse.
func Release(frame []byte) { outputs.Put(frame[:0]) } //nolint:staticcheck // a slice header per frame is noise

// Precompressor compresses large files' frames in the background as their
// content streams past, into one temporary file.
type Precompressor struct {
	enc    *Encoder
	file   *os.File
	tokens chan struct{} // one per input buffer in use: bounds memory and queues work
	wg     sync.WaitGroup

	mu   sync.Mutex
	size int64 // of file
	err  error
}

// NewPrecompressor stores frames in a new file in dir, compressing up to
// workers+1 frames at once (one more than the cores, so a core never waits
// for the reader to fill the next frame).
func NewPrecompressor(level, workers int, dir string) (*Precompressor, error) {
	workers = max(workers, 1)
	enc, err := NewEncoder(level)
	if err != nil {
		return nil, err
	}
	f, err := os.CreateTemp(dir, "frames-")
	if err != nil {
		return nil, fmt.Errorf("create a temporary file for compressed frames: %w", err)
	}
	p := &Precompressor{enc: enc, file: f, tokens: make(chan struct{}, workers+1)}
	return p, nil
}

// File starts the frames of one file of size bytes; the caller then
// passes its content through Write, in order, and Close.
func (p *Precompressor) File(size int64) *FileWriter {
	n := (size + FrameSize - 1) / FrameSize
	return &FileWriter{p: p, c: &tartree.Compressed{Key: p.enc.Key, From: p.file, Frames: make([]tartree.Extent, n)}}
}

// FileWriter cuts one file's content into frames.
type FileWriter struct {
	p   *Precompressor
	c   *tartree.Compressed
	buf []byte
	i   int
}

// Write takes content; it blocks while every buffer is being compressed.
func (w *FileWriter) Write(b []byte) (int, error) {
	n := len(b)
	for len(b) > 0 {
		if w.buf == nil {
			w.p.tokens <- struct{}{}
			w.buf = Buffer()
		}
		room := min(FrameSize-len(w.buf), len(b))
		w.buf = append(w.buf, b[:room]...)
		b = b[room:]
		if len(w.buf) == FrameSize {
			w.submit()
		}
	}
	return n, nil
}

// ReadFrom reads content straight into the frame buffers, saving the copy
// through an intermediate buffer that io.Copy would make.
func (w *FileWriter) ReadFrom(r io.Reader) (int64, error) {
	var total int64
	for {
		if w.buf == nil {
			w.p.tokens <- struct{}{}
			w.buf = Buffer()
		}
		n, err := r.Read(w.buf[len(w.buf):FrameSize])
		w.buf = w.buf[:len(w.buf)+n]
		total += int64(n)
		if len(w.buf) == FrameSize {
			w.submit()
		}
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

// Close submits the last partial frame and returns where the frames will
// be; they are complete once Precompressor.Wait returns without error.
func (w *FileWriter) Close() *tartree.Compressed {
	if w.buf != nil && len(w.buf) > 0 {
		w.submit()
	} else if w.buf != nil {
		w.p.release(w.buf)
		w.buf = nil
	}
	if w.i != len(w.c.Frames) {
		// The content was not the size announced: the caller reports
		// that; these frames must never be used.
		return nil
	}
	return w.c
}

func (w *FileWriter) submit() {
	in, c, i := w.buf, w.c, w.i
	w.buf = nil
	w.i++
	if i >= len(c.Frames) {
		w.p.release(in)
		return
	}
	p := w.p
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		out := p.enc.Frame(in)
		p.release(in)
		defer Release(out)
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.err != nil {
			return
		}
		if _, err := p.file.WriteAt(out, p.size); err != nil {
			p.err = fmt.Errorf("store compressed frames in %s: %w", p.file.Name(), err)
			return
		}
		c.Frames[i] = tartree.Extent{Off: p.size, Len: int64(len(out))}
		p.size += int64(len(out))
	}()
}

func (p *Precompressor) release(buf []byte) {
	PutBuffer(buf)
	<-p.tokens
}

// Wait returns once every submitted frame is stored.
func (p *Precompressor) Wait() error {
	p.wg.Wait()
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// Close waits for the workers and removes the frames file.
func (p *Precompressor) Close() error {
	p.wg.Wait()
	p.file.Close()
	return os.Remove(p.file.Name())
}

// Open decompresses c: the content of a file whose raw bytes were never
// kept, for the rare reader other than the template writer.
func Open(c *tartree.Compressed) (io.ReadCloser, error) {
	parts := make([]io.Reader, len(c.Frames))
	for i, e := range c.Frames {
		parts[i] = io.NewSectionReader(c.From, e.Off, e.Len)
	}
	dec, err := zstd.NewReader(io.MultiReader(parts...), zstd.WithDecoderConcurrency(1))
	if err != nil {
		return nil, err
	}
	return dec.IOReadCloser(), nil
}

// ReadFrame reads frame i of c.
func ReadFrame(c *tartree.Compressed, i int) ([]byte, error) {
	e := c.Frames[i]
	b := make([]byte, e.Len)
	if _, err := c.From.ReadAt(b, e.Off); err != nil && !(err == io.EOF && e.Len == 0) {
		return nil, fmt.Errorf("read a compressed frame: %w", err)
	}
	return b, nil
}
