package rootfs

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	rootlesscontainers "github.com/rootless-containers/proto/go-proto"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/nexcage/nexcage/internal/fstree"
	"github.com/nexcage/nexcage/internal/testenv"
	"github.com/nexcage/nexcage/internal/testimage"
	"github.com/nexcage/nexcage/progress"
)

// pullCase stores a corpus case from an OCI layout.
func pullCase(t testing.TB, s *Store, c testimage.Case) Image {
	t.Helper()
	_, img := pullCaseRef(t, s, c)
	return img
}

// pullCaseRef is pullCase, also returning the reference it pulled.
func pullCaseRef(t testing.TB, s *Store, c testimage.Case) (Ref, Image) {
	t.Helper()
	ref := writeLayout(t, filepath.Join(t.TempDir(), "layout"), c.Name, c)
	so := amd64()
	if c.Image != nil {
		if cfg, err := c.Image.ConfigFile(); err == nil && cfg.Architecture != "" {
			so.Platform = Platform{OS: cfg.OS, Architecture: cfg.Architecture, Variant: cfg.Variant}
		}
	}
	img, err := s.Pull(context.Background(), ref, PullOptions{SourceOptions: so})
	if err != nil {
		t.Fatalf("pull %s: %v", c.Name, err)
	}
	return ref, img
}

func TestUnpackCorpus(t *testing.T) {
	s := newStore(t)
	for _, c := range allCases(t) {
		t.Run(c.Name, func(t *testing.T) {
			if c.RootOnly {
				testenv.RequireRoot(t)
			}
			img := pullCase(t, s, c)
			bundle := filepath.Join(t.TempDir(), "bundle")
			res, err := s.Unpack(context.Background(), img, bundle, UnpackOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if err := testimage.Verify(res.Rootfs, c.Expect); err != nil {
				t.Fatal(err)
			}
			if spec := specOf(t, res.Config); spec.Root == nil || spec.Root.Path != "rootfs" || spec.Process == nil {
				t.Fatalf("config.json unusable: %+v", spec.Root)
			}
			noLeftovers(t, filepath.Dir(bundle))
		})
	}
}

func TestUnpackRuntimeConfigFollowsImage(t *testing.T) {
	testenv.RequireRoot(t) // alpine-app's user 1000 is resolved against the rootfs
	s := newStore(t)
	img := pullCase(t, s, corpusCase(t, "alpine-app"))
	res, err := s.Unpack(context.Background(), img, filepath.Join(t.TempDir(), "b"), UnpackOptions{})
	if err != nil {
		t.Fatal(err)
	}
	spec := specOf(t, res.Config)
	cfg, _ := corpusCase(t, "alpine-app").Image.ConfigFile()
	wantArgs := append(append([]string{}, cfg.Config.Entrypoint...), cfg.Config.Cmd...)
	if strings.Join(spec.Process.Args, " ") != strings.Join(wantArgs, " ") || spec.Process.Cwd != cfg.Config.WorkingDir || spec.Process.User.UID != 1000 {
		t.Fatalf("process %+v does not follow the image config %+v", spec.Process, cfg.Config)
	}
}

func TestUnpackRootless(t *testing.T) {
	// Rootless mode works as any user; as root it proves that owners other
	// than the caller go to the user.rootlesscontainers xattr, not chown.
	s := newStore(t)
	for _, name := range []string{"whiteouts", "opaque", "hardlink-lower", "symlinks", "modes", "ids", "alpine-amd64"} {
		t.Run(name, func(t *testing.T) {
			c := corpusCase(t, name)
			res, err := s.Unpack(context.Background(), pullCase(t, s, c), filepath.Join(t.TempDir(), "b"), UnpackOptions{Rootless: true})
			if err != nil {
				t.Fatal(err)
			}
			if !res.Rootless {
				t.Fatal("result does not say rootless")
			}
			var expect []testimage.Expect
			for _, e := range c.Expect {
				e.Owner = "" // ownership is the caller's in rootless mode
				expect = append(expect, e)
			}
			if err := testimage.Verify(res.Rootfs, expect); err != nil {
				t.Fatal(err)
			}
			// Every owner the layers gave is on disk as the caller, with
			// the real one in user.rootlesscontainers when it is not root.
			for _, e := range c.Expect {
				// Linux allows no user.* xattrs on symlinks, so a rootless
				// unpack cannot record a symlink's owner (umoci's limit too).
				if e.Owner == "" || e.Owner == "0:0" || e.Absent || e.Type == tar.TypeSymlink {
					continue
				}
				p := filepath.Join(res.Rootfs, e.Path)
				var st syscall.Stat_t
				if err := syscall.Lstat(p, &st); err != nil {
					t.Fatal(err)
				}
				if int(st.Uid) != os.Geteuid() {
					t.Errorf("%s is owned by %d, want the caller %d", e.Path, st.Uid, os.Geteuid())
				}
				if got := rootlessOwner(t, p); got != e.Owner {
					t.Errorf("%s: user.rootlesscontainers says %s, want %s", e.Path, got, e.Owner)
				}
			}
		})
	}
}

// rootlessOwner decodes user.rootlesscontainers as "uid:gid" (0 where the
// xattr leaves an id unset).
func rootlessOwner(t testing.TB, p string) string {
	t.Helper()
	buf := make([]byte, 256)
	n, err := unix.Lgetxattr(p, rootlesscontainers.Keyname, buf)
	if err != nil {
		return "0:0"
	}
	var res rootlesscontainers.Resource
	if err := proto.Unmarshal(buf[:n], &res); err != nil {
		t.Fatalf("%s: corrupt %s: %v", p, rootlesscontainers.Keyname, err)
	}
	id := func(v uint32) uint32 {
		if v == rootlesscontainers.NoopID {
			return 0
		}
		return v
	}
	return fmt.Sprintf("%d:%d", id(res.Uid), id(res.Gid))
}

func TestUnpackRefusesHostileLayers(t *testing.T) {
	hostile, err := testimage.Hostile()
	if err != nil {
		t.Fatal(err)
	}
	names := slices.Sorted(maps.Keys(hostile))
	s := newStore(t)
	for _, n := range names {
		t.Run(n, func(t *testing.T) {
			img := pullCase(t, s, testimage.Case{Name: n, Image: hostile[n]})
			work := t.TempDir()
			bundle := filepath.Join(work, "deep", "er", "bundle")
			before := snapshotOutside(t, work)
			_, err := s.Unpack(context.Background(), img, bundle, UnpackOptions{})
			if !errors.Is(err, ErrHostileLayer) {
				t.Fatalf("err = %v, want ErrHostileLayer", err)
			}
			layers, _ := hostile[n].Layers()
			ld, _ := layers[0].Digest()
			if !strings.Contains(err.Error(), ld.String()) {
				t.Errorf("error %q does not name the layer %s", err, ld)
			}
			if _, err := os.Stat(bundle); !os.IsNotExist(err) {
				t.Errorf("a refused unpack left the bundle behind: %v", err)
			}
			noLeftovers(t, work)
			if d := fstree.Diff(before, snapshotOutside(t, work)); len(d) != 0 {
				t.Errorf("files changed outside the bundle: %v", d)
			}
			for _, p := range []string{"/tmp/pwned", "/escape", filepath.Join(work, "escape"), filepath.Join(work, "deep", "escape")} {
				if _, err := os.Lstat(p); err == nil {
					t.Errorf("%s was written outside the bundle", p)
				}
			}
		})
	}
}

// snapshotOutside records the work dir minus the bundle's parents.
func snapshotOutside(t testing.TB, dir string) fstree.Tree {
	t.Helper()
	tree, err := fstree.Snapshot(dir, fstree.Options{Skip: func(rel string) bool { return strings.HasPrefix(rel, "deep") }})
	if err != nil {
		t.Fatal(err)
	}
	return tree
}

func TestUnpackRefusesNonEmptyBundle(t *testing.T) {
	s := leakCheckedStore(t)
	img := pullCase(t, s, corpusCase(t, "modes"))
	bundle := t.TempDir()
	keep := filepath.Join(bundle, "precious")
	os.WriteFile(keep, []byte("mine"), 0o644)
	_, err := s.Unpack(context.Background(), img, bundle, UnpackOptions{})
	if !errors.Is(err, ErrBundleExists) || !strings.Contains(err.Error(), "force the write") {
		t.Fatalf("err = %v, want ErrBundleExists suggesting a forced write", err)
	}
	if b, _ := os.ReadFile(keep); string(b) != "mine" {
		t.Fatal("a refused unpack touched the existing bundle")
	}
	// An empty directory is fine, and so is --force on a full one.
	empty := t.TempDir()
	if _, err := s.Unpack(context.Background(), img, empty, UnpackOptions{}); err != nil {
		t.Fatalf("unpack into an empty directory: %v", err)
	}
	if _, err := s.Unpack(context.Background(), img, bundle, UnpackOptions{Force: true}); err != nil {
		t.Fatalf("--force: %v", err)
	}
	if _, err := os.Stat(keep); !os.IsNotExist(err) {
		t.Error("--force kept the old bundle's contents")
	}
	if _, err := os.Stat(filepath.Join(bundle, "rootfs", "etc")); err != nil {
		t.Errorf("--force did not write the new rootfs: %v", err)
	}
	noLeftovers(t, filepath.Dir(bundle))
}

func TestUnpackFailureKeepsOldBundle(t *testing.T) {
	s := leakCheckedStore(t)
	c := corpusCase(t, "whiteouts")
	img := pullCase(t, s, c)
	bundle := filepath.Join(t.TempDir(), "b")
	if _, err := s.Unpack(context.Background(), img, bundle, UnpackOptions{}); err != nil {
		t.Fatal(err)
	}
	before, _ := fstree.Snapshot(bundle, fstree.Options{})

	// Break the last layer in the store: its diff_id check fails at the end,
	// after most of the rootfs was written.
	layers, _ := c.Image.Layers()
	d, _ := layers[len(layers)-1].Digest()
	blob, _ := os.ReadFile(s.BlobPath(d))
	os.Chmod(s.BlobPath(d), 0o644)
	blob[len(blob)-10] ^= 0xff
	if err := os.WriteFile(s.BlobPath(d), blob, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := s.Unpack(context.Background(), img, bundle, UnpackOptions{Force: true})
	if err == nil || !strings.Contains(err.Error(), d.String()) {
		t.Fatalf("err = %v, want a failure naming layer %s", err, d)
	}
	after, _ := fstree.Snapshot(bundle, fstree.Options{})
	if diff := fstree.Diff(before, after); len(diff) != 0 {
		t.Fatalf("a failed --force unpack changed the old bundle: %v", diff)
	}
	noLeftovers(t, filepath.Dir(bundle))
}

func TestUnpackCancelled(t *testing.T) {
	s := leakCheckedStore(t)
	img := pullCase(t, s, corpusCase(t, "alpine-amd64"))
	ctx, cancel := context.WithCancel(context.Background())
	// Cancel in the middle of the layer: after a few hundred entries were
	// written, so the cleanup has a half-made rootfs to remove.
	rep := &cancelAfter{n: 300 * 1024, cancel: cancel}
	bundle := filepath.Join(t.TempDir(), "b")
	if _, err := s.Unpack(ctx, img, bundle, UnpackOptions{Progress: rep}); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if rep.seen < rep.n {
		t.Fatalf("cancelled after %d bytes, before the layer was under way", rep.seen)
	}
	if _, err := os.Stat(bundle); !os.IsNotExist(err) {
		t.Fatal("a cancelled unpack left a bundle")
	}
	noLeftovers(t, filepath.Dir(bundle))
}

// cancelAfter cancels once n compressed bytes were read.
type cancelAfter struct {
	progress.Reporter
	n, seen int
	cancel  func()
}

func (c *cancelAfter) Step(string, ...any)                  {}
func (c *cancelAfter) Warn(string, ...any)                  {}
func (c *cancelAfter) Bytes(string, int64) progress.Counter { return c }
func (c *cancelAfter) Done(string)                          {}
func (c *cancelAfter) Add(n int) {
	if c.seen += n; c.seen >= c.n {
		c.cancel()
	}
}
