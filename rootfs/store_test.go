package rootfs

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

// TestStoreAtCreatesNothingUntilAPull: a store that was never created
// lists as empty and finds nothing, without a directory appearing; a pull
// whose source does not exist leaves none; the first pull that works
// creates the layout, and the image is then listed and found.
func TestStoreAtCreatesNothingUntilAPull(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "store")
	s, err := StoreAt(dir)
	if err != nil {
		t.Fatal(err)
	}
	absent := func(what string) {
		t.Helper()
		if _, err := os.Stat(filepath.Dir(dir)); !os.IsNotExist(err) {
			t.Fatalf("%s created %s (%v)", what, filepath.Dir(dir), err)
		}
	}
	if imgs, err := s.List(); err != nil || len(imgs) != 0 || s.Exists() {
		t.Fatalf("List of a store never created = %v, %v (exists %v), want none and no error", imgs, err, s.Exists())
	}
	c := corpusCase(t, "modes")
	ref := writeLayout(t, filepath.Join(t.TempDir(), "layout"), "v1", c)
	if _, ok, err := s.Find(ref, amd64().Platform); ok || err != nil {
		t.Fatalf("Find = %v, %v, want not found and no error", ok, err)
	}
	absent("List and Find")

	missing, _ := ParseRef("oci:" + filepath.Join(t.TempDir(), "nolayout") + ":v1")
	if _, err := s.Pull(context.Background(), missing, PullOptions{SourceOptions: amd64()}); err == nil {
		t.Fatal("pull of a missing layout succeeded")
	}
	absent("a failed pull")

	img, err := s.Pull(context.Background(), ref, PullOptions{SourceOptions: amd64()})
	if err != nil {
		t.Fatal(err)
	}
	if !s.Exists() {
		t.Error("the store does not exist after a pull")
	}
	if imgs, err := s.List(); err != nil || len(imgs) != 1 || imgs[0].Digest != img.Digest {
		t.Errorf("List after the pull = %v, %v, want %s", imgs, err, img.Digest)
	}
}

// TestStoreWithoutIndexIsDamaged: a store that has its oci-layout but lost
// index.json is not taken for an empty one.
func TestStoreWithoutIndexIsDamaged(t *testing.T) {
	s := newStore(t)
	if err := os.Remove(filepath.Join(s.Dir, "index.json")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.List(); err == nil {
		t.Error("List of a store without index.json succeeded")
	}
}
