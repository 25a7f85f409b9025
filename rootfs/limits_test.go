package rootfs

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/nexcage/nexcage/internal/limits"
	"github.com/nexcage/nexcage/internal/testenv"
	"github.com/nexcage/nexcage/progress"
)

// flattenRaw reads and applies uncompressed layers as Flatten does, with
// an entry budget of maxEntries.
func flattenRaw(t *testing.T, maxEntries int64, layers ...[]byte) (*flattener, error) {
	t.Helper()
	dir := t.TempDir()
	fl := newFlattener()
	budget := newEntryBudget(maxEntries, dir)
	for i, raw := range layers {
		d := ispec.Descriptor{MediaType: ispec.MediaTypeImageLayer, Digest: digest.FromBytes(raw), Size: int64(len(raw))}
		read, spill, err := readLayer(context.Background(), bytes.NewReader(raw), dir, i, d, digest.FromBytes(raw), 1<<30, budget, nil, nil, progress.Discard.Bytes("", 0))
		if spill != nil {
			t.Cleanup(func() { spill.Close() })
		}
		if err != nil {
			return fl, err
		}
		for e := range read.entries.all() {
			if err := fl.apply(e); err != nil {
				return fl, err
			}
		}
		fl.endLayer()
	}
	return fl, nil
}

// rawTar is a layer of the given headers; regular files are empty.
func rawTar(hdrs ...tar.Header) []byte {
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, h := range hdrs {
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		tw.WriteHeader(&h)
	}
	tw.Close()
	return b.Bytes()
}

func reg(name string) tar.Header { return tar.Header{Name: name, Typeflag: tar.TypeReg} }
func link(name, target string) tar.Header {
	return tar.Header{Name: name, Typeflag: tar.TypeSymlink, Linkname: target}
}

// TestHostileLayersCostBoundedWork: each tiny layer of issue 15 that once
// cost seconds to minutes, or gigabytes, in the flattener now ends in well
// under a second and a few MB of allocation, refused with a LimitError
// naming the limit (or, for the whiteouts, accepted with the right tree).
// Before: the 8000-component symlink took 11 s and 280 MB, 5000 repeated
// opaque whiteouts 31 s.
func TestHostileLayersCostBoundedWork(t *testing.T) {
	var chain []tar.Header // 41 links, each through the one before
	chain = append(chain, tar.Header{Name: "c0/", Typeflag: tar.TypeDir, Mode: 0o755})
	for i := 1; i <= 41; i++ {
		chain = append(chain, link(fmt.Sprintf("c%d", i), fmt.Sprintf("c%d", i-1)))
	}
	chain = append(chain, reg("c41/x"))
	opaque := []tar.Header{{Name: "d/", Typeflag: tar.TypeDir, Mode: 0o755}}
	for i := range 20000 {
		opaque = append(opaque, reg(fmt.Sprintf("d/f%d", i)), reg("d/.wh..wh..opq"))
	}
	nested := []tar.Header{}
	deep := "n"
	for range 1000 {
		nested = append(nested, reg(deep+"/.wh..wh..opq"))
		deep += "/n"
	}
	for i := range 2000 {
		nested = append(nested, reg(fmt.Sprintf("%s/f%d", deep, i)))
	}
	for d := deep; d != "."; d = filepath.Dir(d) {
		nested = append(nested, reg(d+"/.wh..wh..opq"))
	}
	var deepFiles []tar.Header
	for i := range 3000 {
		deepFiles = append(deepFiles, reg(fmt.Sprintf("%s/f%d", deep, i)))
	}
	many := make([]tar.Header, 3000)
	for i := range many {
		many[i] = reg(fmt.Sprintf("f%d", i))
	}
	for _, tc := range []struct {
		name   string
		layers [][]byte
		limit  string // "" for an accepted layer
		words  string
		check  func(t *testing.T, fl *flattener)
	}{
		{"symlink target of 8000 components", [][]byte{rawTar(link("l", strings.Repeat("a/", 8000)), reg("l/x"))}, limits.PathLength, "16000-byte target", nil},
		{"symlinks resolving past PATH_MAX", [][]byte{rawTar(
			tar.Header{Name: "b/", Typeflag: tar.TypeDir, Mode: 0o755},
			link("l1", "b/"+strings.Repeat("b/", 1500)), link("l2", "l1/"+strings.Repeat("b/", 1500)), reg("l2/x"))}, limits.PathLength, "PATH_MAX", nil},
		{"41 symlinks in a chain", [][]byte{rawTar(chain...)}, limits.SymlinkHops, "too many levels of symbolic links", nil},
		{"name component over NAME_MAX", [][]byte{rawTar(reg("d/" + strings.Repeat("n", 256)))}, limits.NameLength, "NAME_MAX", nil},
		{"entries over the limit", [][]byte{rawTar(many[:1500]...), rawTar(many[1500:]...)}, limits.Entries, "more than 2000 entries", nil},
		{"opaque whiteout repeated 20000 times", [][]byte{rawTar(reg("d/lower")), rawTar(opaque...)}, "", "", func(t *testing.T, fl *flattener) {
			if fl.tree.Get("d/lower") != nil || fl.tree.Get("d/f19999") == nil || fl.tree.Get("d/f0") == nil {
				t.Error("the whiteouts did not keep this layer's files and drop the lower one")
			}
		}},
		// Each entry resolves its 1000 parents: one lookup each, not a
		// walk from the root each (1000² per entry, 87 s in all).
		{"3000 files 1000 directories deep", [][]byte{rawTar(deepFiles...)}, "", "", func(t *testing.T, fl *flattener) {
			if fl.tree.Get(deep+"/f2999") == nil {
				t.Error("the deep files are missing")
			}
		}},
		{"1000 nested opaque whiteouts over 2000 files", [][]byte{rawTar(reg("n/lower")), rawTar(nested...)}, "", "", func(t *testing.T, fl *flattener) {
			if fl.tree.Get("n/lower") != nil || fl.tree.Get(deep+"/f1999") == nil {
				t.Error("the whiteouts did not keep this layer's files and drop the lower one")
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			maxEntries := int64(DefaultMaxEntries)
			if tc.limit == limits.Entries {
				maxEntries = 2000
			}
			stop := peakHeap()
			start := time.Now()
			fl, err := flattenRaw(t, maxEntries, tc.layers...)
			took := time.Since(start)
			peak := stop()
			t.Logf("took %s, peak heap %d MB over the start", took.Round(time.Millisecond), peak>>20)
			// Generous: the fixed code takes under half a second.
			if took > testenv.Slowdown(5*time.Second) {
				t.Errorf("took %s", took)
			}
			if peak > 300<<20 {
				t.Errorf("peak heap %d MB over the start", peak>>20)
			}
			if tc.limit == "" {
				if err != nil {
					t.Fatal(err)
				}
				tc.check(t, fl)
				return
			}
			var le *LimitError
			if !errors.As(err, &le) || le.Limit != tc.limit || !strings.Contains(err.Error(), tc.words) {
				t.Fatalf("err = %v, want a LimitError on %s saying %q", err, tc.limit, tc.words)
			}
			if le.Value <= le.Max {
				t.Errorf("LimitError{Value: %d, Max: %d}: the value is not over the limit", le.Value, le.Max)
			}
		})
	}
}

// TestMetadataReadsAreCapped: a sparse config or manifest in the store is
// refused by its size, without reading it (before: a 3 GiB config was
// read whole, 10 GB RSS, 70 s, before "not valid JSON").
func TestMetadataReadsAreCapped(t *testing.T) {
	s := newStore(t)
	h := digest.FromString("x")
	p := filepath.Join(s.Dir, "blobs", "sha256", h.Encoded())
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(3 << 30) // apparent size only
	f.Close()
	start := time.Now()
	_, err = s.imageConfig(ispec.Manifest{Config: ispec.Descriptor{Digest: h}})
	var le *LimitError
	if !errors.As(err, &le) || le.Limit != limits.MetadataSize || le.Value != 3<<30 {
		t.Fatalf("err = %v, want a LimitError on the metadata size of 3 GiB", err)
	}
	if _, err := s.ociManifest(h.String()); !errors.As(err, &le) {
		t.Errorf("manifest: err = %v, want a LimitError", err)
	}
	if took := time.Since(start); took > testenv.Slowdown(time.Second) {
		t.Errorf("took %s to refuse", took)
	}
}

// peakHeap samples the live heap until the returned function is called,
// which gives its peak over what it was at the start.
func peakHeap() func() uint64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	base, peak := ms.HeapAlloc, ms.HeapAlloc
	done, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapAlloc)
			select {
			case <-done:
				return
			case <-tick.C:
			}
		}
	}()
	return func() uint64 {
		close(done)
		<-stopped
		return peak - base
	}
}
