package rootfs

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	ispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/nexcage/nexcage/internal/testenv"
	"github.com/nexcage/nexcage/progress"
)

func FuzzParseRef(f *testing.F) {
	for _, s := range []string{"alpine", "docker://a/b:c", "oci:/x:y", "oci-archive:f.tar", "docker-archive:a.tar:r:t", "localhost:5000/a@sha256:" + strings.Repeat("a", 64), ":", "oci::"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		defer testenv.Timed(t)()
		r, err := ParseRef(s)
		if testenv.Refused(t, err) {
			return
		}
		// The canonical form is what the store keys images by: it must
		// parse back to the same reference.
		back, err := ParseRef(r.String())
		if err != nil || back != r {
			t.Fatalf("%q -> %q -> %+v, %v", s, r.String(), back, err)
		}
	})
}

// tarOf builds a layer from name/type pairs, for seeds.
func tarOf(entries ...tar.Header) []byte {
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, h := range entries {
		h := h
		body := []byte(nil)
		if h.Typeflag == tar.TypeReg {
			body = []byte("content of " + h.Name)
			h.Size = int64(len(body))
		}
		tw.WriteHeader(&h)
		tw.Write(body)
	}
	tw.Close()
	return b.Bytes()
}

// FuzzFlatten feeds arbitrary tar streams, as one or two layers, to the
// flattener: no panic, refusals are errors with a message, and nothing is
// written outside its spill directory.
func FuzzFlatten(f *testing.F) {
	reg := func(n string) tar.Header { return tar.Header{Name: n, Typeflag: tar.TypeReg, Mode: 0o644} }
	f.Add(tarOf(tar.Header{Name: "a/", Typeflag: tar.TypeDir, Mode: 0o755}, reg("a/b")), tarOf(reg("a/.wh.b"), reg("a/.wh..wh..opq")))
	f.Add(tarOf(tar.Header{Name: "l", Typeflag: tar.TypeSymlink, Linkname: "../../.."}, reg("l/x")), []byte{})
	f.Add(tarOf(reg("f"), tar.Header{Name: "h", Typeflag: tar.TypeLink, Linkname: "f"}), tarOf(tar.Header{Name: "f", Typeflag: tar.TypeDir, Mode: 0o700}))
	f.Add(tarOf(reg("../x"), reg("/abs")), tarOf(reg(".wh..."), reg("./")))
	// Issue 15's blow-ups, small enough to run every time and each slower
	// than a second before the fix: a symlink of 8000 components written
	// through, and an opaque whiteout repeated 3000 times over as many
	// files (both quadratic then).
	f.Add(tarOf(tar.Header{Name: "l", Typeflag: tar.TypeSymlink, Linkname: strings.Repeat("a/", 8000)}, reg("l/x")), []byte{})
	var opaque []tar.Header
	for i := range 3000 {
		opaque = append(opaque, reg(fmt.Sprintf("d/f%d", i)), reg("d/.wh..wh..opq"))
	}
	f.Add(tarOf(reg("d/lower")), tarOf(opaque...))
	f.Fuzz(func(t *testing.T, layer1, layer2 []byte) {
		defer testenv.Timed(t)()
		work := t.TempDir()
		spillDir := filepath.Join(work, "spill")
		os.Mkdir(spillDir, 0o755)
		fl := newFlattener()
		budget := newEntryBudget(1<<16, spillDir)
		for i, raw := range [][]byte{layer1, layer2} {
			d := ispec.Descriptor{MediaType: ispec.MediaTypeImageLayer, Digest: digest.FromBytes(raw), Size: int64(len(raw))}
			// A small limit: sparse entries can claim terabytes.
			read, spill, err := readLayer(context.Background(), bytes.NewReader(raw), spillDir, i, d, digest.FromBytes(raw), 1<<20, budget, nil, nil, progress.Discard.Bytes("", 0))
			if spill != nil {
				defer spill.Close()
			}
			if testenv.Refused(t, err) {
				return
			}
			for e := range read.entries.all() {
				if err := fl.apply(e); err != nil {
					if err.Error() == "" || (errors.Is(err, ErrHostileLayer) && !strings.Contains(err.Error(), "entry")) {
						t.Fatalf("unhelpful error %q", err)
					}
					return
				}
			}
			fl.endLayer()
		}
		// Only spill files were written.
		entries, _ := os.ReadDir(work)
		if len(entries) != 1 {
			t.Fatalf("the flattener wrote outside its spill directory: %v", entries)
		}
	})
}
