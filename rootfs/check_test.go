package rootfs

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/nexcage/nexcage/health"
	"github.com/nexcage/nexcage/internal/atomicfile"
	"github.com/nexcage/nexcage/internal/healthtest"
	"github.com/nexcage/nexcage/internal/testenv"
)

// pulledStore is a store holding the "whiteouts" corpus image.
func pulledStore(t *testing.T) (*Store, Ref, Image) {
	t.Helper()
	s := newStore(t)
	ref, img := pullCaseRef(t, s, corpusCase(t, "whiteouts"))
	return s, ref, img
}

func checkStore(t *testing.T, s *Store, opts health.Options) []health.Result {
	t.Helper()
	res, err := s.Check(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// layerBlob is the path of the image's first layer blob.
func layerBlob(t *testing.T, s *Store, img Image) (string, v1.Hash) {
	t.Helper()
	m, err := s.ociManifest(img.Digest)
	if err != nil {
		t.Fatal(err)
	}
	h, _ := v1.NewHash(m.Layers[0].Digest.String())
	return s.BlobPath(h), h
}

func TestCheckStoreSound(t *testing.T) {
	testenv.CheckLeaks(t)
	s, _, img := pulledStore(t)
	res := checkStore(t, s, health.Options{})
	healthtest.AllOK(t, res)
	healthtest.Find(t, res, "blobs: ")
	r := healthtest.Find(t, res, "image "+img.Ref)
	if !strings.Contains(r.Check, "present and intact") {
		t.Errorf("image line: %s", r.Check)
	}
	healthtest.Find(t, res, "no leftovers")
}

func TestCheckStoreNone(t *testing.T) {
	s := &Store{Dir: filepath.Join(t.TempDir(), "nothing")}
	res := checkStore(t, s, health.Options{Repair: true})
	healthtest.AllOK(t, res)
	healthtest.Find(t, res, "none yet")
	if _, err := os.Stat(s.Dir); err == nil {
		t.Error("check created a store")
	}
}

// A flipped byte in a layer blob: the blob and the image that needs it
// fail; --repair deletes the blob and drops the entry; a pull restores it.
func TestCheckStoreCorruptBlob(t *testing.T) {
	testenv.CheckLeaks(t)
	s, ref, img := pulledStore(t)
	p, h := layerBlob(t, s, img)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0xff
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}

	res := checkStore(t, s, health.Options{})
	blob := healthtest.Find(t, res, "blob "+shortHash(h))
	if blob.Status != health.Fail || !strings.Contains(blob.Cause, "corrupt") || blob.Repair != "deletes it" {
		t.Errorf("blob: %+v", blob)
	}
	im := healthtest.Find(t, res, "image "+img.Ref)
	if im.Status != health.Fail || !strings.Contains(im.Cause, "layer 1 "+h.String()+" is corrupt") {
		t.Errorf("image: %+v", im)
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatal("check without --repair deleted the blob")
	}

	res = checkStore(t, s, health.Options{Repair: true})
	blob = healthtest.Find(t, res, "blob "+shortHash(h))
	if blob.Status != health.OK || !blob.Repaired || blob.Fix != "deleted it" {
		t.Errorf("repaired blob: %+v", blob)
	}
	im = healthtest.Find(t, res, "image "+img.Ref)
	if im.Status != health.OK || !im.Repaired || !strings.Contains(im.Fix, "dropped the index entry") {
		t.Errorf("repaired image: %+v", im)
	}
	if _, err := os.Stat(p); err == nil {
		t.Error("the corrupt blob is still there")
	}
	if imgs, _ := s.List(); len(imgs) != 0 {
		t.Errorf("index still lists %v", imgs)
	}
	healthtest.AllOK(t, checkStore(t, s, health.Options{}))

	if _, err := s.Pull(context.Background(), ref, PullOptions{SourceOptions: amd64()}); err != nil {
		t.Fatal(err)
	}
	res = checkStore(t, s, health.Options{})
	healthtest.AllOK(t, res)
	healthtest.Find(t, res, "image "+img.Ref)
}

// A missing config blob: the entry fails; --repair drops it.
func TestCheckStoreMissingBlob(t *testing.T) {
	s, _, img := pulledStore(t)
	m, err := s.ociManifest(img.Digest)
	if err != nil {
		t.Fatal(err)
	}
	cfg, _ := v1.NewHash(m.Config.Digest.String())
	if err := os.Remove(s.BlobPath(cfg)); err != nil {
		t.Fatal(err)
	}
	im := healthtest.Find(t, checkStore(t, s, health.Options{}), "image "+img.Ref)
	if im.Status != health.Fail || !strings.Contains(im.Cause, "the config "+cfg.String()+" is missing") {
		t.Errorf("image: %+v", im)
	}
	im = healthtest.Find(t, checkStore(t, s, health.Options{Repair: true}), "image "+img.Ref)
	if !im.Repaired {
		t.Errorf("not repaired: %+v", im)
	}
	if imgs, _ := s.List(); len(imgs) != 0 {
		t.Errorf("index still lists %v", imgs)
	}
}

// A blob a killed pull left under its temporary name warns; one still
// being written (open in a running process) is left alone; --repair
// removes the rest.
func TestCheckStoreLeftovers(t *testing.T) {
	testenv.CheckLeaks(t)
	s, _, img := pulledStore(t)
	_, h := layerBlob(t, s, img)
	f, err := atomicfile.Create(s.BlobPath(h), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("half a blob")
	f.File.Close() // as a SIGKILL leaves it: never committed nor aborted
	idx, err := atomicfile.Create(filepath.Join(s.Dir, "index.json"), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	idx.File.Close()
	rel, _ := filepath.Rel(s.Dir, f.Name())

	res := checkStore(t, s, health.Options{})
	r := healthtest.Find(t, res, "leftover "+rel)
	if r.Status != health.Warn || !strings.Contains(r.Cause, "interrupted write (11 B)") || r.Repair != "removes it" {
		t.Errorf("leftover: %+v", r)
	}
	healthtest.Find(t, res, "leftover .index.json"+atomicfile.TempMarker)
	// The leftover is not taken for a blob.
	healthtest.Find(t, res, "blobs: ")

	writing := func(p string) bool { return p == f.Name() }
	res = checkStore(t, s, health.Options{Repair: true, InUse: writing})
	r = healthtest.Find(t, res, "leftover "+rel)
	if r.Status != health.OK || r.Repaired || !strings.Contains(r.Check, "left alone") {
		t.Errorf("in use: %+v", r)
	}
	if !healthtest.Find(t, res, "leftover .index.json").Repaired {
		t.Error("the index leftover was not removed")
	}
	if _, err := os.Stat(f.Name()); err != nil {
		t.Fatal("a file in use was removed")
	}

	r = healthtest.Find(t, checkStore(t, s, health.Options{Repair: true}), "leftover "+rel)
	if !r.Repaired || r.Fix != "removed it" {
		t.Errorf("repaired: %+v", r)
	}
	noLeftovers(t, s.Dir)
	healthtest.AllOK(t, checkStore(t, s, health.Options{}))
}

func TestCheckStoreLayoutFiles(t *testing.T) {
	s, _, _ := pulledStore(t)
	os.WriteFile(filepath.Join(s.Dir, "oci-layout"), []byte("garbage"), 0o644)
	r := healthtest.Find(t, checkStore(t, s, health.Options{}), "oci-layout")
	if r.Status != health.Fail || !strings.Contains(r.Cause, "not an OCI layout file") {
		t.Errorf("oci-layout: %+v", r)
	}
	r = healthtest.Find(t, checkStore(t, s, health.Options{Repair: true}), "oci-layout")
	if !r.Repaired {
		t.Errorf("oci-layout not repaired: %+v", r)
	}
	healthtest.AllOK(t, checkStore(t, s, health.Options{}))

	os.WriteFile(filepath.Join(s.Dir, "index.json"), []byte("{"), 0o644)
	r = healthtest.Find(t, checkStore(t, s, health.Options{Repair: true}), "index.json")
	if r.Status != health.Fail || !strings.Contains(r.Cause, "corrupt") || !strings.Contains(r.Fix, "move index.json aside") {
		t.Errorf("index.json: %+v", r)
	}
}

// Scratch directories of killed builds in the temporary directory; others'
// directories are not touched.
func TestCheckTempDir(t *testing.T) {
	testenv.CheckLeaks(t)
	tmp := t.TempDir()
	spill := filepath.Join(tmp, "nexcage-flatten-123")
	os.Mkdir(spill, 0o700)
	os.WriteFile(filepath.Join(spill, "layer-0"), make([]byte, 4096), 0o600)
	other := filepath.Join(tmp, "nexcage-pve-9")
	os.Mkdir(other, 0o755)

	res := CheckTempDir(tmp, health.Options{})
	r := healthtest.Find(t, res, "leftover nexcage-flatten-123")
	if r.Status != health.Warn || !strings.Contains(r.Cause, "temporary directory of an interrupted write (4.0 KiB)") {
		t.Errorf("spill: %+v", r)
	}
	if len(res) != 1 {
		t.Errorf("more than the spill directory:\n%s", healthtest.Dump(res))
	}
	r = healthtest.Find(t, CheckTempDir(tmp, health.Options{Repair: true}), "leftover nexcage-flatten-123")
	if !r.Repaired {
		t.Errorf("not repaired: %+v", r)
	}
	if _, err := os.Stat(spill); err == nil {
		t.Error("the spill directory is still there")
	}
	if _, err := os.Stat(other); err != nil {
		t.Error("an unrelated directory was removed")
	}
	healthtest.AllOK(t, CheckTempDir(tmp, health.Options{}))
}

// TestCheckRefusesSymlinkedBlobs (issue 15 finding 8): a store whose
// blobs/ is a symlink, or one whose blob is, has --repair delete nothing
// outside the store, and says why it checked nothing there.
func TestCheckRefusesSymlinkedBlobs(t *testing.T) {
	testenv.CheckLeaks(t)
	corrupt := strings.Repeat("ab", 32) // a name that is no digest of its content
	t.Run("blobs directory", func(t *testing.T) {
		outside := t.TempDir()
		testenv.VictimFile(t, filepath.Join(outside, "sha256", corrupt), "not the blob its name says\n")
		s, _, _ := pulledStore(t)
		os.Rename(filepath.Join(s.Dir, "blobs"), filepath.Join(t.TempDir(), "real-blobs"))
		if err := os.Symlink(outside, filepath.Join(s.Dir, "blobs")); err != nil {
			t.Fatal(err)
		}
		res := checkStore(t, s, health.Options{Repair: true})
		var r health.Result
		for _, x := range res {
			if x.Check == "blobs" {
				r = x
			}
			if x.Repaired {
				t.Errorf("repaired a store it refused to check: %+v", x)
			}
		}
		if r.Status != health.Fail || !strings.Contains(r.Cause, "is a symlink") || !strings.Contains(r.Fix, "replace the symlink") {
			t.Errorf("blobs/ as a symlink: %+v, want a failure saying so\n%s", r, healthtest.Dump(res))
		}
	})
	t.Run("blob algorithm directory", func(t *testing.T) {
		outside := t.TempDir()
		testenv.VictimFile(t, filepath.Join(outside, corrupt), "not the blob its name says\n")
		s, _, _ := pulledStore(t)
		if err := os.Symlink(outside, filepath.Join(s.Dir, "blobs", "sha512")); err != nil {
			t.Fatal(err)
		}
		checkStore(t, s, health.Options{Repair: true})
	})
	t.Run("blob", func(t *testing.T) {
		victim := filepath.Join(t.TempDir(), "victim")
		testenv.VictimFile(t, victim, "not the blob its name says\n")
		s, _, _ := pulledStore(t)
		if err := os.Symlink(victim, filepath.Join(s.Dir, "blobs", "sha256", corrupt)); err != nil {
			t.Fatal(err)
		}
		checkStore(t, s, health.Options{Repair: true})
	})
}
