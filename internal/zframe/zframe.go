// Package zframe fixes how a zstd template is cut into frames, so that
// stretches of the archive can be compressed before the archive around
// them is known.
//
// A template is a sequence of independent zstd frames (concatenated frames
// are one valid zstd stream, as pzstd writes). The tar stream is cut:
//   - before the header of every member whose path CutBefore picks: about
//     one member in CutEvery, chosen by its name alone;
//   - before the content of every regular file of at least
//     ContentThreshold bytes, and after that content and its padding; inside
//     that content every FrameSize bytes from its start;
//   - elsewhere every FrameSize bytes from the last cut.
//
// So a large file's frames depend on its bytes alone, and the frames from
// one cut before a member up to the next cut depend only on the members in
// between. build compresses both while the layers are still downloading
// and decompressing, on the cores that would otherwise wait: large files
// as they stream past, and runs of a layer's members in the hope that the
// final archive holds them unchanged (it does wherever no upper layer
// touched them, and the layer is in archive order). The writer copies the
// frames in place where that hope holds and compresses the rest itself.
// Output is the same bytes whichever path compressed a frame.
package zframe

import (
	"crypto/sha256"
	"fmt"
	"hash"
	"io"
	"os"
	"runtime"
	"sync"

	"github.com/klauspost/compress/zstd"

	"github.com/nexcage/nexcage/tartree"
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

// CutEvery is how many members, on average, share a run between two cuts
// CutBefore picks. Runs of that length keep most frames near FrameSize:
// the cuts cost 0.4% of ratio on the make bench image (90.92 MB against
// 90.57 MB, still below zstd -3 of the same tar), and a member an upper
// layer changes costs the reuse of one run only. Cutting every 128
// members would cost about three times as much.
const CutEvery = 512

// CutBefore reports whether the archive is cut before the member at tree
// path p (slash-separated, without "./"). It depends on the name alone, so
// a layer reader knows the cuts an archive will have wherever it holds the
// layer's members.
func CutBefore(p string) bool {
	// FNV-1a, inline: this runs for every member, twice per build, and
	// hash/fnv would allocate each time.
	h := uint32(2166136261)
	for i := 0; i < len(p); i++ {
		h ^= uint32(p[i])
		h *= 16777619
	}
	return h%CutEvery == 0
}

// Pad is the zero padding tar writes after size bytes of content.
func Pad(size int64) int64 { return -size & 511 }

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

	// dec reads back content kept only in runs.
	dec Decoder
}

// Decoder decompresses the frames of runs for their RunReaders, keeping
// the frame it decompressed last: a run's files are read in order.
type Decoder struct {
	mu      sync.Mutex
	dec     *zstd.Decoder
	decoded struct {
		c   *tartree.Compressed
		i   int
		raw []byte
	}
}

// Reader reads run c's archive bytes back from its frames.
func (d *Decoder) Reader(c *tartree.Compressed) *RunReader { return &RunReader{d: d, c: c} }

// Close releases the decoder.
func (d *Decoder) Close() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.dec != nil {
		d.dec.Close()
		d.dec = nil
	}
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
	return &FileWriter{p: p, size: size, c: &tartree.Compressed{Key: p.enc.Key, From: p.file, Frames: make([]tartree.Extent, n)}}
}

// FileWriter cuts one file's content into frames.
type FileWriter struct {
	p    *Precompressor
	c    *tartree.Compressed
	size int64
	n    int64
	buf  []byte
	i    int
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
		w.n += int64(room)
		if len(w.buf) == FrameSize {
			w.submit()
		}
	}
	return n, nil
}

// ReadFrom reads content straight into the frame buffers, saving the copy
// through an intermediate buffer that io.Copy would make.
func (w *FileWriter) ReadFrom(r io.Reader) (int64, error) {
	n, err := readFrames(r, &w.buf, w.p, w.submit)
	w.n += n
	return n, err
}

// readFrames reads r to its end into frame buffers taken from p, handing
// each full one to full.
func readFrames(r io.Reader, buf *[]byte, p *Precompressor, full func()) (int64, error) {
	var total int64
	for {
		if *buf == nil {
			*buf = p.buffer(true)
		}
		n, err := r.Read((*buf)[len(*buf):FrameSize])
		*buf = (*buf)[:len(*buf)+n]
		total += int64(n)
		if len(*buf) == FrameSize {
			full()
		}
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

// Close submits the last partial frame, which ends with the content's tar
// padding, and returns where the frames will be; they are complete once
// Precompressor.Wait returns without error.
func (w *FileWriter) Close() *tartree.Compressed {
	if w.n == w.size && w.buf != nil {
		// FrameSize is a multiple of the tar block: the padding fits.
		w.buf = append(w.buf, make([]byte, Pad(w.size))...)
	}
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
	w.p.compress(in, c, i)
}

// compress stores in's frame as c.Frames[i], in the background.
func (p *Precompressor) compress(in []byte, c *tartree.Compressed, i int) {
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

// buffer takes an input buffer, waiting for one when wait is set, else
// returning nil when all are in use.
func (p *Precompressor) buffer(wait bool) []byte {
	if wait {
		p.tokens <- struct{}{}
		return Buffer()
	}
	select {
	case p.tokens <- struct{}{}:
		return Buffer()
	default:
		return nil
	}
}

// Run starts a run of archive members at a cut (see the package comment).
// A run that waits takes input buffers as File does; one that does not
// gives up when they are all in use, so that a guess that may well be
// wasted never holds up the layers it is made from.
func (p *Precompressor) Run(wait bool) *RunWriter {
	return &RunWriter{p: p, wait: wait, h: sha256.New(),
		run: &tartree.Run{Compressed: tartree.Compressed{Key: p.enc.Key, From: p.file}}}
}

// RunWriter serialises a run's members, as the template writer would,
// into frames.
type RunWriter struct {
	p      *Precompressor
	wait   bool
	run    *tartree.Run
	h      hash.Hash
	buf    []byte
	failed bool
	ended  bool
	reader *RunReader
}

// Header adds a member with its encoded header (tartree.AppendHeader).
func (w *RunWriter) Header(b []byte) {
	if w.failed {
		return
	}
	w.run.Count++
	w.h.Write(b)
	w.Write(b)
}

// Content records where the content written next comes from.
func (w *RunWriter) Content(src tartree.Section) {
	if !w.failed {
		w.run.Sources = append(w.run.Sources, src)
	}
}

// Pad writes the padding after size bytes of content.
func (w *RunWriter) Pad(size int64) {
	var zeros [512]byte
	w.Write(zeros[:Pad(size)])
}

// Write adds archive bytes; it never fails, but a run that gave up
// ignores them.
func (w *RunWriter) Write(b []byte) (int, error) {
	n := len(b)
	for len(b) > 0 && !w.failed {
		if w.buf == nil {
			if w.buf = w.p.buffer(w.wait); w.buf == nil {
				w.Abort()
				break
			}
		}
		room := min(FrameSize-len(w.buf), len(b))
		w.buf = append(w.buf, b[:room]...)
		b = b[room:]
		w.run.Raw += int64(room)
		if len(w.buf) == FrameSize {
			w.submit()
		}
	}
	return n, nil
}

// Holds reports whether content written to the run can be read back from
// it (see ReadFrom): a run that waits for buffers never gives up.
func (w *RunWriter) Holds() bool { return w.wait && !w.failed && !w.ended }

// ReadFrom reads content straight into the frame buffers of a run that
// Holds, and returns where to read it back: the content is then kept only
// compressed.
func (w *RunWriter) ReadFrom(r io.Reader) (int64, error) {
	n, err := readFrames(r, &w.buf, w.p, w.submit)
	w.run.Raw += n
	return n, err
}

// Section is where the run's next byte will be read back from, once the
// run has ended and Precompressor.Wait has returned.
func (w *RunWriter) Section() tartree.Section {
	if w.reader == nil {
		w.reader = w.p.dec.Reader(&w.run.Compressed)
	}
	return tartree.Section{From: w.reader, Off: w.run.Raw}
}

func (w *RunWriter) submit() {
	in := w.buf
	w.buf = nil
	w.p.mu.Lock()
	// Under the lock: compress's goroutines index Frames.
	w.run.Frames = append(w.run.Frames, tartree.Extent{})
	i := len(w.run.Frames) - 1
	w.p.mu.Unlock()
	w.p.compress(in, &w.run.Compressed, i)
}

// End closes the run at a cut; its frames are complete once
// Precompressor.Wait returns without error. It returns nil if the run
// gave up.
func (w *RunWriter) End(end tartree.RunEnd) *tartree.Run {
	if end == tartree.EndOfArchive {
		var zeros [1024]byte // tar's two end-of-archive blocks
		w.Write(zeros[:])
	}
	if w.failed || w.ended {
		return nil
	}
	w.close()
	w.run.End = end
	w.h.Sum(w.run.Headers[:0])
	return w.run
}

// close submits the last frame.
func (w *RunWriter) close() {
	w.ended = true
	if len(w.buf) > 0 {
		w.submit()
	} else if w.buf != nil {
		w.p.release(w.buf)
		w.buf = nil
	}
}

// Abort gives the run up. The frames of a run that Holds are kept: they
// are the only copy of the content read into them.
func (w *RunWriter) Abort() {
	if w.Holds() {
		w.close()
		return
	}
	if w.buf != nil {
		w.p.release(w.buf)
		w.buf = nil
	}
	w.failed = true
}

// RunReader reads a run's archive bytes back from its frames: the
// tartree.Section of content kept only in a run reads from one.
type RunReader struct {
	d *Decoder
	c *tartree.Compressed
}

// Run is the run the reader reads.
func (r *RunReader) Run() *tartree.Compressed { return r.c }

// ReadAt decompresses the frames that hold [off, off+len(b)): frame i
// holds the FrameSize bytes from i*FrameSize. The last frame decompressed
// is kept, as the writer reads a run's files in order.
func (r *RunReader) ReadAt(b []byte, off int64) (int, error) {
	p := r.d
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for n < len(b) {
		i := int((off + int64(n)) / FrameSize)
		if i >= len(r.c.Frames) {
			return n, io.EOF
		}
		if p.decoded.c != r.c || p.decoded.i != i {
			if err := p.decode(r.c, i); err != nil {
				return n, err
			}
		}
		at := off + int64(n) - int64(i)*FrameSize
		if at >= int64(len(p.decoded.raw)) {
			return n, io.EOF
		}
		n += copy(b[n:], p.decoded.raw[at:])
	}
	return n, nil
}

// decode decompresses frame i of c into p.decoded.
func (p *Decoder) decode(c *tartree.Compressed, i int) error {
	if p.dec == nil {
		dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1))
		if err != nil {
			return err
		}
		p.dec = dec
	}
	frame, err := ReadFrame(c, i)
	if err != nil {
		return err
	}
	p.decoded.c = nil
	raw, err := p.dec.DecodeAll(frame, p.decoded.raw[:0])
	Release(frame)
	if err != nil {
		return fmt.Errorf("read back compressed content: %w", err)
	}
	p.decoded.c, p.decoded.i, p.decoded.raw = c, i, raw
	return nil
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
	p.dec.Close()
	p.file.Close()
	return os.Remove(p.file.Name())
}

// Open decompresses c, a file of size bytes: the content of a file whose
// raw bytes were never kept, for the rare reader other than the template
// writer.
func Open(c *tartree.Compressed, size int64) (io.ReadCloser, error) {
	parts := make([]io.Reader, len(c.Frames))
	for i, e := range c.Frames {
		parts[i] = io.NewSectionReader(c.From, e.Off, e.Len)
	}
	dec, err := zstd.NewReader(io.MultiReader(parts...), zstd.WithDecoderConcurrency(1))
	if err != nil {
		return nil, err
	}
	rc := dec.IOReadCloser()
	return struct {
		io.Reader
		io.Closer
	}{io.LimitReader(rc, size), rc}, nil // without the tar padding
}

// ReadFrame reads frame i of c into a buffer Release takes back.
func ReadFrame(c *tartree.Compressed, i int) ([]byte, error) {
	e := c.Frames[i]
	b, _ := outputs.Get().([]byte)
	if int64(cap(b)) < e.Len {
		b = make([]byte, e.Len)
	}
	b = b[:e.Len]
	if _, err := c.From.ReadAt(b, e.Off); err != nil && !(err == io.EOF && e.Len == 0) {
		return nil, fmt.Errorf("read a compressed frame: %w", err)
	}
	return b, nil
}
