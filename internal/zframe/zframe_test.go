package zframe

import (
	"bytes"
	"fmt"
	"hash/fnv"
	"io"
	"math/rand/v2"
	"os"
	"testing"
	"testing/iotest"

	"github.com/nexcage/nexcage/internal/testenv"

	"github.com/nexcage/nexcage/tartree"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func content(n int) []byte {
	b := make([]byte, n)
	rng := rand.NewChaCha8([32]byte{3})
	for i := range b {
		b[i] = byte('a' + rng.Uint64()%8)
	}
	return b
}

// The frames compressed ahead must be the very frames the template writer
// would make of the same content: FrameSize slices from its start.
func TestPrecompressedFramesAreTheWritersFrames(t *testing.T) {
	dir := t.TempDir()
	p, err := NewPrecompressor(3, 2, dir)
	if err != nil {
		t.Fatal(err)
	}
	enc, err := NewEncoder(3)
	if err != nil {
		t.Fatal(err)
	}
	for _, size := range []int{ContentThreshold, 2*FrameSize + 12345, FrameSize, ContentThreshold + 1} {
		in := content(size)
		w := p.File(int64(size))
		if size%2 == 0 {
			for rest := in; len(rest) > 0; { // uneven writes across frames
				n := min(len(rest), 300001)
				w.Write(rest[:n])
				rest = rest[n:]
			}
		} else if n, err := io.Copy(w, iotest.HalfReader(bytes.NewReader(in))); err != nil || n != int64(size) {
			// ReadFrom, with reads that end anywhere
			t.Fatalf("%d bytes: ReadFrom took %d (%v)", size, n, err)
		}
		c := w.Close()
		if err := p.Wait(); err != nil {
			t.Fatal(err)
		}
		if c == nil || len(c.Frames) != (size+FrameSize-1)/FrameSize {
			t.Fatalf("%d bytes: frames %+v", size, c)
		}
		for i := range c.Frames {
			got, err := ReadFrame(c, i)
			if err != nil {
				t.Fatal(err)
			}
			// The last frame ends with the tar padding.
			padded := append(in[:size:size], make([]byte, Pad(int64(size)))...)
			want := enc.Frame(padded[i*FrameSize : min((i+1)*FrameSize, len(padded))])
			if !bytes.Equal(got, want) {
				t.Errorf("%d bytes: frame %d differs from the writer's", size, i)
			}
			Release(want)
		}
		rc, err := Open(c, int64(size))
		if err != nil {
			t.Fatal(err)
		}
		back, err := io.ReadAll(rc)
		rc.Close()
		if err != nil || !bytes.Equal(back, in) {
			t.Errorf("%d bytes: Open gives %d bytes back (%v)", size, len(back), err)
		}
		if c.Key != enc.Key {
			t.Errorf("key %q, the writer's is %q", c.Key, enc.Key)
		}
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("Close left %v", ents)
	}
}

// Content shorter than announced (a truncated layer) gives no frames to
// reuse, and returns its buffer: later files still get theirs.
func TestShortContentGivesNoFrames(t *testing.T) {
	p, err := NewPrecompressor(3, 1, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	for range 5 { // more than the buffers there are
		w := p.File(3 * FrameSize)
		w.Write(content(FrameSize + 10))
		if c := w.Close(); c != nil {
			t.Fatal("frames for content that ended early")
		}
	}
	w := p.File(10)
	w.Write(content(10))
	if w.Close() == nil {
		t.Fatal("no frames for complete content")
	}
	if err := p.Wait(); err != nil {
		t.Fatal(err)
	}
}

// A run's frames are the writer's frames of the same archive bytes, and
// content read into a run that keeps it reads back from them.
func TestRunFramesAreTheWritersFrames(t *testing.T) {
	p, err := NewPrecompressor(3, 2, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	enc, err := NewEncoder(3)
	if err != nil {
		t.Fatal(err)
	}
	w := p.Run(true)
	var raw []byte
	var at []tartree.Section
	bodies := [][]byte{content(700), content(FrameSize - 100), content(5 << 20), nil, content(1)}
	for i, body := range bodies {
		hdr := bytes.Repeat([]byte{byte('A' + i)}, 512)
		w.Header(hdr)
		raw = append(raw, hdr...)
		at = append(at, w.Section())
		w.Content(at[i])
		if n, err := w.ReadFrom(iotest.HalfReader(bytes.NewReader(body))); err != nil || n != int64(len(body)) {
			t.Fatalf("ReadFrom took %d of %d bytes: %v", n, len(body), err)
		}
		w.Pad(int64(len(body)))
		raw = append(raw, body...)
		raw = append(raw, make([]byte, Pad(int64(len(body))))...)
	}
	r := w.End(tartree.EndOfArchive)
	raw = append(raw, make([]byte, 1024)...)
	if err := p.Wait(); err != nil {
		t.Fatal(err)
	}
	if r == nil || r.Count != len(bodies) || r.Raw != int64(len(raw)) || len(r.Sources) != len(bodies) {
		t.Fatalf("run %+v; want %d members, %d bytes", r, len(bodies), len(raw))
	}
	if len(r.Frames) != (len(raw)+FrameSize-1)/FrameSize {
		t.Fatalf("%d frames for %d bytes", len(r.Frames), len(raw))
	}
	for i := range r.Frames {
		got, err := ReadFrame(&r.Compressed, i)
		if err != nil {
			t.Fatal(err)
		}
		if want := enc.Frame(raw[i*FrameSize : min((i+1)*FrameSize, len(raw))]); !bytes.Equal(got, want) {
			t.Errorf("frame %d differs from the writer's", i)
		}
	}
	for i, body := range bodies {
		back := make([]byte, len(body))
		if n, err := at[i].From.ReadAt(back, at[i].Off); n != len(body) || (err != nil && err != io.EOF) || !bytes.Equal(back, body) {
			t.Errorf("member %d: %d of %d bytes read back (%v)", i, n, len(body), err)
		}
	}
}

// A run that does not wait gives up when every buffer is taken, and gives
// its own back: a guess never holds up the content that must be kept.
func TestRunGivesUpWithoutBuffers(t *testing.T) {
	p, err := NewPrecompressor(3, 1, t.TempDir()) // two buffers
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	a, b := p.Run(false), p.Run(false)
	a.Header(make([]byte, 512))
	b.Header(make([]byte, 512))
	c := p.Run(false)
	c.Header(make([]byte, 512))
	if c.Holds() || c.End(tartree.BeforeCut) != nil {
		t.Fatal("a run without a buffer went on")
	}
	if a.End(tartree.BeforeCut) == nil {
		t.Fatal("a run with a buffer gave up")
	}
	b.Abort()
	if err := p.Wait(); err != nil {
		t.Fatal(err)
	}
	if n := len(p.tokens); n != 0 {
		t.Errorf("%d buffers still taken", n)
	}
}

// CutBefore is FNV-1a of the path: the frame layout, and so every
// template's bytes, must not change with how it is computed.
func TestCutBeforeIsFNV1a(t *testing.T) {
	cuts := 0
	for i := range 20000 {
		p := fmt.Sprintf("usr/share/d%d/f%d", i%97, i)
		h := fnv.New32a()
		h.Write([]byte(p))
		want := h.Sum32()%CutEvery == 0
		if CutBefore(p) != want {
			t.Fatalf("CutBefore(%q) = %v, FNV-1a says %v", p, !want, want)
		}
		if want {
			cuts++
		}
	}
	if cuts == 0 {
		t.Fatal("no path was cut before: the test compares nothing")
	}
}
