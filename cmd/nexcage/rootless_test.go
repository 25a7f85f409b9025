package main

import (
	"archive/tar"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"golang.org/x/sys/unix"

	"github.com/nexcage/nexcage/internal/testbundle"
	"github.com/nexcage/nexcage/internal/testenv"
	"github.com/nexcage/nexcage/internal/testimage"
)

// TestRootlessUnpackAsOrdinaryUser runs the real binary as uid 65534: the
// unpack must succeed without root, keep foreign owners in the
// user.rootlesscontainers xattr, and say what it could not keep.
func TestRootlessUnpackAsOrdinaryUser(t *testing.T) {
	user := testenv.NewNobody(t, "nexcage-rootless-")
	dir, work := user.Dir, user.Work
	bin := nexcageBinary(t)

	cases, err := testimage.Corpus()
	if err != nil {
		t.Fatal(err)
	}
	p, err := layout.Write(filepath.Join(dir, "layout"), empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		if c.Name == "ids" || c.Name == "devices" {
			if err := p.AppendImage(c.Image, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": c.Name})); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Layout blobs are written 0600; the unprivileged user must read them.
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil {
			os.Chmod(p, fi.Mode().Perm()|0o044|(fi.Mode().Perm()&0o100)>>3|(fi.Mode().Perm()&0o100)>>6)
		}
		return nil
	})

	// nobody runs nexcage as uid 65534 with a minimal environment.
	nobody := func(t *testing.T, args ...string) string {
		t.Helper()
		out, err := user.Command(bin, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("rootless nexcage %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	unpack := func(t *testing.T, tag string) string {
		t.Helper()
		return nobody(t, "unpack", "--store", filepath.Join(work, "store"), "oci:"+filepath.Join(dir, "layout")+":"+tag, filepath.Join(work, tag))
	}

	t.Run("foreign owners kept in an xattr", func(t *testing.T) {
		out := unpack(t, "ids")
		if !strings.Contains(out, "rootless") {
			t.Errorf("output does not say the unpack was rootless:\n%s", out)
		}
		f := filepath.Join(work, "ids", "rootfs", "ids", "uid1000")
		var st syscall.Stat_t
		if err := syscall.Lstat(f, &st); err != nil {
			t.Fatal(err)
		}
		if st.Uid != 65534 {
			t.Errorf("%s is owned by %d, want the unpacking user 65534", f, st.Uid)
		}
		buf := make([]byte, 256)
		if n, err := unix.Lgetxattr(f, "user.rootlesscontainers", buf); err != nil || n == 0 {
			t.Errorf("%s has no user.rootlesscontainers xattr recording owner 1000: %v", f, err)
		}
	})

	// Issue 15 finding 11c: the template converted from that bundle holds
	// what build's holds, no device nodes (not empty 0666 stand-ins), and
	// still the fifo.
	t.Run("device nodes dropped, said, and left out of the template", func(t *testing.T) {
		if out := unpack(t, "devices"); !strings.Contains(out, "2 device node(s) were not created") {
			t.Errorf("a rootless unpack of device nodes did not say they were lost:\n%s", out)
		}
		outDir := filepath.Join(work, "out")
		nobody(t, "convert", "-q", filepath.Join(work, "devices"), "-o", outDir+"/")
		tpls, _ := filepath.Glob(filepath.Join(outDir, "*.tar.zst"))
		if len(tpls) != 1 {
			t.Fatalf("templates %v, want one", tpls)
		}
		members := templateMembers(t, tpls[0])
		for _, m := range []string{"./devices/null", "./devices/loop0"} {
			if _, ok := members[m]; ok {
				t.Errorf("the template holds %s (type %q): build drops device nodes", m, members[m])
			}
		}
		if members["./devices/fifo"] != tar.TypeFifo {
			t.Errorf("the template lost the fifo: %q", members["./devices/fifo"])
		}
	})
}

// templateMembers lists a template's members and their types.
func templateMembers(t *testing.T, path string) map[string]byte {
	t.Helper()
	out := map[string]byte{}
	for _, h := range testbundle.Members(t, path) {
		out[h.Name] = h.Typeflag
	}
	return out
}
