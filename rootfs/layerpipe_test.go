package rootfs

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"testing"
	"time"
)

// Bytes come out in order across the ring's wrap, then the writer's
// outcome: io.EOF for a clean close, its error otherwise.
func TestLayerPipeDeliversInOrderThenTheWritersOutcome(t *testing.T) {
	want := make([]byte, 3*layerPipeSize+12345)
	rng := rand.NewChaCha8([32]byte{9})
	rng.Read(want)
	for _, closeErr := range []error{nil, errors.New("the download failed")} {
		p := newLayerPipe()
		go func() {
			rest := want
			for len(rest) > 0 { // odd sizes, so writes straddle the wrap
				n := min(len(rest), 777_777)
				if _, err := p.Write(rest[:n]); err != nil {
					t.Error(err)
					return
				}
				rest = rest[n:]
			}
			p.CloseWrite(closeErr)
		}()
		got, err := io.ReadAll(p)
		if !bytes.Equal(got, want) {
			t.Fatalf("got %d bytes back of %d, or in another order", len(got), len(want))
		}
		if err != closeErr {
			t.Fatalf("read ends with %v, want %v", err, closeErr)
		}
	}
}

// A reader that gives up must release a writer blocked on a full buffer,
// or the pull would hang.
func TestLayerPipeReaderCloseReleasesTheWriter(t *testing.T) {
	p := newLayerPipe()
	done := make(chan error, 1)
	go func() {
		_, err := p.Write(make([]byte, 2*layerPipeSize))
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("a write larger than the buffer returned (%v) with nobody reading", err)
	case <-time.After(50 * time.Millisecond):
	}
	stop := errors.New("the layer reader stopped")
	p.CloseWithError(stop)
	if err := <-done; err != stop {
		t.Fatalf("the blocked write ended with %v, want %v", err, stop)
	}
	if _, err := p.Read(make([]byte, 1)); err != io.ErrClosedPipe {
		t.Fatalf("read after close: %v", err)
	}
}
