package zframe

import (
	"bytes"
	"io"
	"math/rand/v2"
	"os"
	"testing"
	"testing/iotest"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

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
	for _, size := range []int{ContentThreshold, 2*FrameSize + 12345, FrameSize} {
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
			want := enc.Frame(in[i*FrameSize : min((i+1)*FrameSize, size)])
			if !bytes.Equal(got, want) {
				t.Errorf("%d bytes: frame %d differs from the writer's", size, i)
			}
			Release(want)
		}
		rc, err := Open(c)
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
