package convert

import (
	"bytes"
	"crypto/sha256"
	"math/rand/v2"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/nexcage/nexcage/internal/zframe"
)

// TestFrameWriterRoundTrips covers empty, tiny, one-frame and multi-frame
// inputs, many times over: a tiny input is closed before the writer's
// goroutine may have started, which once deadlocked.
func TestFrameWriterRoundTrips(t *testing.T) {
	big := make([]byte, 3*zframe.FrameSize+12345)
	rng := rand.NewChaCha8([32]byte{7})
	for i := range big {
		big[i] = byte('a' + rng.Uint64()%4) // compressible
	}
	dec, _ := zstd.NewReader(nil)
	defer dec.Close()
	for round := 0; round < 200; round++ {
		for _, in := range [][]byte{nil, []byte("x"), big[:zframe.FrameSize], big} {
			if round > 0 && len(in) >= zframe.FrameSize {
				continue // the big ones once are enough
			}
			var out bytes.Buffer
			sum := sha256.New()
			fw, err := newFrameWriter(&out, sum, 3, 2)
			if err != nil {
				t.Fatal(err)
			}
			// Uneven writes cross frame boundaries.
			for rest := in; len(rest) > 0; {
				n := min(len(rest), 777777)
				fw.Write(rest[:n])
				rest = rest[n:]
			}
			if err := fw.Close(); err != nil {
				t.Fatal(err)
			}
			got, err := dec.DecodeAll(out.Bytes(), nil)
			if err != nil || !bytes.Equal(got, in) {
				t.Fatalf("round %d, %d bytes: round trip failed (%v)", round, len(in), err)
			}
			if want := sha256.Sum256(out.Bytes()); !bytes.Equal(sum.Sum(nil), want[:]) {
				t.Fatalf("round %d, %d bytes: the hash is not the output's", round, len(in))
			}
		}
	}
}
