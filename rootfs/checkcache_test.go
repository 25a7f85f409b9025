package rootfs

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/nexcage/nexcage/health"
	"github.com/nexcage/nexcage/internal/healthtest"
)

// verifiedEntry writes a cached chain whose manifest records its files'
// sizes and sums, as the build cache writes one.
func verifiedEntry(t *testing.T, s *Store, name string) string {
	t.Helper()
	dir := filepath.Join(s.Dir, pruneChainsDir, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	sum := func(b []byte) string { h := sha256.Sum256(b); return hex.EncodeToString(h[:]) }
	index, data := []byte("the tree of "+name), []byte("the frames of "+name)
	os.WriteFile(filepath.Join(dir, "index"), index, 0o644)
	os.WriteFile(filepath.Join(dir, "data"), data, 0o644)
	b, _ := json.Marshal(map[string]any{"format": "nexcage-chain-1", "chain": []digest.Digest{digest.FromString(name)},
		"indexSize": len(index), "indexSha256": sum(index), "dataSize": len(data), "dataSha256": sum(data)})
	os.WriteFile(filepath.Join(dir, "manifest.json"), b, 0o644)
	return dir
}

// TestCheckCacheChains: intact cached chains are one ok line; a flipped
// byte, a truncated file and a file that is a symlink out of the store
// each fail, and --repair removes those entries (not what the symlink
// points to), after which the store checks clean.
func TestCheckCacheChains(t *testing.T) {
	s := newStore(t)
	key := func(s string) string { return digest.FromString(s).Encoded() }
	verifiedEntry(t, s, key("good"))
	flipped := verifiedEntry(t, s, key("flipped"))
	os.WriteFile(filepath.Join(flipped, "data"), []byte("the frames of XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX")[:len("the frames of ")+64], 0o644)
	short := verifiedEntry(t, s, key("short"))
	os.WriteFile(filepath.Join(short, "index"), []byte("the tree"), 0o644)
	linked := verifiedEntry(t, s, key("linked"))
	victim := filepath.Join(t.TempDir(), "victim")
	os.WriteFile(victim, []byte("keep me"), 0o644)
	os.Remove(filepath.Join(linked, "index"))
	os.Symlink(victim, filepath.Join(linked, "index"))

	res, err := s.Check(context.Background(), health.Options{})
	if err != nil {
		t.Fatal(err)
	}
	healthtest.Want(t, res, "cached chain "+key("flipped")[:12], health.Fail, "data hashes to")
	healthtest.Want(t, res, "cached chain "+key("short")[:12], health.Fail, "index is 8 bytes")
	healthtest.Want(t, res, "cached chain "+key("linked")[:12], health.Fail, "index")
	healthtest.Want(t, res, "cached chains: 1 intact", health.OK, "")

	res, err = s.Check(context.Background(), health.Options{Repair: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{flipped, short, linked} {
		if exists(dir) {
			t.Errorf("--repair left the corrupt entry %s", filepath.Base(dir))
		}
	}
	if b, err := os.ReadFile(victim); err != nil || string(b) != "keep me" {
		t.Errorf("the symlink's target: %q, %v", b, err)
	}
	res, err = s.Check(context.Background(), health.Options{})
	if err != nil {
		t.Fatal(err)
	}
	healthtest.AllOK(t, res)
	healthtest.Want(t, res, "cached chains: 1 intact", health.OK, "")
}
