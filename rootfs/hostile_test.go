package rootfs

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/nexcage/nexcage/internal/testenv"
	"github.com/nexcage/nexcage/internal/testimage"
)

// sparseBomb is a tiny uncompressed layer holding a 10 GiB sparse file.
func sparseBomb(t *testing.T) v1.Image {
	t.Helper()
	raw := testenv.SparseTar(t, "huge", 10<<30)
	img, err := testimage.Image([]v1.Layer{static.NewLayer(raw, types.OCIUncompressedLayer)}, v1.Config{}, v1.Platform{OS: "linux", Architecture: "amd64"}, false)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// TestSparseClaimDoesNotFillTheDisk: a few hundred bytes of layer that
// claim a 10 GiB file are refused with a clear error by both the unpacker
// and the flattener, long before the disk fills.
func TestSparseClaimDoesNotFillTheDisk(t *testing.T) {
	s := leakCheckedStore(t)
	img := pullCase(t, s, testimage.Case{Name: "bomb", Image: sparseBomb(t)})
	bundle := filepath.Join(t.TempDir(), "b")
	_, err := s.Unpack(context.Background(), img, bundle, UnpackOptions{MaxLayerSize: 1 << 30})
	if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), `"huge"`) {
		t.Fatalf("unpack: %v, want ErrTooLarge naming the entry", err)
	}
	if _, err := os.Stat(bundle); !os.IsNotExist(err) {
		t.Error("a refused unpack left the bundle")
	}
	f, err := s.Flatten(context.Background(), img, FlattenOptions{MaxLayerSize: 1 << 30})
	if err == nil {
		f.Close()
	}
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("flatten: %v, want ErrTooLarge", err)
	}
}

// TestHangingRegistryTimesOut: a registry that accepts and never answers
// fails after the timeout with a message that says so.
func TestHangingRegistryTimesOut(t *testing.T) {
	testenv.CheckLeaks(t)
	rr := newRegistry(t)
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	rr.hook = func(w http.ResponseWriter, r *http.Request) bool {
		select {
		case <-release:
		case <-time.After(10 * time.Second):
		}
		return true
	}
	ref, _ := ParseRef(rr.host + "/slow:1")
	start := time.Now()
	_, err := newStore(t).Pull(context.Background(), ref, PullOptions{SourceOptions: SourceOptions{Platform: amd64().Platform, Timeout: 300 * time.Millisecond}})
	if err == nil || !strings.Contains(err.Error(), "did not answer in time") {
		t.Fatalf("err = %v, want a timeout naming the registry", err)
	}
	if took := time.Since(start); took > 8*time.Second {
		t.Errorf("took %s despite a 300ms timeout", took)
	}
}
