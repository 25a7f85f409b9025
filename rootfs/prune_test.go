package rootfs

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/opencontainers/go-digest"

	"github.com/nexcage/nexcage/health"
	"github.com/nexcage/nexcage/internal/atomicfile"
	"github.com/nexcage/nexcage/internal/testimage"
)

// sharedBase is two images on one base layer: app1 and app2 differ only
// in their top layer.
func sharedBase(t testing.TB) (app1, app2 testimage.Case) {
	t.Helper()
	base := []testimage.Entry{testimage.Dir("etc", 0o755), testimage.File("etc/os-release", 0o644, "ID=base\n"), testimage.File("bin/tool", 0o755, strings.Repeat("base", 1000))}
	mk := func(name, body string) testimage.Case {
		img, err := testimage.Layers(v1.Config{Env: []string{"PATH=/bin"}}, testimage.Gzip, base, []testimage.Entry{testimage.File("app/"+name, 0o644, body)})
		if err != nil {
			t.Fatal(err)
		}
		return testimage.Case{Name: name, Image: img}
	}
	return mk("one", "first app"), mk("two", "second app")
}

// imageBlobs are the blob digests (manifest, config, layers) of img.
func imageBlobs(t testing.TB, img v1.Image) []string {
	t.Helper()
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	out := []string{digestOf(t, img), m.Config.Digest.String()}
	for _, l := range m.Layers {
		out = append(out, l.Digest.String())
	}
	return out
}

func diffIDs(t testing.TB, img v1.Image) []digest.Digest {
	t.Helper()
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	var out []digest.Digest
	for _, d := range cfg.RootFS.DiffIDs {
		out = append(out, digest.Digest(d.String()))
	}
	return out
}

func blobFile(s *Store, d string) string {
	alg, hex, _ := strings.Cut(d, ":")
	return filepath.Join(s.Dir, "blobs", alg, hex)
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

// snapshot is every path under dir with its kind, size and mtime.
func snapshot(t testing.TB, dir string) string {
	t.Helper()
	var lines []string
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		lines = append(lines, fmt.Sprintf("%s %v %d %d", p, fi.Mode(), fi.Size(), fi.ModTime().UnixNano()))
		return nil
	})
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

func removedNames(r *PruneResult, kind string) []string {
	var out []string
	for _, it := range r.Removed {
		if it.Kind == kind {
			out = append(out, it.Name)
		}
	}
	sort.Strings(out)
	return out
}

func sorted(s []string) []string {
	s = append([]string(nil), s...)
	sort.Strings(s)
	return s
}

// retagged pulls app1 under a layout tag, then the same tag rewritten to
// app2: app1's manifest, config and top layer are left unreferenced, the
// shared base layer is still app2's.
func retagged(t *testing.T) (s *Store, ref Ref, app1, app2 testimage.Case) {
	t.Helper()
	app1, app2 = sharedBase(t)
	s = newStore(t)
	dir := filepath.Join(t.TempDir(), "layout")
	ref = writeLayout(t, dir, "app", app1)
	if _, err := s.Pull(context.Background(), ref, PullOptions{SourceOptions: amd64()}); err != nil {
		t.Fatal(err)
	}
	os.RemoveAll(dir)
	writeLayout(t, dir, "app", app2)
	if _, err := s.Pull(context.Background(), ref, PullOptions{SourceOptions: amd64()}); err != nil {
		t.Fatal(err)
	}
	return s, ref, app1, app2
}

// TestPruneRemovesUnreferencedBlobs: after a tag moved, the old image's
// own blobs go and the blobs the stored image needs (the shared base
// layer too) stay; a dry run first lists exactly that and changes nothing;
// the store then checks clean and the image still flattens.
func TestPruneRemovesUnreferencedBlobs(t *testing.T) {
	s, ref, app1, app2 := retagged(t)
	old, kept := imageBlobs(t, app1.Image), imageBlobs(t, app2.Image)
	if old[2] != kept[2] {
		t.Fatalf("the two images do not share their base layer: %s, %s", old[2], kept[2])
	}
	want := sorted([]string{old[0], old[1], old[3]})

	before := snapshot(t, s.Dir)
	dry, err := s.Prune(context.Background(), PruneOptions{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if after := snapshot(t, s.Dir); after != before {
		t.Errorf("a dry run changed the store:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	if got := removedNames(dry, PruneBlob); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("dry run would remove %v, want %v", got, want)
	}

	res, err := s.Prune(context.Background(), PruneOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := removedNames(res, PruneBlob); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("removed %v, want %v", got, want)
	}
	var freed int64
	for _, d := range want {
		if exists(blobFile(s, d)) {
			t.Errorf("unreferenced blob %s is still there", d)
		}
	}
	for _, it := range res.Removed {
		freed += it.Size
	}
	if res.Freed != freed || freed == 0 {
		t.Errorf("freed %d, the items add up to %d", res.Freed, freed)
	}
	for _, d := range kept {
		if !exists(blobFile(s, d)) {
			t.Errorf("referenced blob %s was removed", d)
		}
	}
	if res.KeptImages != 1 || res.KeptBlobs != len(kept) {
		t.Errorf("kept %d images, %d blobs, want 1, %d", res.KeptImages, res.KeptBlobs, len(kept))
	}
	again, err := s.Prune(context.Background(), PruneOptions{})
	if err != nil || len(again.Removed) != 0 {
		t.Errorf("a second prune removed %v (%v), want nothing", again.Removed, err)
	}
	rs, err := s.Check(context.Background(), health.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rs {
		if r.Status != health.OK {
			t.Errorf("check after prune: %+v", r)
		}
	}
	img, ok, err := s.Find(ref, amd64().Platform)
	if err != nil || !ok {
		t.Fatalf("Find after prune: %v, %v", ok, err)
	}
	f, err := s.Flatten(context.Background(), img, FlattenOptions{})
	if err != nil {
		t.Fatalf("flatten after prune: %v", err)
	}
	f.Close()
}

// TestPruneOlderThanByRecordedUse: Find records a use (the use file's
// mtime moves forward); an image last used longer ago than OlderThan goes
// with its own blobs, one used since stays, and so does the base layer
// they shared.
func TestPruneOlderThanByRecordedUse(t *testing.T) {
	app1, app2 := sharedBase(t)
	s := newStore(t)
	dir := t.TempDir()
	ref1 := writeLayout(t, filepath.Join(dir, "one"), "one", app1)
	ref2 := writeLayout(t, filepath.Join(dir, "two"), "two", app2)
	for _, r := range []Ref{ref1, ref2} {
		if _, err := s.Pull(context.Background(), r, PullOptions{SourceOptions: amd64()}); err != nil {
			t.Fatal(err)
		}
	}
	img1, _, _ := s.Find(ref1, amd64().Platform)
	img2, _, _ := s.Find(ref2, amd64().Platform)
	use := func(img Image) string { return filepath.Join(s.Dir, usesDir, useName(img.Ref, img.Platform)) }

	// Find moves the recorded use forward.
	long := time.Now().Add(-1000 * time.Hour)
	os.Chtimes(use(img1), long, long)
	if _, ok, err := s.Find(ref1, amd64().Platform); !ok || err != nil {
		t.Fatal(ok, err)
	}
	if fi, err := os.Stat(use(img1)); err != nil || time.Since(fi.ModTime()) > time.Hour {
		t.Fatalf("Find did not record a use: %v, %v", fi.ModTime(), err)
	}

	// Two days on: app2 was used a day ago, app1 not since its pull.
	now := time.Now().Add(48 * time.Hour)
	day := now.Add(-24 * time.Hour)
	os.Chtimes(use(img2), day, day)
	res, err := s.Prune(context.Background(), PruneOptions{OlderThan: 36 * time.Hour, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	if got := removedNames(res, PruneImage); len(got) != 1 || !strings.HasPrefix(got[0], ref1.String()) {
		t.Errorf("removed images %v, want only %s", got, ref1)
	}
	b1, b2 := imageBlobs(t, app1.Image), imageBlobs(t, app2.Image)
	if got, want := removedNames(res, PruneBlob), sorted([]string{b1[0], b1[1], b1[3]}); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("removed blobs %v, want app1's own %v", got, want)
	}
	for _, d := range b2 {
		if !exists(blobFile(s, d)) {
			t.Errorf("blob %s of the image still used was removed", d)
		}
	}
	if _, ok, _ := s.Find(ref1, amd64().Platform); ok {
		t.Error("the unused image is still in the index")
	}
	if _, ok, _ := s.Find(ref2, amd64().Platform); !ok {
		t.Error("the image used a day ago was dropped")
	}
	if exists(use(img1)) {
		t.Error("the dropped image's use file is left")
	}
}

// cacheEntry writes a cached chain of chain into the store, as the
// build cache lays one out, last used age ago.
func cacheEntry(t testing.TB, s *Store, name string, chain []digest.Digest, age time.Duration) string {
	t.Helper()
	p := filepath.Join(s.Dir, pruneChainsDir, name)
	if err := os.MkdirAll(p, 0o755); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(map[string]any{"format": "nexcage-chain-1", "chain": chain})
	os.WriteFile(filepath.Join(p, "manifest.json"), b, 0o644)
	os.WriteFile(filepath.Join(p, "data"), []byte("members of "+name), 0o644)
	when := time.Now().Add(-age)
	os.Chtimes(p, when, when)
	return p
}

// TestPruneCacheChains: a cached chain no stored image starts with goes,
// so does one whose manifest is unreadable; the chains the image starts
// with stay, unless unused for OlderThan; a temporary entry of a cache
// write in progress is left alone.
func TestPruneCacheChains(t *testing.T) {
	s, _, _, app2 := retagged(t)
	ids := diffIDs(t, app2.Image)
	if len(ids) != 2 {
		t.Fatalf("diff ids %v", ids)
	}
	key := func(s string) string { return digest.FromString(s).Encoded() }
	base := cacheEntry(t, s, key("base"), ids[:1], 0)
	whole := cacheEntry(t, s, key("whole"), ids, 100*time.Hour)
	stray := cacheEntry(t, s, key("stray"), []digest.Digest{ids[1]}, 0)
	broken := cacheEntry(t, s, key("broken"), ids[:1], 0)
	os.Remove(filepath.Join(broken, "manifest.json"))
	tmp := filepath.Join(s.Dir, pruneChainsDir, ".tmp"+atomicfile.TempMarker+"123")
	os.MkdirAll(tmp, 0o755)

	res, err := s.Prune(context.Background(), PruneOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := removedNames(res, PruneCache), sorted([]string{key("stray"), key("broken")}); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("removed cache entries %v, want the stray and the broken one %v", got, want)
	}
	if exists(stray) || exists(broken) || !exists(base) || !exists(whole) {
		t.Errorf("after prune: stray %v, broken %v, base %v, whole %v; want false, false, true, true", exists(stray), exists(broken), exists(base), exists(whole))
	}
	if res.KeptCache != 2 {
		t.Errorf("kept %d cache entries, want 2", res.KeptCache)
	}
	res, err = s.Prune(context.Background(), PruneOptions{OlderThan: 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if got := removedNames(res, PruneCache); len(got) != 1 || got[0] != key("whole") {
		t.Errorf("removed cache entries %v, want only the one unused for 100h", got)
	}
	if exists(whole) || !exists(base) || !exists(tmp) {
		t.Errorf("after prune --older-than: whole %v, base %v, temporary %v; want false, true, true", exists(whole), exists(base), exists(tmp))
	}
}

// TestPruneRespectsWritersAndHolders: a blob a pull is still writing
// (its temporary name) is never removed; while anything holds the store
// (a pull or build: Hold) Prune removes nothing and says ErrStoreInUse,
// a dry run still reports; once released, Prune runs.
func TestPruneRespectsWritersAndHolders(t *testing.T) {
	s, _, app1, _ := retagged(t)
	old := imageBlobs(t, app1.Image)
	w, err := atomicfile.Create(blobFile(s, digest.FromString("downloading").String()), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	w.Write([]byte("part of a layer"))

	release, err := s.Hold()
	if err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, s.Dir)
	if _, err := s.Prune(context.Background(), PruneOptions{}); !errors.Is(err, ErrStoreInUse) {
		t.Fatalf("Prune of a held store: %v, want ErrStoreInUse", err)
	}
	if snapshot(t, s.Dir) != before {
		t.Error("a refused prune changed the store")
	}
	dry, err := s.Prune(context.Background(), PruneOptions{DryRun: true})
	if err != nil || len(removedNames(dry, PruneBlob)) != 3 {
		t.Errorf("dry run of a held store: %v, %v; want app1's 3 blobs listed", dry, err)
	}
	release()

	res, err := s.Prune(context.Background(), PruneOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !exists(w.Name()) {
		t.Error("prune removed the blob a pull is writing")
	}
	found := false
	for _, sk := range res.Skipped {
		found = found || strings.Contains(sk, filepath.Base(w.Name()))
	}
	if !found {
		t.Errorf("the temporary blob is not in Skipped: %v", res.Skipped)
	}
	if exists(blobFile(s, old[0])) {
		t.Error("prune after release left the unreferenced manifest")
	}
}

// TestPruneHostileStore: symlinks and foreign names in a store are never
// followed, and nothing outside the store is removed: a blob that is a
// symlink, blobs/sha512 and cache/chains pointing elsewhere, a cached
// chain holding a symlink out, uses/ pointing elsewhere, a lock file that
// is a symlink.
func TestPruneHostileStore(t *testing.T) {
	s, ref, _, _ := retagged(t)
	outside := t.TempDir()
	victim := filepath.Join(outside, "victim")
	os.WriteFile(victim, []byte("keep me"), 0o644)
	sum := sha256.Sum256([]byte("x"))
	name256 := hex.EncodeToString(sum[:])
	name512 := strings.Repeat("ab", 64)
	for _, n := range []string{name256, name512} {
		os.WriteFile(filepath.Join(outside, n), []byte("keep me"), 0o644)
	}
	mustSymlink := func(target, link string) {
		t.Helper()
		os.MkdirAll(filepath.Dir(link), 0o755)
		if err := os.Symlink(target, link); err != nil {
			t.Fatal(err)
		}
	}
	// An unreferenced blob that is a symlink out of the store.
	mustSymlink(victim, filepath.Join(s.Dir, "blobs", "sha256", name256))
	// A foreign name in blobs/sha256.
	os.WriteFile(filepath.Join(s.Dir, "blobs", "sha256", "README"), []byte("not a blob"), 0o644)
	// Directories of blobs and of cached chains that are symlinks out.
	mustSymlink(outside, filepath.Join(s.Dir, "blobs", "sha512"))
	mustSymlink(outside, filepath.Join(s.Dir, pruneChainsDir))
	// uses/ pointing out: Find must not create files there, Prune must
	// not remove the ones there.
	os.RemoveAll(filepath.Join(s.Dir, usesDir))
	mustSymlink(outside, filepath.Join(s.Dir, usesDir))

	res, err := s.Prune(context.Background(), PruneOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Find(ref, amd64().Platform); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(outside)
	if len(ents) != 3 {
		t.Errorf("the directory outside the store holds %d entries, want the 3 it had: %v", len(ents), ents)
	}
	for _, n := range []string{"victim", name256, name512} {
		if b, err := os.ReadFile(filepath.Join(outside, n)); err != nil || string(b) != "keep me" {
			t.Errorf("%s outside the store: %q, %v", n, b, err)
		}
	}
	for _, p := range []string{filepath.Join("blobs", "sha256", name256), filepath.Join("blobs", "sha256", "README")} {
		if !exists(filepath.Join(s.Dir, p)) {
			t.Errorf("prune removed %s, which is not a blob nexcage wrote", p)
		}
	}
	if len(res.Skipped) < 4 {
		t.Errorf("skipped %v, want the symlinked blob, README, blobs/sha512 and the cache directory", res.Skipped)
	}

	// A cached chain that holds a symlink out: the entry goes, the target
	// stays.
	os.Remove(filepath.Join(s.Dir, pruneChainsDir))
	chain := cacheEntry(t, s, digest.FromString("stray").Encoded(), []digest.Digest{digest.FromString("no image")}, 0)
	mustSymlink(outside, filepath.Join(chain, "link"))
	mustSymlink(victim, filepath.Join(chain, "file"))
	if _, err := s.Prune(context.Background(), PruneOptions{}); err != nil {
		t.Fatal(err)
	}
	if exists(chain) {
		t.Error("the stray cached chain was not removed")
	}
	if ents, _ := os.ReadDir(outside); len(ents) != 3 {
		t.Errorf("removing a cached chain reached outside the store: %d entries left", len(ents))
	}

	// The use lock a symlink: refused, and no file created at its target.
	lockTarget := filepath.Join(outside, "planted")
	os.Remove(filepath.Join(s.Dir, useLockName))
	mustSymlink(lockTarget, filepath.Join(s.Dir, useLockName))
	if _, err := s.Prune(context.Background(), PruneOptions{}); err == nil || !strings.Contains(err.Error(), "symlink") {
		t.Errorf("Prune with a symlinked lock file: %v, want a refusal naming the symlink", err)
	}
	if _, err := s.Hold(); err == nil {
		t.Error("Hold with a symlinked lock file succeeded")
	}
	if exists(lockTarget) {
		t.Error("a lock file was created through the symlink")
	}
}

// TestPruneNoStore: a store never created has nothing to prune, and
// pruning it creates nothing.
func TestPruneNoStore(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "none")
	s, _ := StoreAt(dir)
	res, err := s.Prune(context.Background(), PruneOptions{})
	if err != nil || len(res.Removed) != 0 {
		t.Fatalf("Prune of no store: %v, %v", res, err)
	}
	if exists(dir) {
		t.Error("Prune created the store")
	}
}

// TestPruneWalksNestedIndexes: an index entry another tool wrote, naming
// an image index (listed twice, nested) rather than a manifest, keeps the
// index and every blob of the manifests under it.
func TestPruneWalksNestedIndexes(t *testing.T) {
	s, _, _, app2 := retagged(t)
	im, err := s.readIndex()
	if err != nil || len(im.Manifests) != 1 {
		t.Fatalf("index: %v, %v", im, err)
	}
	inner, _ := json.Marshal(v1.IndexManifest{SchemaVersion: 2, MediaType: "application/vnd.oci.image.index.v1+json", Manifests: []v1.Descriptor{im.Manifests[0]}})
	innerDesc, err := s.putBytes(inner)
	if err != nil {
		t.Fatal(err)
	}
	innerDesc.MediaType = "application/vnd.oci.image.index.v1+json"
	outer, _ := json.Marshal(v1.IndexManifest{SchemaVersion: 2, MediaType: "application/vnd.oci.image.index.v1+json", Manifests: []v1.Descriptor{innerDesc, innerDesc}})
	outerDesc, err := s.putBytes(outer)
	if err != nil {
		t.Fatal(err)
	}
	outerDesc.MediaType = "application/vnd.oci.image.index.v1+json"
	outerDesc.Annotations = im.Manifests[0].Annotations
	im.Manifests[0] = outerDesc
	if err := s.writeIndex(im); err != nil {
		t.Fatal(err)
	}
	res, err := s.Prune(context.Background(), PruneOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range append(imageBlobs(t, app2.Image), innerDesc.Digest.String(), outerDesc.Digest.String()) {
		if !exists(blobFile(s, d)) {
			t.Errorf("blob %s reached through the nested indexes was removed", d)
		}
	}
	if got := removedNames(res, PruneBlob); len(got) != 3 {
		t.Errorf("removed %v, want the retagged image's 3 own blobs", got)
	}
}
