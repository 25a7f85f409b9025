package rootfs

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/opencontainers/go-digest"
	ispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/nexcage/nexcage/health"
	"github.com/nexcage/nexcage/internal/healthtest"
	"github.com/nexcage/nexcage/internal/testenv"
	"github.com/nexcage/nexcage/internal/testimage"
)

// withManifest stores a copy of img's manifest changed by edit and returns
// the image pointing at it: what a hostile store can hold.
func withManifest(t *testing.T, s *Store, img Image, edit func(*ispec.Manifest)) Image {
	t.Helper()
	m, err := s.ociManifest(img.Digest)
	if err != nil {
		t.Fatal(err)
	}
	edit(&m)
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	d := digest.FromBytes(b)
	if err := os.WriteFile(filepath.Join(s.Dir, "blobs", "sha256", d.Encoded()), b, 0o644); err != nil {
		t.Fatal(err)
	}
	img.Digest = d.String()
	return img
}

// TestHostileStoreBlobs: digests and blob files of the store are
// attacker-written. A digest climbing out of the store, a short one, a
// blob that is a symlink to an endless device, a FIFO, or a blob larger
// than its descriptor each fail at once, in unpack and in build's
// flattener alike, instead of reading /dev/zero forever, hanging on open
// or panicking.
func TestHostileStoreBlobs(t *testing.T) {
	s := leakCheckedStore(t)
	vimg, err := testimage.Layers(v1.Config{Entrypoint: []string{"/f"}}, testimage.Uncompressed, []testimage.Entry{testimage.File("f", 0o644, "x")})
	if err != nil {
		t.Fatal(err)
	}
	stored := pullCase(t, s, testimage.Case{Name: "blobs", Image: vimg})
	m, err := s.ociManifest(stored.Digest)
	if err != nil {
		t.Fatal(err)
	}
	layerPath := filepath.Join(s.Dir, "blobs", "sha256", m.Layers[0].Digest.Encoded())
	good, err := os.ReadFile(layerPath)
	if err != nil {
		t.Fatal(err)
	}
	restore := func() {
		os.Remove(layerPath)
		if err := os.WriteFile(layerPath, good, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name  string
		setup func() Image
	}{
		{"climbing layer digest", func() Image {
			return withManifest(t, s, stored, func(m *ispec.Manifest) {
				m.Layers[0].Digest = "sha256:../../../../dev/zero"
				m.Layers[0].MediaType = ispec.MediaTypeImageLayer
			})
		}},
		{"short layer digest", func() Image {
			return withManifest(t, s, stored, func(m *ispec.Manifest) { m.Layers[0].Digest = "sha256:ab" })
		}},
		{"climbing config digest", func() Image {
			return withManifest(t, s, stored, func(m *ispec.Manifest) { m.Config.Digest = "sha256:../../../../dev/zero" })
		}},
		{"layer blob symlinked to /dev/zero", func() Image {
			os.Remove(layerPath)
			if err := os.Symlink("/dev/zero", layerPath); err != nil {
				t.Fatal(err)
			}
			return stored
		}},
		{"layer blob is a FIFO", func() Image {
			os.Remove(layerPath)
			if err := syscall.Mkfifo(layerPath, 0o644); err != nil {
				t.Fatal(err)
			}
			return stored
		}},
		{"layer blob longer than its descriptor", func() Image {
			if err := os.WriteFile(layerPath, append(append([]byte{}, good...), make([]byte, 1<<20)...), 0o644); err != nil {
				t.Fatal(err)
			}
			return stored
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer restore()
			img := tc.setup()
			for _, stage := range []string{"unpack", "flatten"} {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				start := time.Now()
				done := make(chan error, 1)
				go func() {
					defer func() {
						if r := recover(); r != nil {
							done <- errors.New("panic")
							t.Errorf("%s panicked: %v", stage, r)
						}
					}()
					if stage == "unpack" {
						_, err := s.Unpack(ctx, img, filepath.Join(t.TempDir(), "b"), UnpackOptions{})
						done <- err
						return
					}
					f, err := s.Flatten(ctx, img, FlattenOptions{})
					if f != nil {
						f.Close()
					}
					done <- err
				}()
				select {
				case err := <-done:
					if err == nil {
						t.Errorf("%s accepted the hostile store", stage)
					} else {
						t.Logf("%s: %v", stage, err)
					}
				case <-time.After(15 * time.Second):
					t.Fatalf("%s still running after 15s", stage)
				}
				cancel()
				if d := time.Since(start); d > 5*time.Second {
					t.Errorf("%s took %s", stage, d)
				}
			}
		})
	}
	// And the store is still usable once the blob is put back.
	if _, err := s.Unpack(context.Background(), stored, filepath.Join(t.TempDir(), "ok"), UnpackOptions{}); err != nil {
		t.Fatalf("the restored store: %v", err)
	}
}

// TestStoreLockNoFollow: a hostile store whose lock file is a symlink must
// not make nexcage create the file it points at.
func TestStoreLockNoFollow(t *testing.T) {
	s := newStore(t)
	victim := filepath.Join(t.TempDir(), "nologin")
	lock := filepath.Join(s.Dir, ".nexcage.lock")
	os.Remove(lock)
	if err := os.Symlink(victim, lock); err != nil {
		t.Fatal(err)
	}
	unlock, err := s.lock()
	if err == nil {
		unlock()
		t.Error("locked through a symlink")
	} else if !strings.Contains(err.Error(), "symlink") {
		t.Errorf("error does not say why: %v", err)
	}
	if _, err := os.Lstat(victim); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the lock created the symlink's target: %v", err)
	}
	os.Remove(lock)
	if err := syscall.Mkfifo(lock, 0o644); err != nil {
		t.Fatal(err)
	}
	if unlock, err := s.lock(); err == nil {
		unlock()
		t.Error("locked a FIFO")
	}
}

// TestUnpackRefusesDirReplacedThroughSymlink: d is cached (by d/a) as a safe
// directory, then replaced through l -> . by a symlink climbing out; a
// write to d/f must be refused by unpack as build's flattener refuses it.
func TestUnpackRefusesDirReplacedThroughSymlink(t *testing.T) {
	s := leakCheckedStore(t)
	img, err := testimage.Layers(v1.Config{Entrypoint: []string{"/f"}}, testimage.Gzip, []testimage.Entry{
		testimage.Dir("d/", 0o755),
		testimage.File("d/a", 0o644, "a"), // caches d as a safe directory
		testimage.Symlink("l", "."),
		testimage.Symlink("l/d", "../.."),
		testimage.File("d/f", 0o644, "x"),
	})
	if err != nil {
		t.Fatal(err)
	}
	stored := pullCase(t, s, testimage.Case{Name: "replaced", Image: img})
	f, ferr := s.Flatten(context.Background(), stored, FlattenOptions{})
	if f != nil {
		f.Close()
	}
	_, uerr := s.Unpack(context.Background(), stored, filepath.Join(t.TempDir(), "b"), UnpackOptions{})
	if ferr == nil {
		t.Fatal("the flattener accepted d/f through a climbing symlink")
	}
	if !errors.Is(uerr, ErrHostileLayer) {
		t.Errorf("unpack: %v, want ErrHostileLayer as build: %v", uerr, ferr)
	}
}

// TestCheckStoreHostileBlobs: store check neither follows a blob symlinked
// out of the store nor hangs on a FIFO blob: both are reported.
func TestCheckStoreHostileBlobs(t *testing.T) {
	testenv.CheckLeaks(t)
	for _, tc := range []struct {
		name string
		make func(p string) error
	}{
		{"symlink out of the store", func(p string) error {
			outside := filepath.Join(t.TempDir(), "copy")
			b, err := os.ReadFile(p)
			if err == nil {
				err = os.WriteFile(outside, b, 0o644)
			}
			if err == nil {
				err = os.Remove(p)
			}
			if err == nil {
				err = os.Symlink(outside, p)
			}
			return err
		}},
		{"FIFO", func(p string) error {
			if err := os.Remove(p); err != nil {
				return err
			}
			return syscall.Mkfifo(p, 0o644)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, _, img := pulledStore(t)
			p, _ := layerBlob(t, s, img)
			if err := tc.make(p); err != nil {
				t.Fatal(err)
			}
			done := make(chan []health.Result, 1)
			go func() { done <- checkStore(t, s, health.Options{}) }()
			select {
			case res := <-done:
				r := healthtest.Find(t, res, "image "+img.Ref)
				if r.Status == health.OK {
					t.Errorf("the image's layer is %s, yet: %+v", tc.name, r)
				}
			case <-time.After(20 * time.Second):
				t.Fatal("store check hangs")
			}
		})
	}
}
