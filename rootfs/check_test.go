package rootfs

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/nexcage/nexcage/internal/atomicfile"
	"github.com/nexcage/nexcage/internal/testenv"
)

// pulledStore is a store holding the "whiteouts" corpus image.
func pulledStore(t *testing.T) (*Store, Ref, Image) {
	t.Helper()
	s := newStore(t)
	ref := writeLayout(t, filepath.Join(t.TempDir(), "layout"), "w", corpusCase(t, "whiteouts"))
	img, err := s.Pull(context.Background(), ref, PullOptions{SourceOptions: amd64()})
	if err != nil {
		t.Fatal(err)
	}
	return s, ref, img
}

func checkStore(t *testing.T, s *Store, opts CheckOptions) []CheckResult {
	t.Helper()
	res, err := s.Check(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// result returns the one result whose check contains substr.
func result(t *testing.T, res []CheckResult, substr string) CheckResult {
	t.Helper()
	var found []CheckResult
	for _, r := range res {
		if strings.Contains(r.Check, substr) {
			found = append(found, r)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%d results for %q in:\n%s", len(found), substr, dump(res))
	}
	return found[0]
}

func dump(res []CheckResult) string {
	var b strings.Builder
	for _, r := range res {
		b.WriteString(r.Status + "  " + r.Check + ": " + r.Cause + "; " + r.Fix + "\n")
	}
	return b.String()
}

func allOK(t *testing.T, res []CheckResult) {
	t.Helper()
	for _, r := range res {
		if r.Status != CheckOK {
			t.Fatalf("not all ok:\n%s", dump(res))
		}
	}
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
	res := checkStore(t, s, CheckOptions{})
	allOK(t, res)
	result(t, res, "blobs: ")
	r := result(t, res, "image "+img.Ref)
	if !strings.Contains(r.Check, "present and intact") {
		t.Errorf("image line: %s", r.Check)
	}
	result(t, res, "no leftovers")
}

func TestCheckStoreNone(t *testing.T) {
	s := &Store{Dir: filepath.Join(t.TempDir(), "nothing")}
	res := checkStore(t, s, CheckOptions{Repair: true})
	allOK(t, res)
	result(t, res, "none yet")
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

	res := checkStore(t, s, CheckOptions{})
	blob := result(t, res, "blob "+shortHash(h))
	if blob.Status != CheckFail || !strings.Contains(blob.Cause, "corrupt") || !strings.Contains(blob.Fix, "--repair") {
		t.Errorf("blob: %+v", blob)
	}
	im := result(t, res, "image "+img.Ref)
	if im.Status != CheckFail || !strings.Contains(im.Cause, "layer 1 "+h.String()+" is corrupt") {
		t.Errorf("image: %+v", im)
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatal("check without --repair deleted the blob")
	}

	res = checkStore(t, s, CheckOptions{Repair: true})
	blob = result(t, res, "blob "+shortHash(h))
	if blob.Status != CheckOK || !blob.Repaired || blob.Fix != "deleted it" {
		t.Errorf("repaired blob: %+v", blob)
	}
	im = result(t, res, "image "+img.Ref)
	if im.Status != CheckOK || !im.Repaired || !strings.Contains(im.Fix, "dropped the index entry") {
		t.Errorf("repaired image: %+v", im)
	}
	if _, err := os.Stat(p); err == nil {
		t.Error("the corrupt blob is still there")
	}
	if imgs, _ := s.List(); len(imgs) != 0 {
		t.Errorf("index still lists %v", imgs)
	}
	allOK(t, checkStore(t, s, CheckOptions{}))

	if _, err := s.Pull(context.Background(), ref, PullOptions{SourceOptions: amd64()}); err != nil {
		t.Fatal(err)
	}
	res = checkStore(t, s, CheckOptions{})
	allOK(t, res)
	result(t, res, "image "+img.Ref)
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
	im := result(t, checkStore(t, s, CheckOptions{}), "image "+img.Ref)
	if im.Status != CheckFail || !strings.Contains(im.Cause, "the config "+cfg.String()+" is missing") {
		t.Errorf("image: %+v", im)
	}
	im = result(t, checkStore(t, s, CheckOptions{Repair: true}), "image "+img.Ref)
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

	res := checkStore(t, s, CheckOptions{})
	r := result(t, res, "leftover "+rel)
	if r.Status != CheckWarn || !strings.Contains(r.Cause, "interrupted write (11 B)") || !strings.Contains(r.Fix, "nexcage check --repair "+s.Dir) {
		t.Errorf("leftover: %+v", r)
	}
	result(t, res, "leftover .index.json"+atomicfile.TempMarker)
	// The leftover is not taken for a blob.
	result(t, res, "blobs: ")

	writing := func(p string) bool { return p == f.Name() }
	res = checkStore(t, s, CheckOptions{Repair: true, InUse: writing})
	r = result(t, res, "leftover "+rel)
	if r.Status != CheckOK || r.Repaired || !strings.Contains(r.Check, "left alone") {
		t.Errorf("in use: %+v", r)
	}
	if !result(t, res, "leftover .index.json").Repaired {
		t.Error("the index leftover was not removed")
	}
	if _, err := os.Stat(f.Name()); err != nil {
		t.Fatal("a file in use was removed")
	}

	r = result(t, checkStore(t, s, CheckOptions{Repair: true}), "leftover "+rel)
	if !r.Repaired || r.Fix != "removed it" {
		t.Errorf("repaired: %+v", r)
	}
	noLeftovers(t, s.Dir)
	allOK(t, checkStore(t, s, CheckOptions{}))
}

func TestCheckStoreLayoutFiles(t *testing.T) {
	s, _, _ := pulledStore(t)
	os.WriteFile(filepath.Join(s.Dir, "oci-layout"), []byte("garbage"), 0o644)
	r := result(t, checkStore(t, s, CheckOptions{}), "oci-layout")
	if r.Status != CheckFail || !strings.Contains(r.Cause, "not an OCI layout file") {
		t.Errorf("oci-layout: %+v", r)
	}
	r = result(t, checkStore(t, s, CheckOptions{Repair: true}), "oci-layout")
	if !r.Repaired {
		t.Errorf("oci-layout not repaired: %+v", r)
	}
	allOK(t, checkStore(t, s, CheckOptions{}))

	os.WriteFile(filepath.Join(s.Dir, "index.json"), []byte("{"), 0o644)
	r = result(t, checkStore(t, s, CheckOptions{Repair: true}), "index.json")
	if r.Status != CheckFail || !strings.Contains(r.Cause, "corrupt") || !strings.Contains(r.Fix, "move index.json aside") {
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

	res := CheckTempDir(tmp, CheckOptions{})
	r := result(t, res, "leftover nexcage-flatten-123")
	if r.Status != CheckWarn || !strings.Contains(r.Cause, "temporary directory of an interrupted write (4.0 KiB)") {
		t.Errorf("spill: %+v", r)
	}
	if len(res) != 1 {
		t.Errorf("more than the spill directory:\n%s", dump(res))
	}
	r = result(t, CheckTempDir(tmp, CheckOptions{Repair: true}), "leftover nexcage-flatten-123")
	if !r.Repaired {
		t.Errorf("not repaired: %+v", r)
	}
	if _, err := os.Stat(spill); err == nil {
		t.Error("the spill directory is still there")
	}
	if _, err := os.Stat(other); err != nil {
		t.Error("an unrelated directory was removed")
	}
	allOK(t, CheckTempDir(tmp, CheckOptions{}))
}
