package convert_test

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"path/filepath"
	"testing"
	"time"

	"github.com/nexcage/nexcage/convert"
	"github.com/nexcage/nexcage/internal/testbundle"
	"github.com/nexcage/nexcage/internal/testenv"
	"github.com/nexcage/nexcage/internal/testimage"
	"github.com/nexcage/nexcage/internal/zframe"
	"github.com/nexcage/nexcage/rootfs"
	"github.com/nexcage/nexcage/tartree"
	"github.com/nexcage/nexcage/template"
)

// TestStreamingEqualsStaged is build's contract: flattening the layers
// straight into the template gives the very bytes (template, conf and
// json) of unpacking to disk and converting the rootfs, for every image of
// the corpus.
func TestStreamingEqualsStaged(t *testing.T) {
	testenv.CheckLeaks(t)
	testenv.RequireRoot(t) // the staged reference path needs root for owners and devices
	for _, c := range cases(t) {
		t.Run(c.Name, func(t *testing.T) {
			opts := convert.Options{Privileged: true, ToolVersion: "test"}
			staged := convertTo(t, unpack(t, c, false), t.TempDir(), opts)
			s, img := storeCase(t, c)
			// As build runs it: large files compressed while the layers
			// are read; and without, as for a gzip or xz template.
			for _, level := range []int{convert.PrecompressLevel(opts), 0} {
				f, err := s.Flatten(context.Background(), img, rootfs.FlattenOptions{PrecompressLevel: level})
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				if level == 0 {
					checkSerialisation(t, f.Tree)
				}
				if level != 0 {
					checkPrecompressed(t, c, f.Tree)
				}
				opts.Output = t.TempDir() + "/"
				streamed, err := convert.Write(context.Background(), f.Tree, f.Spec, opts)
				if err != nil {
					t.Fatal(err)
				}
				if filepath.Base(streamed.Template) != filepath.Base(staged.Template) {
					t.Errorf("names differ: %s vs %s", filepath.Base(streamed.Template), filepath.Base(staged.Template))
				}
				if !bytes.Equal(readFile(t, streamed.Template), readFile(t, staged.Template)) {
					t.Errorf("precompress level %d:", level)
					testbundle.DiffMembers(t, staged.Template, streamed.Template)
				}
				if a, b := normalise(string(readFile(t, staged.Config))), normalise(string(readFile(t, streamed.Config))); a != b {
					t.Errorf("conf differs:\nstaged:\n%s\nstreamed:\n%s", a, b)
				}
				if a, b := normalise(string(readFile(t, staged.SidecarJSON))), normalise(string(readFile(t, streamed.SidecarJSON))); a != b {
					t.Errorf("manifest differs:\nstaged:\n%s\nstreamed:\n%s", a, b)
				}
			}
		})
	}
}

// checkSerialisation proves the writer's tar bytes are archive/tar's.
func checkSerialisation(t *testing.T, tree *tartree.Tree) {
	t.Helper()
	var got, want bytes.Buffer
	if err := convert.WriteTar(context.Background(), &got, tree, time.Time{}); err != nil {
		t.Fatal(err)
	}
	if err := convert.RefWriteTar(context.Background(), &want, tree, time.Time{}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Bytes(), want.Bytes()) {
		t.Errorf("WriteTar gives %d bytes that differ from archive/tar's %d", got.Len(), want.Len())
	}
}

// checkPrecompressed proves the precompressed path was taken where it
// should be, and that a file kept only as frames still reads back.
func checkPrecompressed(t *testing.T, c testimage.Case, tree *tartree.Tree) {
	t.Helper()
	framed := 0
	tree.Walk(func(p string, n *tartree.Node) error {
		if n.Compressed != nil {
			framed++
		}
		if n.Type == tar.TypeReg && zframe.OwnFrames(n.Size) && n.Compressed == nil {
			t.Errorf("%s (%d bytes) was not compressed ahead", p, n.Size)
		}
		return nil
	})
	for _, e := range c.Expect {
		if !zframe.OwnFrames(int64(len(e.Body))) {
			continue
		}
		got, err := tree.ReadFile(e.Path, 1<<30)
		if err != nil || string(got) != e.Body {
			t.Errorf("%s read back from its frames: %d bytes, %v; want the %d bytes it had", e.Path, len(got), err, len(e.Body))
		}
	}
	if c.Name == "large-files" && framed == 0 {
		t.Error("no file was compressed ahead: the test proves nothing")
	}
}

// TestRunsReused proves build compresses most of a template while it reads
// the layers, and that the writer uses a run compressed ahead only where
// the archive holds exactly its members: with the mtime clamp, and with a
// clamp the runs were not made for, the template is still the staged one.
func TestRunsReused(t *testing.T) {
	testenv.CheckLeaks(t)
	testenv.RequireRoot(t)
	var c testimage.Case
	for _, k := range cases(t) {
		if k.Name == "runs" {
			c = k
		}
	}
	s, img := storeCase(t, c)
	bundle := unpack(t, c, false)
	clamp := time.Unix(1577836800, 0) // 2020, before most of the case's mtimes
	for _, v := range []struct {
		name              string
		writer, flattener time.Time
		most              bool // most of the archive must be reused
	}{
		{"no clamp", time.Time{}, time.Time{}, true},
		{"clamp", clamp, clamp, true},
		{"runs made without the clamp", clamp, time.Time{}, false},
	} {
		t.Run(v.name, func(t *testing.T) {
			opts := convert.Options{Privileged: true, ToolVersion: "test", SourceDateEpoch: v.writer}
			staged := convertTo(t, bundle, t.TempDir(), opts)
			f, err := s.Flatten(context.Background(), img, rootfs.FlattenOptions{PrecompressLevel: convert.PrecompressLevel(opts), Clamp: v.flattener})
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if len(f.Tree.Runs) < 3 {
				t.Fatalf("%d runs compressed ahead: the case no longer has the cuts this test needs", len(f.Tree.Runs))
			}
			opts.Output = t.TempDir() + "/"
			streamed, err := convert.Write(context.Background(), f.Tree, f.Spec, opts)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(readFile(t, streamed.Template), readFile(t, staged.Template)) {
				testbundle.DiffMembers(t, staged.Template, streamed.Template)
			}
			archive := tarLength(t, streamed.Template)
			large := int64(1<<20 + 3 + 509) // d20/f40 and its padding, whose frames are its own
			t.Logf("%d of %d archive bytes compressed ahead", streamed.Precompressed, archive)
			switch {
			case v.most && streamed.Precompressed < archive/2:
				t.Errorf("%d of %d archive bytes were compressed ahead; want most", streamed.Precompressed, archive)
			case !v.most && streamed.Precompressed > large:
				t.Errorf("%d archive bytes were compressed ahead for headers the writer clamps differently; want only the large file's %d", streamed.Precompressed, large)
			}
		})
	}
}

func tarLength(t *testing.T, file string) int64 {
	t.Helper()
	r, _, err := template.OpenTar(file)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	n, err := io.Copy(io.Discard, r)
	if err != nil {
		t.Fatal(err)
	}
	return n
}
