package convert_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/nexcage/nexcage/convert"
	"github.com/nexcage/nexcage/internal/testbundle"
	"github.com/nexcage/nexcage/internal/testenv"
	"github.com/nexcage/nexcage/internal/testimage"
	"github.com/nexcage/nexcage/progress"
	"github.com/nexcage/nexcage/rootfs"
)

// sharedStore is one store every image of a test is pulled into, as a
// template factory's builds share theirs.
func sharedStore(t *testing.T) *rootfs.Store {
	t.Helper()
	s, err := rootfs.OpenStore(filepath.Join(t.TempDir(), "store"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// buildBytes flattens img as build does (with or without the chain cache)
// and returns the template's bytes.
func buildBytes(t *testing.T, s *rootfs.Store, img rootfs.Image, level int, cache bool, rep progress.Reporter) []byte {
	t.Helper()
	f, err := s.Flatten(context.Background(), img, rootfs.FlattenOptions{PrecompressLevel: level, Cache: cache, Progress: rep})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	opts := convert.Options{Privileged: true, ToolVersion: "test", Output: t.TempDir() + "/"}
	res, err := convert.Write(context.Background(), f.Tree, f.Spec, opts)
	if err != nil {
		t.Fatal(err)
	}
	return readFile(t, res.Template)
}

// TestChainCacheEqualsCold: building from cached lower layers gives the
// cold build's bytes, for every corpus image built one after the other
// into one store (they all share the corpus base layer, and several their
// upper layers too), at the zstd level build precompresses at and without
// precompression (gzip and xz templates).
func TestChainCacheEqualsCold(t *testing.T) {
	testenv.CheckLeaks(t)
	for _, level := range []int{convert.PrecompressLevel(convert.Options{}), 0} {
		t.Run(fmt.Sprintf("level-%d", level), func(t *testing.T) {
			s := sharedStore(t)
			rep := testbundle.NewChainReuses()
			for _, c := range cases(t) {
				img := testbundle.Pull(t, s, c, c.Name)
				cold := buildBytes(t, s, img, level, false, progress.Discard)
				// The first build may reuse another image's base and
				// saves this one's lower layers; the second reuses them.
				for i := range 2 {
					if got := buildBytes(t, s, img, level, true, rep); !bytes.Equal(got, cold) {
						t.Errorf("%s: cached build %d: %d bytes differ from the cold build's %d", c.Name, i+1, len(got), len(cold))
					}
				}
			}
			entries, err := s.CacheEntries()
			if err != nil {
				t.Fatal(err)
			}
			if len(entries) == 0 || rep.N() < int64(len(cases(t))) {
				t.Fatalf("%d cache entries, %d builds reused one: the test proves nothing", len(entries), rep.N())
			}
			for _, e := range entries {
				if e.Err != nil || len(e.Chain) == 0 || e.Size <= 0 {
					t.Errorf("entry %s: chain %v, %d bytes, %v", e.Dir, e.Chain, e.Size, e.Err)
				}
			}
		})
	}
}

// chainBase is a base layer with what an upper layer can undo: small and
// large files (the large ones get frames of their own), hard links,
// symlinks, xattrs and nested directories.
func chainBase() []testimage.Entry {
	big := strings.Repeat("0123456789abcdef", 1<<17) // 2 MiB
	var es []testimage.Entry
	es = append(es,
		testimage.Dir("etc/", 0o755),
		testimage.File("etc/passwd", 0o644, "root:x:0:0:root:/root:/bin/sh\n"),
		testimage.File("etc/group", 0o644, "root:x:0:\n"),
		testimage.Dir("opt/", 0o755),
		testimage.Dir("opt/app/", 0o755),
		testimage.File("opt/app/big", 0o644, big),
		testimage.Hardlink("opt/app/big-link", "opt/app/big"),
		testimage.File("opt/app/small", 0o600, "small\n").Owner(1000, 1000),
		testimage.Hardlink("opt/app/small-link", "opt/app/small"),
		testimage.Symlink("opt/app/sym", "small"),
		testimage.File("opt/app/cap", 0o755, "cap\n").Xattr("user.note", "x\x00\xff"),
		testimage.Dir("opt/gone/", 0o755),
		testimage.File("opt/gone/a", 0o644, "a\n"),
		testimage.Dir("opt/opaque/", 0o755),
		testimage.File("opt/opaque/old", 0o644, "old\n"),
		testimage.Dir("usr/", 0o755),
		testimage.Dir("usr/share/", 0o755),
	)
	for i := range 1500 { // enough members for runs cut by zframe.CutBefore
		es = append(es, testimage.File(fmt.Sprintf("usr/share/f%04d", i), 0o644, fmt.Sprintf("file %d\n%s", i, strings.Repeat("x", i%700))))
	}
	es = append(es, testimage.File("usr/share/zz-big", 0o644, big+"tail"))
	return es
}

// TestChainCachePairs: images sharing a base whose upper layers white
// out, replace and hard-link into it build from the cached base to the
// cold bytes; so do a three-layer image, which reuses the shared base and
// then keeps its own two lower layers, and its rebuild after only its top
// layer changed, which reuses those.
func TestChainCachePairs(t *testing.T) {
	testenv.CheckLeaks(t)
	cfg := v1.Config{Env: []string{"PATH=/usr/bin:/bin"}}
	base := chainBase()
	uppers := map[string][][]testimage.Entry{
		"add": {{testimage.Dir("srv/", 0o755), testimage.File("srv/new", 0o644, "new\n")}},
		"undo": {{
			testimage.Whiteout("opt/gone"),
			testimage.OpaqueWhiteout("opt/opaque"),
			testimage.File("opt/opaque/new", 0o644, "new\n"),
			testimage.File("opt/app/small", 0o644, "replaced\n"), // its hard link keeps the old content
			testimage.Hardlink("srv-link", "opt/app/big"),
			testimage.Hardlink("etc/passwd-link", "etc/passwd"),
			testimage.Whiteout("usr/share/f0007"),
			testimage.File("usr/share/f0100", 0o644, "replaced\n"),
			testimage.Dir("usr/share/zz-big", 0o700), // a file replaced by a directory
		}},
		"three": {
			{testimage.Whiteout("opt/app/sym"), testimage.Hardlink("opt/app/big-2", "opt/app/big-link")},
			{testimage.File("top", 0o644, "one\n")},
		},
		"three-rebuilt": {
			{testimage.Whiteout("opt/app/sym"), testimage.Hardlink("opt/app/big-2", "opt/app/big-link")},
			{testimage.File("top", 0o644, "two\n"), testimage.Whiteout("usr/share/f0001")},
		},
	}
	for _, level := range []int{convert.PrecompressLevel(convert.Options{}), 0} {
		t.Run(fmt.Sprintf("level-%d", level), func(t *testing.T) {
			s := sharedStore(t)
			for _, name := range []string{"add", "undo", "three", "three-rebuilt"} {
				img, err := testimage.Layers(cfg, testimage.Gzip, append([][]testimage.Entry{base}, uppers[name]...)...)
				if err != nil {
					t.Fatal(err)
				}
				stored := testbundle.Pull(t, s, testimage.Case{Name: name, Image: img}, name)
				cold := buildBytes(t, s, stored, level, false, progress.Discard)
				rep := testbundle.NewChainReuses()
				if got := buildBytes(t, s, stored, level, true, rep); !bytes.Equal(got, cold) {
					t.Errorf("%s: the build from the cached base gives %d bytes that differ from the cold build's %d", name, len(got), len(cold))
				}
				// "add" is the first: nothing was cached before it.
				if want := int64(1); name != "add" && rep.N() != want {
					t.Errorf("%s: %d builds reused a cached chain, want %d", name, rep.N(), want)
				}
			}
		})
	}
}

// TestChainCacheCorruptIgnored: a cached chain whose files are damaged
// (a flipped byte, a truncation, a manifest that lies) is never used: the
// build gives the cold bytes, and the entry is replaced by a good one.
func TestChainCacheCorruptIgnored(t *testing.T) {
	testenv.CheckLeaks(t)
	cfg := v1.Config{Env: []string{"PATH=/usr/bin:/bin"}}
	level := convert.PrecompressLevel(convert.Options{})
	damage := map[string]func(t *testing.T, dir string){
		"data byte flipped":  func(t *testing.T, dir string) { flip(t, filepath.Join(dir, "data"), 1000) },
		"index byte flipped": func(t *testing.T, dir string) { flip(t, filepath.Join(dir, "index"), 40) },
		"data truncated": func(t *testing.T, dir string) {
			if err := os.Truncate(filepath.Join(dir, "data"), 100); err != nil {
				t.Fatal(err)
			}
		},
		"index truncated": func(t *testing.T, dir string) {
			if err := os.Truncate(filepath.Join(dir, "index"), 10); err != nil {
				t.Fatal(err)
			}
		},
		"manifest garbage": func(t *testing.T, dir string) {
			if err := os.WriteFile(filepath.Join(dir, "manifest.json"), []byte("{\"format\":"), 0o644); err != nil {
				t.Fatal(err)
			}
		},
		"manifest claims huge index": func(t *testing.T, dir string) {
			b, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
			if err != nil {
				t.Fatal(err)
			}
			b = bytes.Replace(b, []byte(`"indexSize": `), []byte(`"indexSize": 99999999999`), 1)
			if err := os.WriteFile(filepath.Join(dir, "manifest.json"), b, 0o644); err != nil {
				t.Fatal(err)
			}
		},
	}
	for name, hurt := range damage {
		t.Run(name, func(t *testing.T) {
			s := sharedStore(t)
			img, err := testimage.Layers(cfg, testimage.Gzip, chainBase(), []testimage.Entry{testimage.File("top", 0o644, "top\n")})
			if err != nil {
				t.Fatal(err)
			}
			stored := testbundle.Pull(t, s, testimage.Case{Name: "c", Image: img}, "c")
			cold := buildBytes(t, s, stored, level, false, progress.Discard)
			buildBytes(t, s, stored, level, true, progress.Discard) // saves the base
			entries, err := s.CacheEntries()
			if err != nil || len(entries) != 1 {
				t.Fatalf("%d entries, %v; want 1", len(entries), err)
			}
			hurt(t, entries[0].Dir)
			rep := testbundle.NewChainReuses()
			if got := buildBytes(t, s, stored, level, true, rep); !bytes.Equal(got, cold) {
				t.Errorf("after damage: %d bytes differ from the cold build's %d", len(got), len(cold))
			}
			if rep.N() != 0 {
				t.Error("the damaged entry was used")
			}
			// It was dropped and written again: the next build uses it.
			rep = testbundle.NewChainReuses()
			if got := buildBytes(t, s, stored, level, true, rep); !bytes.Equal(got, cold) || rep.N() != 1 {
				t.Errorf("rebuilt entry: equal %v, %d reuses", bytes.Equal(got, cold), rep.N())
			}
		})
	}
}

func flip(t *testing.T, path string, at int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, at); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0xff
	if _, err := f.WriteAt(b, at); err != nil {
		t.Fatal(err)
	}
}
